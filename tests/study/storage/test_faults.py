"""Faults of the machine and the stores, driven like a user would: real subprocesses, real stores.

- a full disk: a file-size limit (RLIMIT_FSIZE, as ``ulimit -f`` sets it) under the trial's
  checkpoint. gan-study ignores SIGXFSZ, so the write fails with EFBIG (an OSError) instead of
  the kernel killing the process unannounced: the trial fails with a one-line reason naming
  the file and the fix, the run stops (every next trial would fail alike) with exit code 1,
  ``status`` reads the stores, and the same command, once the limit is gone, finishes the study;
- a read-only artifact folder, for a process that permissions bind (root's do not): ``run``
  refuses it in one line before writing anything, and runs once it is writable;
- a journal that ends in a torn record (a crash mid-write): Optuna 5's reader skips a last line
  that has no newline or is not JSON, but its next append lands on that same line and loses
  both records. So ``run`` refuses, naming the ``truncate`` that cuts the torn record off, and
  ``status`` reads the journal as Optuna does, with a warning;
- a truncated ``mlflow.db``: ``run``, ``status`` and ``report`` refuse in one line, exit code 2.

No command rewrites a store it cannot read: the corrupt files are byte-identical afterwards.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.common import ONE_THREAD, journal_study, write_spec

pytestmark = pytest.mark.slow  # a few tiny studies, one of them twice

ERROR_PREFIX = "gan-study: error:"
LIMIT = 1_500_000  # bytes per file: above mlflow.db (~1 MB) and the journal, below a checkpoint (~3 MB)
# Root without these capabilities is bound by file permissions as any user is. (``nobody``
# cannot run this interpreter here: it lives under /root, which is 0700.)
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24


def _as_a_user() -> None:
    """In the child before exec: drop root's permission overrides from the bounding set, so
    the exec'd CLI does not have them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def cli(*args: str, cwd: Path, limit: int | None = None, as_user: bool = False, env: dict[str, str] | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m study.cli`` with an optional file-size limit, or bound by file permissions."""
    def before() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if as_user and os.geteuid() == 0:
            _as_a_user()

    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ONE_THREAD, **(env or {})}, preexec_fn=before)


def one_error_line(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def warm_cache(evaluator):
    """The real-data statistics (5 MB) cached before a run under the file-size limit."""
    from gan import metrics as gm

    gm.real_stats(evaluator)


@pytest.fixture(scope="module")
def full_disk(tmp_path_factory, warm_cache):
    """A study whose first trial hit the file-size limit, then the same command without it."""
    folder = tmp_path_factory.mktemp("full-disk")
    spec = write_spec(folder, name="full", trials=1, budget={"steps": 20}, evaluation={"every": 20, "samples": 500, "final_samples": 500})
    command = ["run", str(spec), "--quiet"]
    limited = cli(*command, cwd=folder, limit=LIMIT)
    workdir = folder / "gan-study-runs"
    after_fault = journal_study(workdir, "full").get_trials()
    status = cli("status", "full", cwd=folder)
    again = cli(*command, cwd=folder)
    return folder, limited, after_fault, status, again


def test_a_full_disk_fails_the_trial_with_its_reason_and_the_same_command_finishes(full_disk):
    """SIGXFSZ is ignored (study/cli.py, and the spawned workers): EFBIG is an error we report."""
    folder, limited, after_fault, status, again = full_disk
    line = one_error_line(limited, 1)
    assert "checkpoint/checkpoint.pt" in line and "file size limit (EFBIG)" in line and "run the same command again" in line
    (failed,) = after_fault
    assert failed.state.name == "FAIL"
    reason = failed.user_attrs["reason"]
    assert "\n" not in reason and "cannot write the artifact checkpoint/checkpoint.pt" in reason and "EFBIG" in reason
    assert status.returncode == 0 and "FAIL" in status.stdout and "cannot write the artifact" in status.stdout, status.stderr
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    trials = journal_study(folder / "gan-study-runs", "full").get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].user_attrs["retry_of"] == 0
    assert trials[1].params == failed.params


