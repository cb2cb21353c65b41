"""A claim's quantity: the forms it takes (listed in :mod:`study.spec.claims`), its check, and how
many points of its curve each statistic needs to be measured."""

from __future__ import annotations

from gan import metrics as gm

from .space import SpecError

__all__ = ["MIN_POINTS", "STATS", "check_quantity", "points_needed", "window_points"]

STATS = ("end_mean", "end_sd", "end_slope", "end_max", "end_resid_sd", "explodes", "late_rise", "fall",
         "steps_below", "steps_above")

# The fewest points a statistic is measured on: of the window at the end (``end_*``), else of the
# whole curve up to the judged step. Fewer, and the value is a property of the schedule, not of
# training (late_rise on a start and an end is always 0): the verdict is unmeasurable.
MIN_POINTS = {"end_mean": 1, "end_max": 1, "end_sd": 3, "end_slope": 3, "end_resid_sd": 4,
              "explodes": 10, "late_rise": 4, "fall": 2, "steps_below": 4, "steps_above": 4}


def check_quantity(quantity: str, where: str) -> None:
    """Raise SpecError unless ``quantity`` is one of the forms listed in :mod:`study.spec.claims`."""
    finals = [m.name for m in gm.metrics_of("score", "run")]
    if quantity in finals:
        return
    if quantity.startswith("share:"):
        if quantity[6:] in [str(d) for d in range(10)]:
            return
        raise SpecError(f"{where}: share:D needs a digit 0-9, got {quantity!r}")
    curve, _, stat = quantity.partition(".")
    curves = [m.name for m in gm.over_training()]
    if curve in curves and stat:
        name, _, arg = stat.partition(":")
        if name in ("steps_below", "steps_above"):
            try:
                float(arg)
                return
            except ValueError:
                raise SpecError(f"{where}: {name} needs a threshold, e.g. {curve}.{name}:0.5; got {quantity!r}") from None
        if name in STATS and name not in ("steps_below", "steps_above") and not arg:
            return
    raise SpecError(f"{where}: unknown quantity {quantity!r}: use a final metric ({', '.join(finals)}), share:D, or "
                    f"CURVE.STAT with CURVE one of {', '.join(curves)} and STAT one of {', '.join(STATS)}")


def points_needed(quantity: str) -> tuple[str, str, int] | None:
    """(curve, statistic, fewest points) of a curve quantity; None for final metrics and shares."""
    curve, _, stat = quantity.partition(".")
    if not stat:
        return None
    name = stat.partition(":")[0]
    return curve, name, MIN_POINTS[name]


def window_points(stat: str, n: int, window: float) -> int:
    """The points a statistic is measured on, of a curve of ``n`` points: the end window's for
    ``end_*`` (the last ``window`` of them, one at least), else all of them."""
    if n <= 0:
        return 0
    return max(1, round(window * n)) if stat.startswith("end_") else n
