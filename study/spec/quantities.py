"""A claim's quantity, parsed once into a :class:`Quantity`, and the registry of the statistics a
claim can take of a curve (``CURVE.STAT``): each statistic's computation, its argument and how
many points of the curve it needs, in one :func:`register_statistic` call.

Statistics are pure functions of a curve (its steps and values, cut at the judged step) and of
the claim's ``window`` and ``times``; ``reports.measure`` reads the curves and calls them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gan import metrics as gm

from .space import SpecError

__all__ = ["STATISTICS", "Curve", "Quantity", "Statistic", "parse_quantity", "register_statistic"]


@dataclass(frozen=True)
class Curve:
    """What a statistic reads: one run's curve up to the judged step, and the claim's settings."""

    steps: np.ndarray
    values: np.ndarray
    window: float
    """The fraction of the curve's points at its end that ``end_*`` statistics read."""
    times: float
    """``explodes``: the factor of the end level over the early level."""
    threshold: float | None = None
    """The statistic's argument (``steps_below:X``), where it takes one."""

    def end(self, values: np.ndarray | None = None) -> np.ndarray:
        """The last ``window`` of the curve's points (logged at even steps), one point at least."""
        v = self.values if values is None else values
        return v[-max(1, round(self.window * len(v))):]


@dataclass(frozen=True)
class Statistic:
    """One statistic of a curve, as a claim names it (``fd.late_rise``, ``fd.steps_below:30``)."""

    name: str
    min_points: int
    """The fewest points it is measured on: of the end window (``windowed``), else of the curve up
    to the judged step. Fewer, and the value is a property of the schedule, not of training
    (``late_rise`` on a start and an end is always 0): the verdict is unmeasurable."""
    compute: Callable[[Curve], tuple[float, bool]]
    """(value, censored): censored where the curve never got where the statistic looks."""
    windowed: bool = False
    """Measured on the last ``window`` of the curve, not the whole of it."""
    takes_threshold: bool = False
    """Named with an argument, ``NAME:X``."""
    binary: bool = False
    """0 or 1 per run: exact tests apply (Fisher, Clopper-Pearson)."""

    def __reduce__(self) -> tuple:
        # By name: ``compute`` may be a lambda, and a spec's claims travel to worker processes.
        return _registered, (self.name,)

    def points(self, n: int, window: float) -> int:
        """The points it is measured on, of a curve of ``n`` points."""
        if n <= 0:
            return 0
        return max(1, round(window * n)) if self.windowed else n


STATISTICS: dict[str, Statistic] = {}


def _registered(name: str) -> Statistic:
    return STATISTICS[name]


def register_statistic(stat: Statistic) -> Statistic:
    """Add a claim statistic: quantities ``CURVE.<name>`` parse, measure, and are checked against a
    spec's evaluation schedule from then on."""
    if stat.name in STATISTICS:
        raise ValueError(f"claim statistic {stat.name!r} is registered already")
    if stat.min_points < 1:
        raise ValueError(f"claim statistic {stat.name!r}: min_points must be >= 1, got {stat.min_points}")
    STATISTICS[stat.name] = stat
    return stat


def _explodes(c: Curve) -> tuple[float, bool]:
    if not np.isfinite(c.values).all():
        return 1.0, False
    n = len(c.values)
    early = c.values[int(0.1 * n): max(int(0.2 * n), int(0.1 * n) + 1)]
    return float(abs(c.end().mean()) > c.times * abs(early.mean())), False


def _first_step(below: bool) -> Callable[[Curve], tuple[float, bool]]:
    def first(c: Curve) -> tuple[float, bool]:
        assert c.threshold is not None  # parse_quantity requires it
        hit = c.values <= c.threshold if below else c.values >= c.threshold
        return (float(c.steps[np.argmax(hit)]), False) if hit.any() else (float(c.steps[-1]), True)

    return first


