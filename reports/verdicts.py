"""Claims judged on a sweep: each claim's quantity measured per run, compared between levels
with a 95 % Welch interval, and a verdict.

- **supported**: the interval of the difference excludes no effect in the claimed direction
  (for ≈: it lies within ± tolerance);
- **contradicted**: it excludes no effect in the other direction (for ≈: it lies wholly
  outside ± tolerance);
- **inconclusive**: anything else, including levels with fewer than 2 runs (no interval);
- **not run**: a compared level has no complete run in this study.

The claim syntax is :mod:`study.claims`; the quantities are measured here from each run's final
metrics (``TrialInfo.repeat_metrics``) and logged curves (``StudyData.curves``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from study.claims import Claim

from .analysis import Factor, Level
from .data import StudyData, TrialInfo
from .stats import Estimate, t_quantile

__all__ = ["Interval", "Verdict", "VERDICTS", "decide", "judge", "judge_all", "measure_runs", "welch"]

VERDICTS = ("supported", "contradicted", "inconclusive", "not run")


@dataclass(frozen=True)
class Interval:
    """A difference of means with its 95 % interval and the (Welch) degrees of freedom."""

    diff: float
    low: float
    high: float
    df: float


@dataclass
class Verdict:
    claim: Claim
    verdict: str
    estimates: dict[str, Estimate] = field(default_factory=dict)
    """Per compared level: the quantity's mean over runs with its interval."""
    intervals: dict[str, Interval] = field(default_factory=dict)
    """Per comparison ('A − B', or 'A − value'): the difference and its interval."""
    note: str = ""


# -- statistics ---------------------------------------------------------------------------------
def welch(a: Sequence[float], b: Sequence[float] | float) -> Interval | None:
    """mean(a) − mean(b) with its 95 % interval: Welch's for two samples, Student's one-sample
    interval when ``b`` is a number. None with fewer than 2 values on a sampled side."""
    ea = Estimate.of(a)
    if ea.n < 2:
        return None
    va = ea.sd**2 / ea.n
    if isinstance(b, (int, float)):
        diff, se, df = ea.mean - float(b), math.sqrt(va), float(ea.n - 1)
    else:
        eb = Estimate.of(b)
        if eb.n < 2:
            return None
        vb = eb.sd**2 / eb.n
        diff, se = ea.mean - eb.mean, math.sqrt(va + vb)
        denom = (va**2 / (ea.n - 1) if va else 0.0) + (vb**2 / (eb.n - 1) if vb else 0.0)
        df = (va + vb) ** 2 / denom if denom else float(ea.n + eb.n - 2)  # both constant: no spread
    half = t_quantile(max(1, int(df))) * se  # df rounded down: the wider, conservative interval
    return Interval(diff, diff - half, diff + half, df)


def decide(relation: str, interval: Interval | None, tolerance: float | None = None) -> str:
    """The verdict of one comparison (A − B, or A − value) under ``relation`` (>, <, ≈)."""
    if interval is None:
        return "inconclusive"
    low, high = interval.low, interval.high
    if relation == ">":
        return "supported" if low > 0 else "contradicted" if high < 0 else "inconclusive"
    if relation == "<":
        return "supported" if high < 0 else "contradicted" if low > 0 else "inconclusive"
    if relation == "≈":
        tol = tolerance or 0.0
        if -tol <= low and high <= tol:
            return "supported"
        return "contradicted" if low > tol or high < -tol else "inconclusive"
    raise ValueError(f"unknown relation {relation!r}")


# -- measuring ----------------------------------------------------------------------------------
def measure_runs(data: StudyData, trials: Sequence[TrialInfo], claim: Claim) -> list[float]:
    """The claim's quantity for every run (repeat) of ``trials``; nan where a run lacks it."""
    curves = data.run_curves
    out: list[float] = []
    for t in trials:
        runs = t.repeat_metrics or ([t.metrics] if t.metrics else [])
        for r, final in enumerate(runs):
            out.append(_measure(claim, final, lambda key, t=t, r=r: curves.get((t.number, r, key))))
    return out


