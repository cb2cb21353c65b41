"""Many workers on one study through PostgreSQL and an MLflow tracking server.

The test starts a real PostgreSQL (initdb in a temporary folder, pg_ctl on a free port of
127.0.0.1), an MLflow server on it that proxies artifacts, and ``gan-study worker`` processes:

- 3 workers on a 6-point grid: exactly 6 trials complete, 6 MLflow trial runs, no point twice;
- 3 workers on a 4-point grid, one killed with kill -9 mid-trial: Optuna's heartbeat fails its
  trial, its MLflow run is closed as KILLED, its point is retried once and the study completes.

Without PostgreSQL binaries the tests fail in CI (``CI`` set) and skip elsewhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from benchmarks.servers import MlflowServer, PostgresServer, pg_bindir

pytestmark = pytest.mark.slow  # a PostgreSQL server and worker processes

HEARTBEAT = "2,30"  # seconds: a killed worker's trial is failed in 30 s, not the default 90; a busy live worker is not


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on 127.0.0.1 with databases 'optuna' and 'mlflow'; its base URL."""
    bindir = pg_bindir()
    if bindir is None:
        message = "PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message + "; CI runs this test")
    try:
        import psycopg  # noqa: F401 - SQLAlchemy's driver for postgresql:// URLs
    except ImportError:
        message = "the PostgreSQL driver is missing: pip install -e '.[dev]' (psycopg[binary])"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = PostgresServer(bindir)
    try:
        yield server.setup().url
    finally:
        server.close()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """``mlflow server`` on the PostgreSQL database, proxying artifacts to a local folder."""
    artifacts = tmp_path_factory.mktemp("mlflow-artifacts")
    server = MlflowServer(f"{postgres}/mlflow", artifacts, artifacts.parent / "mlflow-server.log")
    try:
        yield server.start().uri, artifacts
    finally:
        server.stop()


def _grid_spec(folder: Path, name: str, steps: int, every: int, space: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "objective": "fd", "sampler": "grid", "budget": {"steps": steps},
        "evaluation": {"every": every, "samples": 500, "final_samples": 500}, "fixed": {"batch_size": 64}, "space": space,
    }))
    return path


def _workers(n: int, spec: Path, storage: str, tracking: str, cwd: Path) -> list[subprocess.Popen]:
    env = {**os.environ, "GAN_STUDY_HEARTBEAT": HEARTBEAT, "OMP_NUM_THREADS": "1"}  # 3 workers on 2 cores: no spinning threads
    return [
        subprocess.Popen([sys.executable, "-m", "study.cli", "worker", str(spec), "--storage", storage, "--tracking-uri", tracking, "--quiet"],
                         cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        for _ in range(n)
    ]


def _finish(procs: list[subprocess.Popen], timeout: float = 900) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            stdout, stderr = p.communicate()
        out.append((p.returncode, stdout, stderr))
    return out


def _trial_runs(tracking: str, name: str):
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return client, runs, [r for r in runs if r.data.tags.get("gan_study.role") == "trial"]


def test_three_workers_share_a_grid_exactly_once(postgres, mlflow_server, tmp_path, evaluator):
    tracking, artifacts = mlflow_server
    storage = f"{postgres}/optuna"
    spec = _grid_spec(tmp_path, "pg-grid", steps=20, every=100, space={"optimizer": ["adam", "rmsprop"], "real_label": [1.0, 0.9, 0.8]})
    results = _finish(_workers(3, spec, storage, tracking, tmp_path))
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr and "secret" not in stdout + stderr

    trials = optuna.load_study(study_name="pg-grid", storage=storage).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    points = sorted((t.params["optimizer"], t.params["real_label"]) for t in trials)
    assert points == sorted((o, r) for o in ("adam", "rmsprop") for r in (1.0, 0.9, 0.8))
    # Each trial ran in one of the workers (on a busy machine one may finish them all first).
    assert 1 <= len({t.user_attrs["worker"]["pid"] for t in trials}) <= 3

    client, runs, trial_runs = _trial_runs(tracking, "pg-grid")
    assert len(trial_runs) == 6 and all(r.info.status == "FINISHED" for r in trial_runs)
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in trial_runs) == list(range(6))
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in trial_runs}
    assert sum(r.data.tags.get("gan_study.role") == "invocation" for r in runs) == 3
    # Artifacts go through the server's proxy into --artifacts-destination.
    run = trial_runs[0]
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    listed = {a.path for a in client.list_artifacts(run.info.run_id, "final")}
    assert "final/metrics.json" in listed
    assert list(artifacts.rglob(f"{run.info.run_id}/artifacts/checkpoint/checkpoint.pt"))
    metrics = json.loads(Path(client.download_artifacts(run.info.run_id, "final/metrics.json", str(tmp_path))).read_text())
    assert metrics["config"]["batch_size"] == 64

    # Read-only commands see the study through the same stores; passwords stay masked.
    status = subprocess.run([sys.executable, "-m", "study.cli", "status", "pg-grid", "--storage", storage, "--tracking-uri", tracking, "--json"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert [r["mlflow_status"] for r in json.loads(status.stdout)["trials"]] == ["FINISHED"] * 6


def test_a_killed_worker_trial_is_failed_by_heartbeat_and_retried(postgres, mlflow_server, tmp_path, evaluator):
    tracking, _ = mlflow_server
    storage = f"{postgres}/optuna"
    spec = _grid_spec(tmp_path, "pg-kill", steps=60, every=30, space={"optimizer": ["adam", "rmsprop"], "real_label": [1.0, 0.9]})
    procs = _workers(3, spec, storage, tracking, tmp_path)
    by_pid = {p.pid: p for p in procs}
    victim, killed = None, None
    deadline = time.monotonic() + 900  # generous: a busy machine, not a hang, is what this allows for
    try:
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                trials = optuna.load_study(study_name="pg-kill", storage=storage).get_trials()
            except KeyError:
                continue
            for t in trials:
                pid = t.user_attrs.get("worker", {}).get("pid")
                if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs and pid in by_pid:
                    victim, killed = by_pid[pid], t
                    os.killpg(pid, signal.SIGKILL)
                    break
        assert victim is not None, "no trial was running in time"
        survivors = [p for p in procs if p is not victim]
        results = _finish(survivors)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    for code, stdout, stderr in results:
        assert code == 0, stderr
        assert "Traceback" not in stderr

    trials = optuna.load_study(study_name="pg-kill", storage=storage).get_trials()
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state.name == "FAIL"
    shown = [(t.number, t.state.name, t.params, t.user_attrs.get("retry_of"), t.user_attrs.get("reason"), t.user_attrs.get("worker", {}).get("pid")) for t in trials]
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed.number and not t.user_attrs.get("surplus")]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE" and retries[0].params == dead.params, shown
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted((t.params["optimizer"], t.params["real_label"]) for t in complete) == sorted(
        (o, r) for o in ("adam", "rmsprop") for r in (1.0, 0.9)
    ), [(t.number, t.state.name, t.params, t.user_attrs.get("reason")) for t in trials]
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]

    client, runs, trial_runs = _trial_runs(tracking, "pg-kill")
    killed_run = client.get_run(killed.user_attrs["mlflow_run_id"])
    assert killed_run.info.status == "KILLED" and killed_run.data.tags["optuna.trial_state"] == "FAIL"
    assert killed_run.data.tags["gan_study.reason"].startswith("worker died")
    assert sorted(r.info.status for r in trial_runs) == ["FINISHED"] * 4 + ["KILLED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]  # the killed worker's invocation run too (same host)
