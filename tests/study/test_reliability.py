"""Crashes, resumes and bad input, driven like a user would: real subprocesses, real stores.

- kill -9 of ``gan-study run`` mid-trial, then the same command: completed trials kept, the
  killed trial FAIL in Optuna and KILLED in MLflow, its configuration retried once, no grid
  point twice;
- a diverging trial (loss beyond ``loss_bound``) ends PRUNED with its reason in both stores;
  an out-of-memory trial ends FAIL with its reason, and the study goes on;
- a table of bad input: exit code 2, one line "gan-study: error: ...", no traceback, and the
  work folder and stores exactly as they were.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import pytest
import torch

from tests.common import ONE_THREAD, TINY, gan_study, journal_study, mlflow_runs, write_spec

pytestmark = pytest.mark.slow  # kills, signals and out-of-memory runs of real studies

ERROR_PREFIX = "gan-study: error:"


# -- kill -9 mid-trial, then the same command ----------------------------------------------------
def _kill_mid_trial(command: list[str], cwd: Path, workdir: Path, name: str, after_complete: int,
                    sig: signal.Signals = signal.SIGKILL, min_running: int = 1,
                    under_way: str = "mlflow_run_id", group: bool = True) -> tuple[list[int], int]:
    """Start ``command``; once ``after_complete`` trials are COMPLETE and ``min_running`` more are
    under way (they carry the user attribute ``under_way``: by default their MLflow run exists),
    send ``sig`` to the process (its process group, as a terminal does; with ``group=False`` to
    it alone, as ``kill PID`` does). Returns the numbers of the trials it ran then and the process's
    exit code.

    The deadlines are generous (a busy machine slows everything several times); callers ask for
    the ``evaluator`` fixture so the study does not spend them training the evaluator.
    """
    proc = subprocess.Popen([sys.executable, "-m", "study.cli", *command], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env={**os.environ, **ONE_THREAD})
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"the study ended before it could be killed: {proc.stderr.read()}"
            if (workdir / "optuna.journal").exists():
                try:
                    trials = journal_study(workdir, name).get_trials()
                except KeyError:  # the study is not created yet
                    trials = []
                done = sum(t.state.name == "COMPLETE" for t in trials)
                running = [t for t in trials if t.state.name == "RUNNING" and under_way in t.user_attrs]
                if done >= after_complete and len(running) >= min_running:
                    os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
                    try:
                        return [t.number for t in running], proc.wait(timeout=300)
                    except subprocess.TimeoutExpired:  # stuck: its threads' stacks (the CLI's SIGUSR1), then fail
                        os.kill(proc.pid, signal.SIGUSR1)
                        time.sleep(5)
                        os.killpg(proc.pid, signal.SIGKILL)
                        raise AssertionError(f"no exit 300 s after {sig.name}:\n{proc.communicate(timeout=60)[1][-6000:]}") from None
            time.sleep(0.2)
        raise AssertionError("no trial was running in time")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.mark.parametrize("kind", ["random", "grid", "population"])
def test_kill_9_mid_trial_then_the_same_command_finishes_the_study(tmp_path, kind, evaluator):
    if kind in ("random", "population"):  # population: both trials train together, both die, both are retried together
        spec = write_spec(tmp_path, name="killed", trials=2, population=2 if kind == "population" else None)
        points = None
    else:  # the retry and the fresh trials after it must not repeat a point
        spec = write_spec(tmp_path, name="killed", sampler="grid", trials=None,
                          space={"optimizer": ["adam", "rmsprop"], "real_label": [1.0, 0.9]})
        points = [(o, r) for o in ("adam", "rmsprop") for r in (0.9, 1.0)]
    workdir = tmp_path / "gan-study-runs"
    command = ["run", str(spec), "--quiet"]
    population = kind == "population"
    # a population is under way once it trains: its trials' runs are opened one after the other before
    running, _ = _kill_mid_trial(command, tmp_path, workdir, "killed", after_complete=0 if population else 1,
                                 min_running=2 if population else 1, under_way="population" if population else "mlflow_run_id")

    again = gan_study(*command, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    trials = journal_study(workdir, "killed").get_trials()
    by_number = {t.number: t for t in trials}
    if kind == "population":
        assert sorted(running) == [0, 1] and all(by_number[n].user_attrs["population"] == 2 for n in running)
    else:
        assert len(running) == 1
    for killed in running:
        dead = by_number[killed]
        assert dead.state.name == "FAIL" and dead.user_attrs["reason"].startswith("worker died")
        retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
        assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == dead.params
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    target = len(points) if points else 2
    assert len(complete) == target, [(t.number, t.state.name, t.params) for t in trials]
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials) and len(trials) == target + len(running)
    if points:  # each grid point exactly once among the finished trials
        assert sorted((t.params["optimizer"], t.params["real_label"]) for t in complete) == sorted(points)

    client, runs = mlflow_runs(workdir, "killed")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]  # the dead invocation's run too
    for killed in running:
        killed_run = client.get_run(by_number[killed].user_attrs["mlflow_run_id"])
        assert killed_run.info.status == "KILLED"
        assert killed_run.data.tags["optuna.trial_state"] == "FAIL" and killed_run.data.tags["gan_study.reason"].startswith("worker died")
    trial_runs = [r for r in runs if r.data.tags.get("gan_study.role") == "trial"]
    assert sorted(r.info.status for r in trial_runs) == ["FINISHED"] * target + ["KILLED"] * len(running)
    invocations = sorted(r.info.status for r in runs if r.data.tags.get("gan_study.role") == "invocation")
    assert invocations == ["FINISHED", "KILLED"]

    status = gan_study("status", "killed", cwd=tmp_path)
    assert status.returncode == 0 and "worker died" in status.stdout


def test_sigterm_marks_the_running_trial_failed_in_both_stores_at_once(tmp_path, evaluator):
    spec = write_spec(tmp_path, name="stopped", trials=2)
    workdir = tmp_path / "gan-study-runs"
    (stopped,), code = _kill_mid_trial(["run", str(spec), "--quiet"], tmp_path, workdir, "stopped", after_complete=0,
                                       sig=signal.SIGTERM)
    assert code == 130
    # no rerun: the process itself recorded the stop before it exited
    trial = journal_study(workdir, "stopped").trials[stopped]
    assert trial.state.name == "FAIL" and trial.user_attrs["reason"].startswith("interrupted")
    client, runs = mlflow_runs(workdir, "stopped")
    assert client.get_run(trial.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow  # two spawned workers
def test_sigterm_to_the_parent_alone_stops_its_workers_and_marks_their_trials_failed(tmp_path, evaluator):
    """``kill PID`` (a scheduler's stop) reaches the parent only: it passes the stop on, so no
    worker trains on, and each running trial is recorded as interrupted in both stores."""
    spec = write_spec(tmp_path, name="parent", trials=2, population=1, budget={"steps": 3000},  # long enough to be stopped
                      evaluation={"every": 1000, "samples": 500, "final_samples": 500})
    workdir = tmp_path / "gan-study-runs"
    running, code = _kill_mid_trial(["run", str(spec), "--jobs", "2", "--quiet"], tmp_path, workdir, "parent", after_complete=0,
                                    sig=signal.SIGTERM, min_running=2, group=False)
    assert code == 130
    study = journal_study(workdir, "parent")
    for number in running:
        trial = study.trials[number]
        assert trial.state.name == "FAIL" and trial.user_attrs["reason"].startswith("interrupted"), trial.user_attrs
    client, runs = mlflow_runs(workdir, "parent")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


# -- divergence and out-of-memory, in process ------------------------------------------------------
@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_in_process(tmp_path: Path, raw: dict):
    from study.trials.runner import RunOptions, run_study
    from study.spec.spec import parse_spec
    from study.storage.tracking import Stores

    spec = parse_spec(raw)
    stores = Stores.resolve(tmp_path / "runs")
    outcome = run_study(spec, RunOptions(stores=stores, study_name=spec.name, device="cpu", quiet=True, target_trials=spec.trials))
    return outcome, journal_study(stores.workdir, spec.name), mlflow_runs(stores.workdir, spec.name)


def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(tmp_path, one_thread):
    raw = {**TINY, "name": "diverge", "sampler": "grid", "budget": {"steps": 20},
           "space": {"loss_bound": [1.0e-3, 1.0e3]}}
    raw.pop("trials")
    outcome, study, (client, runs) = _run_in_process(tmp_path, raw)
    assert (outcome.complete, outcome.pruned, outcome.failed) == (1, 1, 0)
    pruned = next(t for t in study.get_trials() if t.state.name == "PRUNED")
    assert pruned.params["loss_bound"] == 1.0e-3
    assert pruned.user_attrs["reason"].startswith("diverged: training diverged at step 1")
    run = client.get_run(pruned.user_attrs["mlflow_run_id"])
    assert run.data.tags["optuna.trial_state"] == "PRUNED" and run.data.tags["gan_study.reason"] == pruned.user_attrs["reason"]
    assert run.info.status == "FINISHED"


def test_out_of_memory_fails_one_trial_not_the_study(tmp_path, monkeypatch, capfd, one_thread):
    import gan

    real_train, calls = gan.train, []

    def flaky_train(cfg, *args, **kwargs):
        calls.append(cfg)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.19 GiB total capacity)")
        return real_train(cfg, *args, **kwargs)

    monkeypatch.setattr(gan, "train", flaky_train)
    raw = {**TINY, "name": "oom", "trials": 2, "budget": {"steps": 20}}
    outcome, study, (client, runs) = _run_in_process(tmp_path, raw)
    trials = study.get_trials()
    assert (outcome.complete, outcome.failed) == (2, 1)
    failed = trials[0]
    assert failed.state.name == "FAIL" and failed.user_attrs["reason"].startswith("out of memory (OutOfMemoryError: CUDA out of memory")
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 0)
    assert retry.state.name == "COMPLETE" and retry.params == failed.params
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["gan_study.reason"] == failed.user_attrs["reason"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "error")] == ["error/traceback.txt"]
    err = capfd.readouterr().err
    assert "gan-study: trial 0 failed: out of memory" in err and "Traceback" not in err


# -- caches and checkpoints -------------------------------------------------------------------
class _Payload:
    """A pickle that runs code when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_corrupt_or_foreign_checkpoints_and_caches_are_refused_or_rebuilt(tmp_path, monkeypatch, caplog):
    from gan import CheckpointError, load_checkpoint
    from gan.cache import read_cache

    monkeypatch.chdir(tmp_path)
    truncated = tmp_path / "truncated.pt"
    torch.save({"format": "gan-study-checkpoint/1", "generator": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "gan-study-checkpoint/1", "config": _Payload()}, foreign)
    for path in (truncated, foreign):
        with pytest.raises(CheckpointError, match="corrupt or not a gan-study checkpoint") as info:
            load_checkpoint(path)
        assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()  # weights_only=True: the pickle's code never ran
    cache = tmp_path / "evaluator.pt"
    cache.write_bytes(b"\x80\x04garbage")
    with caplog.at_level("WARNING"):
        assert read_cache(cache, "any-key") is None
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text


def test_weights_only_everywhere():
    """Every torch.load in the project refuses pickled code."""
    root = Path(__file__).resolve().parents[2]
    calls = []
    for path in [*root.glob("gan/**/*.py"), *root.glob("study/**/*.py"), *root.glob("reports/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line:
                calls.append((path.relative_to(root), number, line))
    assert calls and all("weights_only=True" in line for _, _, line in calls), calls


# -- bad input ------------------------------------------------------------------------------
_HELD: list[socket.socket] = []


def _closed_port() -> int:
    """A port that refuses connections for as long as this module is loaded: bound, never listening.

    A port bound and released at once could be taken by another process on a shared machine.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str
    """A piece of the error line (what is wrong, or how to fix it)."""
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    absent: str | None = None
    """Text the error line must not show (a password)."""


def _spec(**changes) -> Callable[[Path], None]:
    return lambda d: write_spec(d, name="bad", **changes) and None


def _text(name: str, text: str) -> Callable[[Path], None]:
    return lambda d: (d / name).write_text(text) and None


def _mnist_copy(broken: str, how: str) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        source = Path(os.environ["GAN_STUDY_DATA"]) / "MNIST" / "raw"
        raw = d / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for f in source.iterdir():
            if f.name != broken:
                (raw / f.name).symlink_to(f)
        data = (source / broken).read_bytes()
        (raw / broken).write_bytes(data[: len(data) // 3] if how == "truncated" else b"\x00\x00\x99\x99" + data[4:])

    return setup


def _file(d: Path) -> None:
    (d / "afile").write_text("a regular file, not a folder")


def _existing_study(d: Path) -> None:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    (d / "gan-study-runs").mkdir()
    storage = JournalStorage(JournalFileBackend(str(d / "gan-study-runs" / "optuna.journal")))
    optuna.create_study(study_name="other", storage=storage).enqueue_trial({"x": 1})


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    return lambda d: [s(d) for s in setups] and None


BAD = "bad.yaml"
CASES = [
    Case("spec: unknown key", ["run", BAD], "unknown key(s) ['colour']", _spec(colour="red")),
    Case("spec: wrong type", ["run", BAD], "trials must be an int >= 1, got trials='ten'", _spec(trials="ten")),
    Case("spec: empty choices", ["run", BAD], "space.optimizer: choices must be a non-empty list", _spec(space={"optimizer": []})),
    Case("spec: low > high", ["run", BAD], "space.lr_g: low must be <= high", _spec(space={"lr_g": {"low": 1e-2, "high": 1e-3}})),
    Case("spec: log range from 0", ["run", BAD], "a log range needs low > 0", _spec(space={"lr_g": {"low": 0, "high": 1e-3, "log": True}})),
    Case("spec: unknown optimizer", ["run", BAD], "optimizer", _spec(fixed={"optimizer": "adamw"})),
    Case("spec: unknown loss", ["run", BAD], "loss", _spec(fixed={"loss": "wasserstein"})),
    Case("spec: unknown sampler", ["run", BAD], "sampler must be one of tpe, random, grid", _spec(sampler="bayes")),
    Case("spec: unknown pruner", ["run", BAD], "pruner must be one of none, median, hyperband", _spec(pruner="asha")),
    Case("spec: invalid combination", ["run", BAD], "self_attention", _spec(fixed={"arch": "mlp", "self_attention": "d"})),
    Case("spec: grid over a range", ["run", BAD], "sampler=grid needs choices", _spec(sampler="grid")),
    Case("spec: YAML syntax error", ["run", BAD], "YAML syntax error at line 3", _text(BAD, "name: bad\ntrials: 3\nbudget: steps: 20\n")),
    Case("spec: not a mapping", ["run", BAD], "a spec must be a mapping", _text(BAD, "- name\n- bad\n")),
    Case("spec: no such file", ["run", "nope.yaml"], "no spec file 'nope.yaml'"),
    Case("cli: --jobs 0", ["run", BAD, "--jobs", "0"], "--jobs must be >= 1", _spec()),
    Case("cli: --trials beyond the grid", ["run", BAD, "--trials", "9"], "exceeds the grid of 2 points",
         _spec(sampler="grid", trials=None, space={"optimizer": ["adam", "sgd"]})),
    Case("data: folder missing", ["run", BAD, "--data-dir", "afile/data"], "MNIST not found", _both(_spec(), _file)),
    Case("data: truncated IDX", ["run", BAD, "--data-dir", "data"], "train-images-idx3-ubyte is truncated or corrupt", _both(_spec(), _mnist_copy("train-images-idx3-ubyte", "truncated"))),
    Case("data: wrong magic", ["run", BAD, "--data-dir", "data"], "train-labels-idx1-ubyte is not an IDX file of its kind (wrong magic number 00009999", _both(_spec(), _mnist_copy("train-labels-idx1-ubyte", "magic"))),
    Case("data: truncated test split", ["run", BAD, "--data-dir", "data"], "t10k-images-idx3-ubyte is truncated or corrupt", _both(_spec(), _mnist_copy("t10k-images-idx3-ubyte", "truncated"))),
    Case("cache: folder not writable", ["run", BAD], "cannot write the evaluator cache", _both(_spec(), _file), {"GAN_STUDY_CACHE": "afile/cache"}),
    Case("store: workdir under a file", ["run", BAD, "--workdir", "afile/runs"], "afile is not a folder", _both(_spec(), _file)),
    Case("store: postgres unreachable, password", ["run", BAD, "--storage", f"postgresql://gan:hunter2@127.0.0.1:{_closed_port()}/optuna"],
         "postgresql://gan:***@127.0.0.1", _spec(), absent="hunter2"),
    Case("store: storage scheme unknown", ["run", BAD, "--storage", "redis://127.0.0.1/0"], "is not supported", _spec()),
    Case("store: grpc URL without a port", ["run", BAD, "--storage", "grpc://10.0.0.5"], "write grpc://HOST:PORT", _spec()),
    Case("store: grpc proxy unreachable", ["run", BAD, "--storage", f"grpc://127.0.0.1:{_closed_port()}"],
         "cannot reach the Optuna gRPC proxy", _spec()),
    Case("store: tracking server unreachable", ["run", BAD, "--tracking-uri", f"http://127.0.0.1:{_closed_port()}"],
         "cannot reach the MLflow tracking server", _spec()),
    Case("store: heartbeat setting", ["run", BAD], "GAN_STUDY_HEARTBEAT='often' is invalid", _spec(), {"GAN_STUDY_HEARTBEAT": "often"}),
    Case("status: no such study", ["status", "nope"], "no study 'nope' in", _existing_study),
    Case("status: no studies yet", ["status", "nope"], "there are no studies in"),
    Case("status: postgres unreachable", ["status", "nope", "--storage", f"postgresql://gan:hunter2@127.0.0.1:{_closed_port()}/optuna"],
         "cannot reach the Optuna storage", absent="hunter2"),
    Case("status: grpc proxy unreachable", ["status", "nope", "--storage", f"grpc://127.0.0.1:{_closed_port()}"],
         "cannot reach the Optuna gRPC proxy"),
    Case("report: no such study", ["report", "nope"], "no study 'nope' in", _existing_study),
]
if torch.cuda.is_available():
    CASES = [c for c in CASES if c.name != "cli: --device cuda without CUDA"]
else:
    CASES.append(Case("cli: --device cuda without CUDA", ["run", BAD, "--device", "cuda"], "cuda", _spec()))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


# Each case runs in a child forked from a warm CLI process (tests.forkserver): its own process,
# folder, environment, stdout, stderr and exit code. A few cases also run cold
# (``python -m study.cli``) to show that nothing on import writes to stderr.
COLD = ("spec: unknown key", "data: truncated IDX", "store: postgres unreachable, password", "status: no such study")


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    """Every case in its own folder; {name: (case, CompletedProcess, before, after)}."""
    root = tmp_path_factory.mktemp("bad-input")
    folders, befores = {}, {}
    for index, case in enumerate(CASES):
        folder = root / f"case{index:02d}"
        folder.mkdir()
        if case.setup:
            case.setup(folder)
        folders[case.name], befores[case.name] = folder, _snapshot(folder)
    started = time.monotonic()
    # Deadlines against hangs only: on a busy machine the table can take many times its usual minute.
    cold = [c for c in CASES if c.name in COLD]
    results = {}
    # the cold runs after the warm ones: each sees its folder as the warm run left it
    for names, cases, fresh in (([c.name for c in CASES], CASES, False), ([f"{c.name} (cold)" for c in cold], cold, True)):
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            done = pool.map(lambda c: gan_study(*c.args, cwd=folders[c.name], env=c.env, timeout=600, cold=fresh), cases)
            results.update({name: (case, result, befores[case.name], _snapshot(folders[case.name]))
                            for name, case, result in zip(names, cases, done)})
    results["_seconds"] = time.monotonic() - started
    print(f"bad-input table: {len(CASES)} cases + {len(cold)} cold in {results['_seconds']:.1f} s")
    return results


@pytest.mark.parametrize("name", [c.name for c in CASES] + [f"{name} (cold)" for name in COLD])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_input_results, name):
    case, result, before, after = bad_input_results[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith(ERROR_PREFIX), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert case.expect in lines[0], lines[0]
    if case.absent:
        assert case.absent not in result.stderr
    assert after == before, "the command wrote to its folder"  # no gan-study-runs/, no changed store


def test_bad_input_table_has_enough_cases():
    assert len(CASES) >= 20


def test_passwords_are_masked_in_any_text():
    from study.storage.errors import mask_url

    assert mask_url("postgresql://gan:hunter2@db:5432/optuna") == "postgresql://gan:***@db:5432/optuna"
    assert mask_url("cannot reach 'postgresql+psycopg://u:p%40ss@10.0.0.5/x': refused") == "cannot reach 'postgresql+psycopg://u:***@10.0.0.5/x': refused"
    assert mask_url("http://user:tok@en@mlflow:5000/path") == "http://user:***@mlflow:5000/path"
    assert mask_url("host=db user=gan password=hunter2 dbname=x") == "host=db user=gan password=*** dbname=x"
    assert mask_url("sqlite:////tmp/runs/mlflow.db") == "sqlite:////tmp/runs/mlflow.db"
    assert mask_url("postgresql://gan@db/optuna") == "postgresql://gan@db/optuna"
