"""Numbers of the report: factors and their levels, the leaderboard, the sweep findings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gan import metrics as gm

from .data import StudyData, TrialInfo, finite, leaderboard_metrics
from .inference import ALPHA, Comparison
from .inference import compare as compare_runs
from .stats import Estimate, fmt, fmt_estimate

STATE_ORDER = {"COMPLETE": 0, "RUNNING": 1, "WAITING": 2, "PRUNED": 3, "FAIL": 4}
MAX_PARAM_COLUMNS = 4  # more params than this go into one "parameters" column


@dataclass
class Level:
    label: str
    trials: list[TrialInfo]
    baseline: bool = False


@dataclass
class Factor:
    name: str
    kind: str
    """'sweep' (one-factor sweep), 'categorical' (a choice param) or 'binned' (a range, in quantile bins)."""
    levels: list[Level]

    @property
    def trials(self) -> list[TrialInfo]:
        return [t for lv in self.levels for t in lv.trials]


# -- factors ------------------------------------------------------------------------------------
def factors(data: StudyData) -> list[Factor]:
    """The varied hyperparameters, each with its values and their complete trials."""
    return sweep_factors(data) if data.is_sweep else search_factors(data)


def sweep_factors(data: StudyData) -> list[Factor]:
    """Each swept factor: its points plus the baseline (labelled with its value of that factor)."""
    complete = data.complete
    baseline = [t for t in complete if t.sweep and t.sweep.get("factor") == "baseline"]
    names: list[str] = []
    if data.spec is not None:
        names = list(dict.fromkeys(p.factor for p in data.spec.sweep if p.factor != "baseline"))
    for t in data.trials:
        f = (t.sweep or {}).get("factor")
        if f and f != "baseline" and f not in names:
            names.append(f)
    out = []
    for name in names:
        order: list[str] = []
        if data.spec is not None:
            order = [p.value for p in data.spec.sweep if p.factor == name]
        by_value: dict[str, list[TrialInfo]] = {}
        for t in complete:
            if t.sweep and t.sweep.get("factor") == name:
                by_value.setdefault(str(t.sweep.get("value")), []).append(t)
        for v in by_value:
            if v not in order:
                order.append(v)
        base_label = data.baseline_values.get(name, "baseline")
        levels = [Level(v, by_value[v]) for v in order if v in by_value]
        # A factor with its own baseline (budget, or a setting all its values share) is compared
        # within itself: the common baseline differs from it in more than this factor.
        own = data.spec is not None and any(p.own_baseline for p in data.spec.sweep if p.factor == name)
        if baseline and not own:
            levels.append(Level(base_label, baseline, baseline=True))
        levels = _sorted_levels(levels)
        if levels:
            out.append(Factor(name, "sweep", levels))
    return out


def _sorted_levels(levels: list[Level]) -> list[Level]:
    """Numeric labels in numeric order; otherwise the baseline first, then the spec's order."""
    try:
        return sorted(levels, key=lambda lv: float(lv.label))
    except ValueError:
        return sorted(levels, key=lambda lv: not lv.baseline)


