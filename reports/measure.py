"""A claim's quantity measured on one run at one budget: the budgets a run was evaluated at (in
epochs where its config gives one), final metrics and digit shares read from the evaluation at
that step, curve statistics on the curve cut at that step, and how many points they rest on.

At a run's last step the final metrics (the final, larger sample) are read; at earlier
evaluations the step metrics MLflow holds (``fd``, ``modes`` ..., ``class_count.D``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from study.spec.claims import N_TRAIN, Claim

from .analysis import Level
from .data import StudyData, TrialInfo

__all__ = ["Budget", "Measure", "Run", "budgets_of", "level_runs", "measure", "metric_at", "run_at", "runs_of"]

EPOCH_DIGITS = 3  # budgets in epochs are matched at this many decimals


@dataclass(frozen=True)
class Run:
    """One training run (a repeat of a trial) as claims see it."""

    trial: int
    repeat: int
    seed: int
    final: dict[str, Any]
    steps_per_epoch: int | None
    """Iterations per epoch (N_TRAIN // real batch) where the config says; else None."""
    eval_steps: tuple[int, ...]
    """Steps with evaluation metrics (step 0, every evaluation, the end), ascending."""

    @property
    def last_step(self) -> int | None:
        steps = self.final.get("steps")
        if isinstance(steps, (int, float)) and not isinstance(steps, bool):
            return int(steps)
        return self.eval_steps[-1] if self.eval_steps else None

    def budget_key(self, step: int | None) -> float | None:
        """The budget of ``step``: epochs (rounded) where known, else the step; None: unknown."""
        if step is None:
            return None
        return round(step / self.steps_per_epoch, EPOCH_DIGITS) if self.steps_per_epoch else float(step)

    @functools.cached_property
    def budget_steps(self) -> dict[float | None, int | None]:
        """Budget key -> the step it is measured at: every evaluation after step 0, and the end."""
        out: dict[float | None, int | None] = {self.budget_key(s): s for s in self.eval_steps if s > 0}
        out[self.budget_key(self.last_step)] = self.last_step
        return out


@dataclass(frozen=True)
class Budget:
    """A budget at which a claim is judged: epochs (or steps where no epoch is known); None for
    runs that say nothing of their steps (judged once, at their end)."""

    key: float | None
    unit: str
    steps: tuple[int, ...] = ()
    """The distinct steps the compared runs are measured at (one unless batch sizes differ)."""

    @property
    def label(self) -> str:
        if self.key is None:
            return "end of training"
        if self.unit == "steps":
            return f"{self.key:,.0f} steps"
        steps = f" ({self.steps[0]:,} steps)" if len(self.steps) == 1 else ""
        return f"{self.key:g} epoch{'' if self.key == 1 else 's'}{steps}"

    @property
    def short(self) -> str:
        return "end" if self.key is None else f"{self.key:g}{'' if self.unit == 'epochs' else ' st'}"


@dataclass(frozen=True)
class Measure:
    value: float
    points: int
    """Points the statistic rests on (its window's, or the curve's up to the step); 1 for a
    metric read at the step, 0 when it is not logged there."""
    censored: bool = False
    """steps_below/above: the run never got there by this step (counted at it)."""


def _steps_per_epoch(config: dict[str, Any]) -> int | None:
    batch = config.get("batch_size")
    if not isinstance(batch, int) or batch < 1:
        return None
    real = batch // 2 if config.get("batch_counts") == "total" else batch
    return max(1, N_TRAIN // max(1, real))


def runs_of(data: StudyData, trials: list[TrialInfo]) -> list[Run]:
    """The runs (repeats) of ``trials``, each with its seed (the trial's seed + the repeat)."""
    out = []
    for t in trials:
        finals = t.repeat_metrics or ([t.metrics] if t.metrics else [])
        seed0 = t.config.get("seed", 0) if isinstance(t.config.get("seed", 0), int) else 0
        for r, final in enumerate(finals):
            fd = data.run_curves.get((t.number, r, "fd"))
            steps = tuple(sorted({int(s) for s in fd[0]})) if fd is not None else ()
            out.append(Run(t.number, r, seed0 + r, final, _steps_per_epoch(t.config), steps))
    return out


def level_runs(data: StudyData, level: Level) -> list[Run]:
    return runs_of(data, level.trials)


def budgets_of(runs_by_level: dict[str, list[Run]]) -> list[Budget]:
    """The budgets every level has (a level's: any of its runs'), ascending; budget 0 excluded."""
    runs = [r for rs in runs_by_level.values() for r in rs]
    if not runs:
        return []
    unit = "epochs" if all(r.steps_per_epoch for r in runs) else "steps"
    if unit == "steps":  # mixed: every run measured in steps
        runs_by_level = {k: [Run(r.trial, r.repeat, r.seed, r.final, None, r.eval_steps) for r in rs] for k, rs in runs_by_level.items()}
    common: set | None = None
    for rs in runs_by_level.values():
        keys = {k for r in rs for k in r.budget_steps}
        common = keys if common is None else common & keys
    out = []
    for key in sorted(common or (), key=lambda k: (k is not None, k if k is not None else 0)):
        steps = sorted({r.budget_steps[key] for rs in runs_by_level.values() for r in rs if key in r.budget_steps and r.budget_steps[key] is not None})
        out.append(Budget(key, unit, tuple(steps)))
    return out


def run_at(run: Run, budget: Budget) -> int | None | bool:
    """The step ``run`` is measured at for ``budget``; False when it has no evaluation there."""
    if budget.key is None:
        return run.last_step
    key = run.budget_key if budget.unit == "epochs" else (lambda s: None if s is None else float(s))
    for key_, step in ((key(s), s) for s in (*run.eval_steps, run.last_step)):
        if key_ == budget.key:
            return step
    return False


def metric_at(data: StudyData, run: Run, step: int | None, name: str) -> float:
    """A metric of ``run`` at ``step``: the final value at its last step, else the step metric."""
    if step is None or step == run.last_step:
        value = run.final.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return _step_metric(data, run, step, name)


def _step_metric(data: StudyData, run: Run, step: int | None, name: str) -> float:
    found = data.run_curves.get((run.trial, run.repeat, name))
    if found is None or step is None:
        return math.nan
    hit = np.flatnonzero(found[0] == step)
    return float(found[1][hit[-1]]) if len(hit) else math.nan


def _share(data: StudyData, run: Run, step: int | None, digit: int) -> float:
    counts = None
    if step is None or step == run.last_step:
        final = run.final.get("class_counts")
        if isinstance(final, list) and sum(final):
            counts = [float(c) for c in final]
    if counts is None:
        counts = [_step_metric(data, run, step, f"class_count.{d}") for d in range(10)]
    if not all(math.isfinite(c) for c in counts) or not sum(counts):
        return math.nan
    return counts[digit] / sum(counts)


def measure(data: StudyData, run: Run, step: int | None, claim: Claim) -> Measure:
    """The claim's quantity on ``run`` at ``step`` (None: its end)."""
    q = claim.quantity
    if q.kind == "share":
        value = _share(data, run, step, q.digit)
        return Measure(value, int(math.isfinite(value)))
    if q.kind == "metric":
        value = metric_at(data, run, step, q.name)
        return Measure(value, int(math.isfinite(value)))
    found = data.run_curves.get((run.trial, run.repeat, q.name))
    if found is None or not len(found[0]):
        return Measure(math.nan, 0)
    steps, values = found
    if step is not None:
        keep = steps <= step
        steps, values = steps[keep], values[keep]
    if not len(values):
        return Measure(math.nan, 0)
    value, censored = q.measure(steps, values, claim.window, claim.times)
    return Measure(value, q.statistic.points(len(values), claim.window), censored)