def test_a_read_only_artifact_folder_is_refused_then_runs(tmp_path, warm_cache):
    spec = write_spec(tmp_path, name="readonly", trials=1, budget={"steps": 20}, evaluation={"every": 20, "samples": 500, "final_samples": 500})
    artifacts = tmp_path / "gan-study-runs" / "mlartifacts"
    artifacts.mkdir(parents=True)
    artifacts.chmod(0o555)
    command = ["run", str(spec), "--quiet"]
    refused = cli(*command, cwd=tmp_path, as_user=True)
    line = one_error_line(refused, 2)
    assert f"cannot write the MLflow artifacts in {artifacts}" in line and "make it writable" in line
    assert sorted(p.name for p in (tmp_path / "gan-study-runs").iterdir()) == ["mlartifacts"]  # nothing written
    artifacts.chmod(0o755)
    ran = cli(*command, cwd=tmp_path, as_user=True)
    assert ran.returncode == 0, ran.stderr
    assert [t.state.name for t in journal_study(tmp_path / "gan-study-runs", "readonly").get_trials()] == ["COMPLETE"]


def _copy(full_disk, tmp_path: Path) -> tuple[Path, Path]:
    folder = full_disk[0]
    shutil.copytree(folder / "gan-study-runs", tmp_path / "gan-study-runs")
    shutil.copy(folder / "full.yaml", tmp_path)
    return tmp_path / "gan-study-runs", tmp_path / "full.yaml"


def test_a_torn_journal_is_read_without_its_torn_record_and_never_written(full_disk, tmp_path):
    """Refused for run (Optuna would append onto the torn line); skipped, with a warning, for status."""
    workdir, spec = _copy(full_disk, tmp_path)
    journal, db = workdir / "optuna.journal", workdir / "mlflow.db"
    whole = journal.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    journal.write_bytes(whole + last[: len(last) // 2])  # a crash halfway through the next record
    torn, stored = journal.read_bytes(), db.read_bytes()

    refused = cli("run", str(spec), "--trials", "3", cwd=tmp_path)
    line = one_error_line(refused, 2)
    assert f"the Optuna journal {journal} ends in a torn record" in line and f"truncate -s {len(whole)} {journal}" in line
    assert journal.read_bytes() == torn and db.read_bytes() == stored

    status = cli("status", "full", cwd=tmp_path)
    assert status.returncode == 0 and "COMPLETE" in status.stdout, status.stderr
    warnings = status.stderr.strip().splitlines()
    assert len(warnings) == 1 and "torn record" in warnings[0] and "truncate -s" in warnings[0]
    assert journal.read_bytes() == torn and db.read_bytes() == stored

    subprocess.run(["truncate", "-s", str(len(whole)), str(journal)], check=True)  # the way out it names
    assert journal.read_bytes() == whole


@pytest.mark.parametrize("command", ["run", "status", "report"])
def test_a_truncated_mlflow_db_is_one_line_exit_2_and_left_as_it_is(full_disk, tmp_path, command):
    workdir, spec = _copy(full_disk, tmp_path)
    journal, db = workdir / "optuna.journal", workdir / "mlflow.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    before = {p: p.read_bytes() for p in (journal, db)}
    args = {"run": ["run", str(spec), "--trials", "3"], "status": ["status", "full"], "report": ["report", "full"]}[command]
    result = cli(*args, cwd=tmp_path)
    line = one_error_line(result, 2)
    assert f"the MLflow store {db} is truncated" in line and "restore it from a backup" in line
    assert result.stdout == ""
    assert {p: p.read_bytes() for p in before} == before


def test_a_trial_that_could_not_write_is_retried_again_and_never_takes_a_slot():
    """A full disk is no fault of the configuration: a retry that fails to write is retried too,
    where any other failed retry is final and takes its slot (so a study always ends)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from study.trials.recovery import counts, will_retry

    def failed(**attrs):
        return create_trial(state=TrialState.FAIL, params={"x": 1.0}, distributions={"x": optuna.distributions.FloatDistribution(0, 2)},
                            user_attrs=attrs)

    full_retry = failed(retry_of=0, write_failed=True, reason="cannot write the artifact ...")
    other_retry = failed(retry_of=0, reason="RuntimeError: boom")
    assert will_retry(full_retry) and not counts(full_retry)
    assert not will_retry(other_retry) and counts(other_retry)
    assert will_retry(failed(write_failed=True)) and not counts(failed(write_failed=True))
