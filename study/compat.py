"""Every use of a private Optuna or MLflow API, in one place (tests/study/test_compat.py checks
each against the installed versions, so an upgrade that changes one fails loudly there).

- Stale trials of an RDB storage: Optuna's public ``fail_stale_trials`` sets FAIL *before* a
  reason can be recorded, so a reader could see a failed trial without its reason; we ask for
  the stale ids and write the reason first.
- The grid sampler of a retry: Optuna's ``GridSampler`` leaves an enqueued trial without a grid
  point and then fails in ``after_trial`` (KeyError 'grid_id') when one point is left.
- The heartbeat of a trial we ask for ourselves: ``optimize`` beats only for the trial it runs;
  the companions a worker trains with it (study/objective.py) need the same thread, which
  Optuna keeps private.
- Bulk metric histories: one SQL query per metric for all runs instead of one call per run and
  metric (MLflow has no public bulk call); the public per-run call is the fallback.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("gan_study")

__all__ = ["RetryingGridSampler", "heartbeat", "metric_history_bulk", "stale_trial_ids"]


def stale_trial_ids(storage: BaseStorage, study_id: int) -> set[int]:
    """Trial ids whose heartbeat stopped for the grace period (empty without heartbeats)."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is None:
        return set()
    return set(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]


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
        fixed = trial.system_attrs.get("fixed_params")
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
