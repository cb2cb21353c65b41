"""What a run tells the user (issue #29): finished trials, never claimed ones; progress before
the first trial ends; plain lines without carriage returns when the output is a pipe; a first
line within seconds when the evaluator is retrained."""

from __future__ import annotations

import datetime
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.common import ONE_THREAD, journal_study, write_spec

PROGRESS = re.compile(r"study tiny: (\d+)/(\d+) trials finished \((\d+) complete, (\d+) pruned, (\d+) failed")
TRAINING = re.compile(r"training: (\d+)/(\d+) steps of the (\d+) running trials?")


def test_the_channel_sums_the_workers_and_a_meter_without_one_does_nothing():
    from study.trials.progress import Channel, Meter

    channel = Channel(2)
    a, b = channel.meter(0), channel.meter(1)
    a.begin([100, 100], trials=2)  # a population of two
    b.begin([60], trials=1)
    a.advance(40, 40 * 64)
    b.advance(30, 30 * 64)
    totals = channel.totals()
    assert (totals["done"], totals["planned"], totals["trials"], totals["steps"]) == (70, 260, 3, 70)
    a.end()
    totals = channel.totals()
    assert (totals["done"], totals["planned"], totals["trials"], totals["steps"], totals["trials_all"]) == (30, 60, 1, 70, 3)
    Meter().advance(10, 640)  # no channel: nothing to write, no error


def test_plain_lines_have_no_carriage_returns_and_quick_steps_stay_silent(capsys, monkeypatch):
    from study.trials import progress

    monkeypatch.setenv(progress.PROGRESS_ENV, "0.05")
    progress.configure()
    try:
        with progress.step("a step of milliseconds"):
            pass
        bar = progress.bar(10, "training the evaluator")
        assert isinstance(bar, progress.PlainBar)  # capsys: stderr is not a terminal
        for _ in range(10):
            bar.update()
            time.sleep(0.01)
        bar.close()
    finally:
        for name in progress.LOGGERS:  # leave the loggers as the other tests expect them
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if getattr(h, "gan_study", False)]:
                logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)
            logger.propagate = True
    err = capsys.readouterr().err
    assert "milliseconds" not in err and "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("gan-study: training the evaluator: 1/10 steps")
    assert lines[-1].startswith("gan-study: training the evaluator: 10/10 steps (100 %) in ")


def _read_lines(stream, into: list[tuple[datetime.datetime, str]]) -> None:
    for line in iter(stream.readline, b""):  # bytes: a \r stays a \r
        into.append((datetime.datetime.now(), line.decode()))


@pytest.mark.slow  # a real study with two workers, and its report
@pytest.mark.usefixtures("evaluator")
def test_a_piped_run_counts_finished_trials_and_shows_training_before_the_first_ends(tmp_path):
    spec = write_spec(tmp_path, trials=2)
    env = {**os.environ, **ONE_THREAD, "GAN_STUDY_PROGRESS_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(spec), "--jobs", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[tuple[datetime.datetime, str]] = []
    printed: list[tuple[datetime.datetime, str]] = []
    readers = [threading.Thread(target=_read_lines, args=(stream, into), daemon=True)
               for stream, into in ((proc.stderr, err), (proc.stdout, printed))]
    for reader in readers:
        reader.start()
    proc.wait(timeout=1800)  # against a hang only: a busy machine is slow
    for reader in readers:
        reader.join(timeout=60)
    stderr, out = "".join(line for _, line in err), "".join(line for _, line in printed)
    assert proc.returncode == 0, stderr[-3000:]
    assert "\r" not in out and "\r" not in stderr
    trials = journal_study(tmp_path / "gan-study-runs", "tiny").get_trials()
    ends = sorted(t.datetime_complete for t in trials if t.state.is_finished())
    assert len(ends) == 2
    seen = [(when, line, PROGRESS.search(line), TRAINING.search(line)) for when, line in err]
    seen = [(when, line, p, t) for when, line, p, t in seen if p]
    assert seen, stderr
    for when, line, p, _ in seen:
        # read after it was printed: no more trials had finished when it was printed than by now
        assert int(p.group(1)) <= sum(1 for end in ends if end <= when), (line, ends)
        assert int(p.group(1)) == sum(int(p.group(i)) for i in (3, 4, 5))
    assert seen[-1][2].group(1, 2) == ("2", "2"), seen[-1][1]
    # training progress across both workers, read before the first trial ended
    early = [(line, t) for when, line, p, t in seen if t and int(t.group(1)) > 0 and when < ends[0]]
    assert early, stderr
    assert all(int(t.group(1)) <= int(t.group(2)) for _, t in early)
    # the summary: wall time, and the floor beside each of the best trial's metrics
    best = next(line for line in out.splitlines() if line.startswith("best trial "))
    assert "wall time " in out and "fd=" in best and "(floor " in best, out
    # report --verbose: the report, then every figure (without it: the report and the figures folder)
    report = subprocess.run([sys.executable, "-m", "study.cli", "report", "tiny", "--format", "md", "--verbose"], cwd=tmp_path,
                            env=env, capture_output=True, timeout=1800)  # bytes: a \r stays a \r
    assert report.returncode == 0, report.stderr.decode()[-3000:]
    assert b"\r" not in report.stdout + report.stderr
    printed = [Path(line) for line in report.stdout.decode().splitlines()]
    folder = tmp_path / "gan-study-runs" / "reports" / "tiny"
    assert printed[0] == folder / "report.md" and len(printed) > 2
    assert all(p.parent == folder / "figures" and p.suffix == ".png" for p in printed[1:])


def _cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used: its own work, not the machine's load."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.usefixtures("evaluator")
def test_retraining_the_evaluator_prints_a_first_progress_line_within_5_seconds(tmp_path):
    env = {**os.environ, **ONE_THREAD, "GAN_STUDY_CACHE": str(tmp_path / "cache")}
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", "evaluator", "--retrain"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    lines, first, bar = [], None, None
    try:
        for raw in iter(proc.stderr.readline, b""):  # bytes: a \r stays a \r
            lines.append(raw.decode())
            if first is None and "retraining the evaluator" in lines[-1]:
                first = (time.monotonic() - started, _cpu_seconds(proc.pid))
            if re.search(r"training the evaluator: \d+/\d+ steps", lines[-1]):
                bar = (time.monotonic() - started, _cpu_seconds(proc.pid))
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert first is not None and bar is not None, "".join(lines)
    assert lines[0].startswith("gan-study: retraining the evaluator") and not any("\r" in line for line in lines)
    print(f"first line after {first[0]:.1f} s wall, {first[1]:.1f} s CPU; first bar line after {bar[0]:.1f} s wall, {bar[1]:.1f} s CPU")
    # CPU seconds: on an idle machine the wall time; on a busy one the wall time stretches with the load.
    # The bar waits for MNIST and torchvision (about 2 s of CPU time after torch's 2 s here).
    assert first[1] < 5.0, f"the first line came after {first[1]:.1f} s of CPU time ({first[0]:.1f} s wall)"
    assert bar[1] < 10.0, f"the first bar line came after {bar[1]:.1f} s of CPU time ({bar[0]:.1f} s wall)"