def _line(c: Curve) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The end window's steps, values and least-squares line through them; None under 2 points."""
    end, s = c.end(), c.end(c.steps)
    if len(end) < 2 or np.ptp(s) <= 0:
        return None
    slope, intercept = np.polyfit(s, end, 1)
    return s, end, np.array([slope, intercept])


def _slope(c: Curve) -> tuple[float, bool]:
    fit = _line(c)
    return (float(fit[2][0] * 1000) if fit is not None else math.nan), False  # per 1,000 steps


def _resid_sd(c: Curve) -> tuple[float, bool]:
    fit = _line(c)
    if fit is None or len(fit[1]) <= 2:
        return math.nan, False
    s, end, (slope, intercept) = fit
    return float(np.std(end - (slope * s + intercept), ddof=2)), False


for _stat in (
    Statistic("end_mean", 1, lambda c: (float(c.end().mean()), False), windowed=True),
    Statistic("end_sd", 3, lambda c: (float(c.end().std(ddof=1)) if len(c.end()) > 1 else math.nan, False), windowed=True),
    Statistic("end_slope", 3, _slope, windowed=True),
    Statistic("end_max", 1, lambda c: (float(c.end().max()), False), windowed=True),
    Statistic("end_resid_sd", 4, _resid_sd, windowed=True),
    Statistic("explodes", 10, _explodes, binary=True),
    Statistic("late_rise", 4, lambda c: (float(c.values[-1] - np.nanmin(c.values)), False)),
    Statistic("fall", 2, lambda c: (float(c.values[0] - c.values[-1]), False)),
    Statistic("steps_below", 4, _first_step(below=True), takes_threshold=True),
    Statistic("steps_above", 4, _first_step(below=False), takes_threshold=True),
):
    register_statistic(_stat)


@dataclass(frozen=True)
class Quantity:
    """A claim's quantity: a final metric of the registry, ``share:D``, or ``CURVE.STAT[:X]``."""

    text: str
    """As the claim wrote it; what reports and ``claims.csv`` show."""
    kind: Literal["metric", "share", "curve"]
    name: str
    """The metric, or the curve a statistic is taken of."""
    digit: int | None = None
    statistic: Statistic | None = None
    threshold: float | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def binary(self) -> bool:
        """0 or 1 per run (exact tests apply)."""
        return self.statistic is not None and self.statistic.binary

    def measure(self, steps: np.ndarray, values: np.ndarray, window: float, times: float) -> tuple[float, bool]:
        """The statistic of one curve; (value, censored)."""
        assert self.statistic is not None, self.text
        return self.statistic.compute(Curve(steps, values, window, times, self.threshold))


def parse_quantity(text: str, where: str) -> Quantity:
    """The :class:`Quantity` ``text`` names; SpecError with the forms it may take otherwise."""
    finals = [m.name for m in gm.metrics_of("score", "run")]
    if text in finals:
        return Quantity(text, "metric", text)
    if text.startswith("share:"):
        digit = text.partition(":")[2]
        if digit not in [str(d) for d in range(10)]:
            raise SpecError(f"{where}: share:D needs a digit 0-9, got {text!r}")
        return Quantity(text, "share", "share", digit=int(digit))
    curve, _, stat_text = text.partition(".")
    curves = [m.name for m in gm.over_training()]
    name, has_arg, arg = stat_text.partition(":")
    stat = STATISTICS.get(name)
    if curve in curves and stat is not None:
        if not stat.takes_threshold:
            if not has_arg:
                return Quantity(text, "curve", curve, statistic=stat)
        else:
            try:
                return Quantity(text, "curve", curve, statistic=stat, threshold=float(arg))
            except ValueError:
                raise SpecError(f"{where}: {name} needs a threshold, e.g. {curve}.{name}:0.5; got {text!r}") from None
    raise SpecError(f"{where}: unknown quantity {text!r}: use a final metric ({', '.join(finals)}), share:D, or "
                    f"CURVE.STAT with CURVE one of {', '.join(curves)} and STAT one of {', '.join(STATISTICS)}")
