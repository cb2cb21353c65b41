"""The best-trial rule, in one place: the trial the registry registers is the one the reports show."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

from optuna.study import StudyDirection

__all__ = ["Scored", "best_of"]


class Scored(Protocol):
    """A finished trial as the rule sees it (``optuna.trial.FrozenTrial``, ``reports.data.TrialInfo``)."""

    @property
    def number(self) -> int: ...

    @property
    def values(self) -> Sequence[float] | None: ...


_T = TypeVar("_T", bound=Scored)


def best_of(trials: Iterable[_T], directions: Sequence[StudyDirection]) -> _T | None:
    """The best of a study's complete ``trials``: best on the first objective, the lower trial
    number on ties; with several objectives, the Pareto-optimal trial (Optuna's
    ``study.best_trials``) best on the first. None when no trial has values."""
    signs = [1 if d == StudyDirection.MINIMIZE else -1 for d in directions]
    scored = [t for t in trials if t.values]
    if not scored:
        return None
    first = min(signs[0] * t.values[0] for t in scored)
    tied = [t for t in scored if signs[0] * t.values[0] == first]
    # Only a trial as good on the first objective can dominate one of these.
    front = [t for t in tied if not any(_dominates(u.values, t.values, signs) for u in tied)]
    return min(front, key=lambda t: t.number)


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one."""
    pairs = [(s * x, s * y) for s, x, y in zip(signs, a, b)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)
