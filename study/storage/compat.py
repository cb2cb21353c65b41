"""Every use of a private Optuna or MLflow API, in one place (tests/study/storage/test_compat.py checks
each against the installed versions, so an upgrade that changes one fails loudly there).

- Stale trials of an RDB storage: Optuna's public ``fail_stale_trials`` sets FAIL *before* a
  reason can be recorded, so a reader could see a failed trial without its reason; we ask for
  the stale ids and write the reason first.
- The grid sampler of a retry: Optuna's ``GridSampler`` leaves an enqueued trial without a grid
  point and then fails in ``after_trial`` (KeyError 'grid_id') when one point is left.
- The parameters of an enqueued trial before it draws them: ``enqueue_trial`` keeps them in
  the trial's system attribute ``fixed_params``, and only the trial's own ``suggest_*`` calls
  read them publicly; a worker settling a grid race must see another trial's point.
- The heartbeat of a trial we ask for ourselves: ``optimize`` beats only for the trial it runs;
  the companions a worker trains with it (study/trials/objective.py) need the same thread, which
  Optuna keeps private.
- Bulk metric histories: one SQL query per metric for all runs instead of one call per run and
  metric (MLflow has no public bulk call); the public per-run call is the fallback.
- A new SQLite tracking store as a copy of an empty one: MLflow builds a SQLite store's tables
  by replaying its alembic migrations, 3-5 s for every new work folder; the copy relies on
  what MLflow writes into an empty store (the schema, its version, the Default experiment and
  workspace), which the test compares with a store MLflow creates itself.
- The end of a ``gan-study`` process without CPython's teardown: ``atexit._run_exitfuncs``,
  then ``os._exit`` (:func:`exit_now`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("gan_study")

__all__ = ["RetryingGridSampler", "empty_tracking_store", "exit_now", "fixed_params", "heartbeat", "metric_history_bulk", "seed_tracking_store", "stale_trial_ids"]


def stale_trial_ids(storage: BaseStorage, study_id: int) -> set[int]:
    """Trial ids whose heartbeat stopped for the grace period (empty without heartbeats)."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return set()
    return set(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]


def fixed_params(t: FrozenTrial) -> dict[str, Any] | None:
    """The parameter values ``enqueue_trial`` fixed for ``t`` (None when it was not enqueued)."""
    return t.system_attrs.get("fixed_params")


def heartbeat(storage: BaseStorage | None, trial: optuna.Trial) -> contextlib.AbstractContextManager:
    """The trial's heartbeat while the block runs, as ``optimize`` keeps it for its own trial
    (nothing on storages without heartbeats)."""
    if storage is None:
        return contextlib.nullcontext()
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial._trial_id, storage)  # type: ignore[attr-defined]


class RetryingGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, which also knows the grid point of a retry (an enqueued trial):
    a retry takes its original's point."""

    def __init__(self, search_space: dict[str, list[Any]], storage: BaseStorage, seed: int | None = None) -> None:
        super().__init__(search_space, seed=seed)
        self._storage_ = storage  # the study's storage, kept so no private Study attribute is read

    def _trial_id(self, study: optuna.Study, trial: FrozenTrial) -> int:
        return self._storage_.get_trial_id_from_study_id_trial_number(self._storage_.get_study_id_from_name(study.study_name), trial.number)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fixed = fixed_params(trial)
        if fixed is not None and "grid_id" not in trial.system_attrs:
            point = tuple(fixed.get(name) for name in self._param_names)
            grid_id = next((i for i, p in enumerate(self._all_grids) if all(self._grid_value_equal(a, b) for a, b in zip(p, point))), None)
            if grid_id is not None:
                trial_id = self._trial_id(study, trial)
                self._storage_.set_trial_system_attr(trial_id, "search_space", self._search_space)
                self._storage_.set_trial_system_attr(trial_id, "grid_id", grid_id)
            return
        super().before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        if "grid_id" in self._storage_.get_trial_system_attrs(self._trial_id(study, trial)):
            super().after_trial(study, trial, state, values)


def metric_history_bulk(client, run_ids: list[str], key: str) -> list[tuple[str, int, float]] | None:
    """(run id, step, value) of metric ``key`` of many runs in one query; None where the store
    has no bulk query (the caller then asks run by run)."""
    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    bulk = getattr(store, "get_metric_history_bulk", None)
    if bulk is None:
        return None
    rows = []
    try:
        for start in range(0, len(run_ids), 500):
            for m in bulk(run_ids[start : start + 500], key, None):
                rows.append((m.run_id, m.step, m.value))
    except Exception as exc:  # noqa: BLE001 - a store whose bulk query fails: the portable way
        log.debug("bulk metric history failed (%s); fetching run by run", exc)
        return None
    return rows


def empty_tracking_store(cache_dir: Path) -> Path:
    """An empty MLflow SQLite store made by MLflow itself, once per MLflow version, in ``cache_dir``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    path = cache_dir / f"mlflow-empty-{mlflow.__version__}.db"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        db, copy = Path(tmp) / "mlflow.db", Path(tmp) / "copy.db"
        MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)  # creates the tables (all migrations)
        with contextlib.closing(sqlite3.connect(db)) as src, contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)  # consistent whatever MLflow's engine still holds open
        os.replace(copy, path)  # atomic: a concurrent maker's copy is as good
    return path


def seed_tracking_store(db: Path, cache_dir: Path, artifact_root: str) -> bool:
    """Create the SQLite tracking store ``db`` as a copy of the cached empty store, with the
    Default experiment's artifacts under ``artifact_root``/0 (MLflow would put them in the
    creating process's working folder). False, and nothing written, where ``db`` exists or the
    copy cannot be made: MLflow then creates the store itself."""
    if db.exists():
        return False
    try:
        template = empty_tracking_store(cache_dir)
        tmp = db.with_name(f".{db.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(template, tmp)
            now = int(time.time() * 1000)
            with contextlib.closing(sqlite3.connect(tmp)) as con, con:
                con.execute("UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? WHERE experiment_id = 0",
                            (f"{artifact_root.rstrip('/')}/0", now, now))
            os.replace(tmp, db)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, sqlite3.Error) as exc:  # a read-only cache, a full disk: the slow way still works
        log.debug("no copy of an empty tracking store (%s); MLflow creates it", exc)
        return False
    return True


def exit_now(code: int) -> NoReturn:
    """End the process as the interpreter's exit does, without its teardown.

    After a command that loaded torch, MLflow and Optuna, CPython's teardown (clearing thousands
    of modules, collecting their objects) took 0.5-0.8 CPU-seconds of a 3-second ``gan-study
    status`` on 2-core AMD EPYC, and 2.7 s in a process forked from a warm one (the test
    suite's), where touching every object copies its page. What an exit does that anyone can
    see is kept, in CPython's order and through its own hooks: ``threading._shutdown`` (the
    thread-exit hooks that stop idle ``concurrent.futures`` workers, as MLflow's artifact
    uploads leave them, then it waits for non-daemon threads; joining them without those hooks
    waits forever), the ``atexit`` handlers (logging's flush, temporary folders,
    multiprocessing's children, MLflow's), then stdout's and stderr's flush.
    """
    import atexit
    import threading

    threading._shutdown()  # CPython's own hooks, as Py_FinalizeEx calls them
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a reader that has gone (a closed pipe) gets nothing
            stream.flush()
    os._exit(code)