def search_factors(data: StudyData, max_bins: int = 4) -> list[Factor]:
    """Each search-space param; ranges with more than ``max_bins`` distinct values in quantile bins."""
    import numpy as np
    import pandas as pd

    complete = [t for t in data.complete if t.params]
    names: list[str] = []
    if data.spec is not None:
        names = [p.name for p in data.spec.space]
    for t in data.trials:
        for k in t.params:
            if k not in names:
                names.append(k)
    dists = {}
    for t in data.study.get_trials(deepcopy=False):
        dists.update(t.distributions)
    out = []
    for name in names:
        having = [t for t in complete if name in t.params]
        if not having:
            continue
        values = [t.params[name] for t in having]
        dist = dists.get(name)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        categorical = dist is not None and type(dist).__name__ == "CategoricalDistribution"
        distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
        if categorical or not numeric or len(distinct) <= max_bins:
            order = list(dist.choices) if categorical else distinct
            levels = [Level(value_label(v), [t for t in having if t.params[name] == v]) for v in order]
            out.append(Factor(name, "categorical", [lv for lv in levels if lv.trials]))
            continue
        log = bool(getattr(dist, "log", False))
        x = np.log(values) if log and min(values) > 0 else np.asarray(values, dtype=float)
        q = min(max_bins, max(2, len(having) // 3))
        bins = pd.qcut(x, q=q, labels=False, duplicates="drop")
        levels = []
        for b in sorted(set(int(v) for v in bins)):
            members = [t for t, bb in zip(having, bins) if int(bb) == b]
            lo = min(t.params[name] for t in members)
            hi = max(t.params[name] for t in members)
            label = value_label(lo) if lo == hi else f"{value_label(lo)}–{value_label(hi)}"
            levels.append(Level(label, members))
        out.append(Factor(name, "binned", levels))
    return out


def value_label(value: Any) -> str:
    if isinstance(value, float):
        return fmt(value, 3)
    return str(value)


# -- leaderboard --------------------------------------------------------------------------------
def leaderboard_order(data: StudyData) -> list[TrialInfo]:
    """Complete trials best first (by the first objective), then running, pruned and failed."""
    sign = 1 if data.primary[1] == "minimize" else -1

    def key(t: TrialInfo):
        value = t.values[0] if t.values else math.inf
        return (STATE_ORDER.get(t.state, 5), sign * value if t.values else math.inf, t.number)

    return sorted(data.trials, key=key)


def param_names(data: StudyData) -> list[str]:
    names: list[str] = []
    for t in data.trials:
        for k in t.params:
            if k not in names:
                names.append(k)
    return names


def estimate(t: TrialInfo, metric: str) -> Estimate:
    """The trial's metric over its repeats (mean, sd and n as the runner recorded them)."""
    values = t.repeat_values(metric)
    if len(values) > 1:
        return Estimate.of(values)
    if finite(t.metrics.get(metric)):
        n = max(t.n_repeats, 1)
        sd = t.metrics_sd.get(metric, math.nan) if n > 1 else math.nan
        return Estimate(float(t.metrics[metric]), float(sd), n)
    return Estimate(math.nan, math.nan, 0)


def leaderboard(data: StudyData) -> tuple[list[str], list[list[str]], list[bool], list[int]]:
    """Columns, rows (a floor row first when floors exist), numeric flags, emphasised rows."""
    params = param_names(data)
    wide = len(params) > MAX_PARAM_COLUMNS
    metrics = leaderboard_metrics()
    metric_cols = [f"{m} ({gm.METRICS[m].unit})" if gm.METRICS[m].unit else m for m in metrics]
    columns = ["rank", "trial", "state", *(["parameters"] if wide else params), *metric_cols, "n", "reason"]
    numeric = [True, True, False, *([False] if wide else [False] * len(params)), *[True] * len(metrics), True, False]
    rows: list[list[str]] = []
    emphasis: list[int] = []
    if data.floors:
        floor_cells = [fmt(data.floors[m]) if finite(data.floors.get(m)) else "—" for m in metrics]
        rows.append(["", "floor", "real data", *([""] if wide else [""] * len(params)), *floor_cells, "", "real-vs-real"])
        emphasis.append(0)
    rank = 0
    for t in leaderboard_order(data):
        if t.state == "COMPLETE":
            rank += 1
        cells = [estimate_cell(t, m) for m in metrics]
        if t.state == "RUNNING" and not any(cells) and t.intermediate:
            step = max(t.intermediate)
            reason = f"running; {data.primary[0]}={fmt(t.intermediate[step])} at step {step}"
        elif t.state == "RUNNING":
            reason = "running"
        else:
            reason = t.reason or ""
        p = [value_label(t.params[k]) if k in t.params else "" for k in params]
        param_cells = ["; ".join(f"{k}={v}" for k, v in zip(params, p) if v)] if wide else p
        rows.append(
            [
                str(rank) if t.state == "COMPLETE" else "",
                str(t.number),
                t.state.lower(),
                *param_cells,
                *cells,
                str(t.n_repeats) if t.n_repeats else "",
                _short_reason(reason),
            ]
        )
    return columns, rows, numeric, emphasis


def estimate_cell(t: TrialInfo, metric: str) -> str:
    return fmt_estimate(estimate(t, metric), 4 if metric != "train_seconds" else 3)


def _short_reason(reason: str, limit: int = 90) -> str:
    reason = " ".join(str(reason).split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


# -- findings -----------------------------------------------------------------------------------
def finding_metrics() -> list[str]:
    """The evaluator's shown metrics that have a better direction."""
    return [m.name for m in gm.metrics_of("score", shown=True) if m.direction]


def better(metric: str, direction: str | None = None) -> str | None:
    """'min' or 'max' for the metric (an objective's direction first), None if no direction."""
    info = gm.METRICS.get(metric)
    direction = direction or (info.direction if info else "maximize")
    if direction is None:
        return None
    return "min" if direction == "minimize" else "max"


@dataclass
class FactorFinding:
    factor: Factor
    metric: str
    columns: list[str]
    rows: list[list[str]]
    sentences: list[str]


def level_estimate(level: Level, metric: str) -> Estimate:
    """The metric over every repeat of every trial at this level."""
    return Estimate.of([v for t in level.trials for v in t.repeat_values(metric)])


def level_runs(level: Level, metric: str) -> tuple[list[float], list[int]]:
    """The metric of every run at this level with its seed (the trial's seed + the repeat)."""
    values: list[float] = []
    seeds: list[int] = []
    for t in level.trials:
        seed0 = t.config.get("seed", 0) if isinstance(t.config.get("seed", 0), int) else 0
        finals = t.repeat_metrics or ([t.metrics] if t.metrics else [])
        for r, m in enumerate(finals):
            if finite(m.get(metric)):
                values.append(float(m[metric]))
                seeds.append(seed0 + r)
    return values, seeds


def vs_baseline(level: Level, base: Level, metric: str) -> tuple[str, Comparison | None]:
    """'clear' when the 95 % interval of the difference to the baseline excludes 0 (paired t
    where both ran the same seeds, else Welch: the claims' rule, reports.inference), 'within
    noise' when it holds 0, 'n/a' with fewer than 2 runs on a side or no spread."""
    a, sa = level_runs(level, metric)
    b, sb = level_runs(base, metric)
    c = compare_runs(a, b, ">", a_seeds=sa, b_seeds=sb)
    if c is None or not math.isfinite(c.low):
        return "n/a", c
    return ("clear" if c.p < ALPHA else "within noise"), c


def sweep_findings(data: StudyData, factor_list: list[Factor]) -> list[FactorFinding]:
    metric, direction = data.primary
    metrics = [metric, *(m for m in finding_metrics() if m != metric)]
    out = []
    for f in factor_list:
        base = next((lv for lv in f.levels if lv.baseline), None)
        ests = {lv.label: level_estimate(lv, metric) for lv in f.levels}
        pick = better(metric, direction)
        valid = [lv for lv in f.levels if ests[lv.label].n > 0]
        best = None
        if valid and pick:
            best = (min if pick == "min" else max)(valid, key=lambda lv: ests[lv.label].mean)
        columns = ["value", "n", *metrics, f"Δ{metric} vs baseline", "vs baseline"]
        rows = []
        for lv in f.levels:
            e = ests[lv.label]
            name = lv.label + (" (baseline)" if lv.baseline else "") + (" ★" if best is lv else "")
            cells = [fmt_estimate(level_estimate(lv, m)) for m in metrics]
            if base is None or lv is base:
                delta, verdict = "", "" if base is not None else "no baseline"
            else:
                b = ests[base.label]
                delta = _signed(e.mean - b.mean)
                verdict = vs_baseline(lv, base, metric)[0]
            rows.append([name, str(e.n), *cells, delta, verdict])
        out.append(FactorFinding(f, metric, columns, rows, _sentences(f, metric, pick, ests, best, base)))
    return out


def _signed(x: float) -> str:
    if not math.isfinite(x):
        return ""
    s = fmt(abs(x))
    return f"+{s}" if x > 0 else f"−{s}" if x < 0 else "0"


def _sentences(f: Factor, metric: str, pick: str | None, ests: dict[str, Estimate], best: Level | None, base: Level | None) -> list[str]:
    out = []
    if best is not None:
        word = "lowest" if pick == "min" else "highest"
        e = ests[best.label]
        tail = f" over {e.n} runs" if e.n > 1 else " (one run)"
        out.append(f"{f.name}: {best.label} has the {word} mean {metric}, {fmt_estimate(e)}{tail}.")
    if base is None:
        out.append(f"{f.name}: no baseline level (the factor has a baseline of its own, or the baseline trial is not "
                   "complete), so its values are compared with each other only.")
        return out
    b = ests[base.label]
    tests = {lv.label: vs_baseline(lv, base, metric) for lv in f.levels if lv is not base}
    verdicts = {label: v for label, (v, _) in tests.items()}
    if verdicts and all(v == "n/a" for v in verdicts.values()):
        out.append(f"{f.name}: with fewer than 2 repeats per value there is no spread to compare the differences with.")
        return out
    clear = [lbl for lbl, v in verdicts.items() if v == "clear"]
    for lbl in clear:
        e = ests[lbl]
        direction = "lower" if e.mean < b.mean else "higher"
        c = tests[lbl][1]
        out.append(
            f"{f.name}={lbl} gives a clearly {direction} {metric} than the baseline {base.label} "
            f"({fmt_estimate(e)} vs {fmt_estimate(b)}; {c.test}: the 95 % interval of the difference, "
            f"[{fmt(c.low)}, {fmt(c.high)}], excludes 0)."
        )
    noise = [lbl for lbl, v in verdicts.items() if v == "within noise"]
    if noise:
        listed = ", ".join(noise)
        out.append(
            f"{f.name}={listed}: the difference in {metric} to the baseline {base.label} is within the spread over repeats "
            "(the 95 % interval of the difference holds 0)."
        )
    return out


def pareto_numbers(data: StudyData) -> set[int]:
    if not data.multi_objective or not data.complete:
        return set()
    return {t.number for t in data.study.best_trials}
