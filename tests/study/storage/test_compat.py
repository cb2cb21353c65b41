"""The private Optuna and MLflow APIs of study/storage/compat.py, against the installed versions: an
upgrade that renames or changes one fails here, by name, instead of deep inside a study."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study.storage.compat import RetryingGridSampler, fixed_params, heartbeat, metric_history_bulk, seed_tracking_store, stale_trial_ids

REPO = Path(__file__).resolve().parents[3]


def test_private_names_still_exist():
    from mlflow.tracking import MlflowClient
    from optuna.storages import RDBStorage

    assert callable(getattr(RDBStorage, "_get_stale_trial_ids", None)), "Optuna dropped RDBStorage._get_stale_trial_ids"
    import atexit
    import threading

    assert callable(threading._shutdown) and callable(atexit._run_exitfuncs), "CPython's exit hooks moved (exit_now)"
    grid = optuna.samplers.GridSampler({"a": [1, 2], "b": ["x"]}, seed=0)
    for name in ("_param_names", "_all_grids", "_search_space"):
        assert hasattr(grid, name), f"Optuna's GridSampler has no {name} any more"
    assert grid._param_names == ["a", "b"] and sorted(grid._all_grids) == [(1, "x"), (2, "x")]
    assert grid._grid_value_equal(1, 1) and not grid._grid_value_equal(1, 2)
    client = MlflowClient(tracking_uri="sqlite:///:memory:")
    assert hasattr(client, "_tracking_client") and hasattr(client._tracking_client, "store"), "MlflowClient internals changed"


def test_stale_trials_of_an_rdb_storage(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    study_id = storage.get_study_id_from_name("s")
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.record_heartbeat(trial_id)
    deadline = time.monotonic() + 60  # stale once the grace period passed with no heartbeat
    while trial_id not in stale_trial_ids(storage, study_id):
        assert time.monotonic() < deadline, "a trial without heartbeats never became stale"
        time.sleep(0.5)
    # an asked trial beats while compat.heartbeat's block runs, and is stale again after it
    with heartbeat(storage, trial):
        time.sleep(3)  # past the grace period: only the heartbeat keeps it fresh
        assert trial_id not in stale_trial_ids(storage, study_id)
    time.sleep(2.5)
    assert trial_id in stale_trial_ids(storage, study_id)
    no_heartbeat = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'n.db'}")
    optuna.create_study(storage=no_heartbeat, study_name="s").ask()
    assert stale_trial_ids(no_heartbeat, no_heartbeat.get_study_id_from_name("s")) == set()


def test_a_grid_retry_takes_its_originals_point_and_the_grid_completes(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    space = {"a": [1, 2, 3]}
    study = optuna.create_study(storage=storage, study_name="g", sampler=RetryingGridSampler(space, storage, seed=0))
    first = study.ask()
    first.suggest_categorical("a", space["a"])
    study.tell(first, state=TrialState.FAIL)
    study.enqueue_trial(first.params)  # the retry of a failed point
    study.optimize(lambda t: float(t.suggest_categorical("a", space["a"])), n_trials=3)
    done = [t.params["a"] for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(done) == [1, 2, 3]


def test_bulk_metric_history_matches_the_public_call(tmp_path):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    for i, rid in enumerate(runs):
        client.log_batch(rid, metrics=[Metric("g_loss", float(step * (i + 1)), 0, step) for step in range(3)])
    bulk = metric_history_bulk(client, runs, "g_loss")
    assert bulk is not None, "MLflow's SQL store lost get_metric_history_bulk"
    public = [(rid, m.step, m.value) for rid in runs for m in client.get_metric_history(rid, "g_loss")]
    assert sorted(bulk) == sorted(public)


def test_an_enqueued_trials_fixed_params_before_it_draws_them(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(storage=storage, study_name="e")
    study.ask()  # an ordinary trial: nothing fixed (asked first: ask() would take the enqueued one)
    study.enqueue_trial({"a": 2, "b": "x"})
    drawn, waiting = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    assert fixed_params(waiting) == {"a": 2, "b": "x"} and not waiting.params, "Optuna moved an enqueued trial's fixed_params"
    assert fixed_params(drawn) is None


def test_study_and_reports_use_no_other_private_api():
    """`grep` over study/ and reports/ finds private attributes, and Optuna's private system
    attributes (read by string key, which the attribute check cannot see), only in compat.py."""
    out = subprocess.run(["grep", "-rnE", r"\._[a-z]|system_attrs", "study", "reports", "--include=*.py"], cwd=REPO, capture_output=True, text=True)
    hits = [line for line in out.stdout.splitlines() if not line.startswith("study/storage/compat.py")]
    assert not hits, "\n".join(hits)


@pytest.mark.skipif(sys.platform != "linux", reason="the journal's process check reads /proc")
def test_worker_identity_has_a_start_time():
    from study.trials.recovery import worker_identity

    assert worker_identity()["started"]


def _contents(db: Path) -> tuple[list, dict]:
    with sqlite3.connect(db) as con:
        # a table's constraints come in no fixed order (MLflow's migrations rebuild tables from sets)
        schema = sorted((kind, name, tuple(sorted(part.strip() for part in (sql or "").split(","))))
                        for kind, name, sql in con.execute("SELECT type, name, sql FROM sqlite_master"))
        rows = {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}"))) for (kind, t, _) in schema if kind == "table"}
    return schema, rows


def test_a_seeded_tracking_store_is_the_store_mlflow_creates(tmp_path):
    from mlflow.tracking import MlflowClient

    made = tmp_path / "made" / "mlflow.db"
    made.parent.mkdir()
    MlflowClient(tracking_uri=f"sqlite:///{made}").search_experiments()
    seeded = tmp_path / "seeded" / "mlflow.db"
    seeded.parent.mkdir()
    root = (seeded.parent / "mlartifacts").as_uri()
    assert seed_tracking_store(seeded, tmp_path / "cache", root)
    assert not seed_tracking_store(seeded, tmp_path / "cache", root), "an existing store is never replaced"
    (schema_made, rows_made), (schema_seeded, rows_seeded) = _contents(made), _contents(seeded)
    assert schema_seeded == schema_made, "MLflow's empty store changed: study/storage/compat.py seed_tracking_store copies an old one"
    default_made, default_seeded = (r.pop("experiments") for r in (rows_made, rows_seeded))
    assert rows_seeded == rows_made  # the schema version, the default workspace, nothing else
    with sqlite3.connect(seeded) as con:
        (location, created), = con.execute("SELECT artifact_location, creation_time FROM experiments WHERE experiment_id = 0")
    assert location == f"{root}/0" and abs(created / 1000 - time.time()) < 600
    assert len(default_made) == len(default_seeded) == 1
    # MLflow opens it without migrating and uses it as its own
    client = MlflowClient(tracking_uri=f"sqlite:///{seeded}")
    run = client.create_run(client.create_experiment("x", artifact_location=f"{root}/x")).info.run_id
    client.log_metric(run, "fd", 1.5, step=3)
    assert [m.value for m in client.get_metric_history(run, "fd")] == [1.5]


def test_no_copy_where_the_cache_cannot_be_written(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache folder should be
    db = tmp_path / "mlflow.db"
    assert not seed_tracking_store(db, blocked / "cache", tmp_path.as_uri())
    assert not db.exists()


# -- the end of a gan-study process (exit_now) ---------------------------------------------------
PROGRAM = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import study.storage.compat
pool = ThreadPoolExecutor(2)                       # idle workers left running, as MLflow's uploads leave them
pool.submit(print, "pool ran", flush=True).result()
def late():
    time.sleep(0.5)
    print("thread done", flush=True)
threading.Thread(target=late).start()              # non-daemon: the exit waits for it
atexit.register(lambda: print("atexit ran"))       # printed unflushed: the exit flushes it
sys.stderr.write("unflushed error line")
study.storage.compat.exit_now(3)
"""


def test_exit_waits_for_threads_runs_atexit_handlers_flushes_and_keeps_the_code():
    out = subprocess.run([sys.executable, "-c", PROGRAM], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    assert out.stdout.splitlines() == ["pool ran", "thread done", "atexit ran"]
    assert out.stderr == "unflushed error line"


def test_the_installed_console_script_runs_a_command_to_its_exit_code():
    script = Path(sys.executable).with_name("gan-study")  # pip's wrapper around study.cli:run
    out = subprocess.run([str(script), "specs"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["full", "quick", "seeds"]