def _measure(claim: Claim, final: dict, curve) -> float:
    q = claim.quantity
    if q.startswith("share:"):
        counts = final.get("class_counts")
        if not isinstance(counts, list) or not sum(counts):
            return math.nan
        return counts[int(q[6:])] / sum(counts)
    name, _, stat = q.partition(".")
    if not stat:
        value = final.get(q)
        return float(value) if isinstance(value, (int, float)) else math.nan
    found = curve(name)
    if found is None or not len(found[0]):
        return math.nan
    steps, values = found
    stat, _, arg = stat.partition(":")
    if stat == "explodes":
        if not np.isfinite(values).all():
            return 1.0
        n = len(values)
        early = values[int(0.1 * n): max(int(0.2 * n), int(0.1 * n) + 1)]
        return float(abs(_end(values, claim.window).mean()) > claim.times * abs(early.mean()))
    if stat == "late_rise":
        return float(values[-1] - np.nanmin(values))
    if stat in ("steps_below", "steps_above"):
        x = float(arg)
        hit = values <= x if stat == "steps_below" else values >= x
        return float(steps[np.argmax(hit)] if hit.any() else steps[-1])
    end = _end(values, claim.window)
    if stat == "end_mean":
        return float(end.mean())
    if stat == "end_sd":
        return float(end.std(ddof=1)) if len(end) > 1 else math.nan
    if stat == "end_max":
        return float(end.max())
    if stat == "end_slope":
        s = _end(steps, claim.window)
        return float(np.polyfit(s, end, 1)[0] * 1000) if len(end) > 1 and np.ptp(s) > 0 else math.nan
    raise ValueError(f"unknown statistic {stat!r} in {q!r}")  # study.claims checked it: a bug


def _end(values: np.ndarray, window: float) -> np.ndarray:
    """The last ``window`` of a curve's points (logged at even steps), one point at least."""
    return values[-max(1, round(window * len(values))):]


# -- judging ------------------------------------------------------------------------------------
def judge(data: StudyData, factors: Sequence[Factor], claim: Claim) -> Verdict:
    """Measure and judge one claim on the study's complete runs."""
    factor = next((f for f in factors if f.name == claim.factor), None)
    levels: dict[str, Level] = {lv.label: lv for lv in factor.levels} if factor else {}
    missing = [c for c in claim.compare if c not in levels]
    if missing:
        return Verdict(claim, "not run", note=f"no complete run of {claim.factor} = {', '.join(missing)}")
    compared = list(claim.compare)
    if claim.relation in ("lowest", "highest") and len(compared) == 1:
        compared += [label for label in levels if label != compared[0]]
    runs = {label: measure_runs(data, levels[label].trials, claim) for label in compared}
    estimates = {label: Estimate.of(v) for label, v in runs.items()}
    empty = [label for label, e in estimates.items() if e.n == 0]
    if empty:
        return Verdict(claim, "not run", estimates, note=f"{claim.quantity} was not measured for {', '.join(empty)}")
    a = compared[0]
    if claim.relation in ("lowest", "highest"):
        direction = "<" if claim.relation == "lowest" else ">"
        intervals = {f"{a} − {b}": welch(runs[a], runs[b]) for b in compared[1:]}
        verdicts = [decide(direction, iv) for iv in intervals.values()]
        verdict = ("contradicted" if "contradicted" in verdicts else
                   "supported" if verdicts and all(v == "supported" for v in verdicts) else "inconclusive")
    else:
        other = claim.value if len(compared) == 1 else runs[compared[1]]
        key = f"{a} − {claim.value:g}" if len(compared) == 1 else f"{a} − {compared[1]}"
        intervals = {key: welch(runs[a], other)}
        verdict = decide(claim.relation, intervals[key], claim.tolerance)
    note = ""
    if any(iv is None for iv in intervals.values()):
        note = "fewer than 2 runs on a side: no interval"
    return Verdict(claim, verdict, estimates, {k: v for k, v in intervals.items() if v is not None}, note)


def judge_all(data: StudyData, factors: Sequence[Factor], claims: Sequence[Claim]) -> list[Verdict]:
    return [judge(data, factors, c) for c in claims]
