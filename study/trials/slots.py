"""Which trials a worker runs: a study's trial slots, the races for grid points, and the
companions asked of Optuna to train with a trial. A trial that is not needed ends as surplus:
it does not count and is never retried (study.trials.recovery counts the slots)."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from ..storage import record
from ..storage.compat import fixed_params
from ..storage.record import TrialRecord
from .recovery import counts, dead_here, will_retry

__all__ = ["claim", "companions", "give_up", "grid_twin"]

GRID_WAIT_SECONDS = 600  # a trial that shows no point this long after this one asked is dead


def give_up(trial: optuna.Trial, why: str) -> None:
    """End the trial as surplus: it does not count and is never retried."""
    record.write(trial, surplus=True)
    raise optuna.TrialPruned(why)


def claim(trial: optuna.Trial, target_trials: int) -> None:
    """Give the trial up when it is not needed: the study has its trials, or another trial
    retries the same failure."""
    trials = trial.study.get_trials(deepcopy=False)
    retry_of = TrialRecord.from_trial(trial).retry_of
    if retry_of is not None:
        # A retry always runs: the study committed to its configuration. Only one retry, though.
        twin = next((t for t in trials if t.number < trial.number and TrialRecord.from_trial(t).retry_of == retry_of
                     and not TrialRecord.from_trial(t).surplus), None)
        if twin is not None:
            give_up(trial, f"surplus: trial {twin.number} already retries trial {retry_of}")
        return
    ahead = sum(1 for t in trials if t.number < trial.number and counts(t))
    if ahead >= target_trials:  # another worker took the last slot meanwhile
        give_up(trial, "surplus: the study already has its trials")


def grid_twin(trial: optuna.Trial) -> int | None:
    """An earlier trial that runs (or ran) this trial's grid point, if any.

    Workers race for grid points only past the first grid-size trials (Optuna then draws an
    unvisited point); the lower trial number wins. An earlier trial whose point is not
    known yet (just started) is waited for, a while.
    """
    deadline = time.monotonic() + GRID_WAIT_SECONDS  # a starved worker on a busy machine is waited for
    mine = trial.params
    retry_of = TrialRecord.from_trial(trial).retry_of
    while True:
        pending = False
        for t in trial.study.get_trials(deepcopy=False):
            if t.number >= trial.number or TrialRecord.from_trial(t).surplus or t.number == retry_of:
                continue
            params = t.params or fixed_params(t) or {}  # a queued trial's point is known before it draws it
            if t.state == TrialState.RUNNING and not params:
                pending = pending or not dead_here(TrialRecord.from_trial(t).worker)  # a dead one never shows it
            elif params == mine and not will_retry(t):  # a failure to be retried: its retry decides
                return t.number
        if not pending or time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def companions(leader: optuna.Trial, size: int, target_trials: int) -> list[optuna.Trial]:
    """More trials to train with ``leader``, asked of Optuna now: ``size`` in all, never more
    than the study's free slots. A search's sampler keeps them apart with its constant liar; a
    grid (or sweep) hands out its points in trial-number order, so they are the next points
    (:func:`grid_twin` still settles races between workers)."""
    if size <= 1:
        return []
    trials = leader.study.get_trials(deepcopy=False)
    free = target_trials - sum(1 for t in trials if counts(t))
    queued = sum(1 for t in trials if t.state == TrialState.WAITING and not TrialRecord.from_trial(t).surplus)
    return [leader.study.ask() for _ in range(min(size - 1, max(0, free) + queued))]
