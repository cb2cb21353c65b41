"""Claims judged on a sweep: each claim's quantity measured per run at every budget its runs were
evaluated at, compared between levels by :mod:`reports.inference`, with a verdict:

- **supported** / **contradicted**: the 95 % interval (or exact test) excludes every effect
  against / in the claimed direction (for ≈: it lies within / wholly outside ± tolerance);
- **inconclusive**: neither, fewer than 2 runs on a side, or no spread to scale a t-test by;
- **not reached**: a precondition (``requires``) is unmet at that budget: the runs have not
  learned, or it comes before ``after``; the measured values are given;
- **unmeasurable**: the statistic's window holds fewer points than it needs at that budget
  (late_rise on a start and an end), or the quantity is not logged there;
- **not run**: a compared level has no complete run in this study.

Each claim's headline verdict is at the source's budget (``epochs``) where the runs reached it,
else at the largest budget run. Holm's adjustment across the headline tests stands beside the
raw verdict. The claim syntax is :mod:`study.spec.claims`; measuring is :mod:`reports.measure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from study.spec.claims import Claim

from .analysis import Factor, Level
from .data import StudyData, TrialInfo
from .inference import ALPHA, Comparison, VerdictKind, compare, compare_binary, holm
from .inference import decide as decide_p
from .measure import Budget, Run, budgets_of, measure, metric_at, run_at, runs_of
from .stats import Estimate, t_quantile

__all__ = ["Interval", "Judgement", "RunValue", "Verdict", "VerdictKind", "VERDICTS", "decide", "judge", "judge_all",
           "apply_holm", "judge_at", "judge_claim", "measure_runs", "welch"]


VERDICTS = tuple(v.value for v in VerdictKind)
TESTED = (VerdictKind.SUPPORTED, VerdictKind.CONTRADICTED, VerdictKind.INCONCLUSIVE)


@dataclass(frozen=True)
class Interval:
    """A difference of means with its 95 % interval and the (Welch) degrees of freedom."""

    diff: float
    low: float
    high: float
    df: float


@dataclass(frozen=True)
class RunValue:
    """One run's quantity at a budget, and what the precondition reads there."""

    level: str
    run: Run
    step: int | None
    value: float
    points: int
    censored: bool = False
    modes: float = math.nan
    kl_uniform: float = math.nan
    compared: bool = True
    """False for a run read only for the precondition (``requires.levels``)."""


@dataclass
class Verdict:
    claim: Claim
    verdict: VerdictKind
    estimates: dict[str, Estimate] = field(default_factory=dict)
    """Per compared level: the quantity's mean over runs with its interval."""
    intervals: dict[str, Comparison] = field(default_factory=dict)
    """Per comparison ('A − B', or 'A − value'): the test, the difference and its interval."""
    note: str = ""
    budget: Budget | None = None
    values: list[RunValue] = field(default_factory=list)
    p_support: float = math.nan
    p_contra: float = math.nan
    holm: VerdictKind | None = None
    """The verdict after Holm's adjustment across the report's claims (headline verdicts only)."""
    holm_p: float = math.nan

    @property
    def p(self) -> float:
        return min(self.p_support, self.p_contra)


@dataclass
class Judgement:
    """A claim judged at every budget its runs share, and its headline verdict."""

    claim: Claim
    by_budget: list[Verdict]
    headline: Verdict
    where: str = ""
    """Why the headline is at its budget: the source's, or the largest run."""


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


def decide(relation: str, interval: Interval | None, tolerance: float | None = None) -> VerdictKind:
    """The verdict of one comparison (A − B, or A − value) under ``relation`` (>, <, ≈)."""
    supported, contradicted, inconclusive = VerdictKind.SUPPORTED, VerdictKind.CONTRADICTED, VerdictKind.INCONCLUSIVE
    if interval is None:
        return inconclusive
    low, high = interval.low, interval.high
    if relation == ">":
        return supported if low > 0 else contradicted if high < 0 else inconclusive
    if relation == "<":
        return supported if high < 0 else contradicted if low > 0 else inconclusive
    if relation == "≈":
        tol = tolerance or 0.0
        if -tol <= low and high <= tol:
            return supported
        return contradicted if low > tol or high < -tol else inconclusive
    raise ValueError(f"unknown relation {relation!r}")


# -- measuring ----------------------------------------------------------------------------------
def measure_runs(data: StudyData, trials: Sequence[TrialInfo], claim: Claim) -> list[float]:
    """The claim's quantity for every run (repeat) of ``trials`` at its end; nan where a run lacks it."""
    return [measure(data, run, run.last_step, claim).value for run in runs_of(data, list(trials))]


def _levels(factors: Sequence[Factor], claim: Claim) -> tuple[dict[str, Level], list[str], list[str]]:
    """The factor's levels by label, the compared labels (lowest/highest of one: every level) and
    the labels any judgement reads (compared, then the precondition's)."""
    factor = next((f for f in factors if f.name == claim.factor), None)
    levels = {lv.label: lv for lv in factor.levels} if factor else {}
    compared = list(claim.compare)
    if claim.relation in ("lowest", "highest") and len(compared) == 1:
        compared += [label for label in levels if label != compared[0]]
    return levels, compared, list(dict.fromkeys(compared + list(claim.required_levels)))


# -- judging ------------------------------------------------------------------------------------
def judge_claim(data: StudyData, factors: Sequence[Factor], claim: Claim) -> Judgement:
    """Measure and judge one claim at every budget its runs share; the headline verdict."""
    levels, compared, needed = _levels(factors, claim)
    missing = [c for c in needed if c not in levels]
    if missing:
        v = Verdict(claim, VerdictKind.NOT_RUN, note=f"no complete run of {claim.factor} = {', '.join(missing)}")
        return Judgement(claim, [], v, "")
    runs = {label: runs_of(data, levels[label].trials) for label in needed}
    budgets = budgets_of(runs)
    if not budgets:
        v = Verdict(claim, VerdictKind.UNMEASURABLE, note="the compared levels share no evaluated budget")
        return Judgement(claim, [], v, "")
    by_budget = [judge_at(data, claim, compared, runs, b) for b in budgets]
    headline, where = _headline(claim, by_budget)
    return Judgement(claim, by_budget, headline, where)


def _headline(claim: Claim, by_budget: list[Verdict]) -> tuple[Verdict, str]:
    """The verdict at the source's budget where the runs reached it, else at the largest run."""
    last = by_budget[-1]
    if claim.epochs is not None and last.budget is not None and last.budget.unit == "epochs":
        for v in by_budget:
            if v.budget is not None and v.budget.key is not None and v.budget.key >= claim.epochs * 0.99:
                return v, f"the source's budget ({claim.epochs:g} epochs)"
        return last, f"the largest budget run; the source's is {claim.epochs:g} epochs"
    return last, "the largest budget run" + ("" if claim.epochs is None else f"; the source's is {claim.epochs:g} epochs")


def judge_at(data: StudyData, claim: Claim, compared: list[str], runs: dict[str, list[Run]], budget: Budget) -> Verdict:
    """The claim's verdict at one budget (see the module docstring for the order of the checks)."""
    values: list[RunValue] = []
    req = claim.requires
    learned_levels = (req.levels or tuple(compared)) if req is not None and req.learned else ()
    for label, rs in runs.items():
        for run in rs:
            step = run_at(run, budget)
            if step is False:
                continue
            m = measure(data, run, step, claim) if label in compared else None
            values.append(RunValue(label, run, step, m.value if m else math.nan, m.points if m else 0, bool(m and m.censored),
                                   metric_at(data, run, step, "modes") if label in learned_levels else math.nan,
                                   metric_at(data, run, step, "kl_uniform") if label in learned_levels else math.nan,
                                   label in compared))
    v = Verdict(claim, VerdictKind.INCONCLUSIVE, budget=budget, values=values)
    by_level = {label: [x for x in values if x.level == label and x.compared] for label in compared}
    v.estimates = {label: Estimate.of([x.value for x in xs]) for label, xs in by_level.items()}
    reason = _unmeasurable(claim, by_level)
    if reason:
        return replace(v, verdict=VerdictKind.UNMEASURABLE, note=reason)
    reason = _unreached(claim, budget, values, learned_levels)
    if reason:
        return replace(v, verdict=VerdictKind.NOT_REACHED, note=reason)
    return _test(v, compared, by_level)


def _unmeasurable(claim: Claim, by_level: dict[str, list[RunValue]]) -> str:
    stat = claim.quantity.statistic
    for label, xs in by_level.items():
        if not xs:
            return f"{claim.factor}={label} has no evaluation at this budget"
        fewest = min(x.points for x in xs)
        if stat is not None and fewest < stat.min_points:
            where = "in its end window" if stat.windowed else "up to this step"
            return (f"{claim.quantity} needs {stat.min_points} points of {claim.quantity.name} {where}; {claim.factor}={label} has {fewest} "
                    f"(curve points up to step {max(x.step or 0 for x in xs):,})")
        if fewest == 0:
            return f"{claim.quantity} is not logged at this step for {claim.factor}={label}"
    return ""


def _unreached(claim: Claim, budget: Budget, values: list[RunValue], learned_levels: Sequence[str]) -> str:
    req = claim.requires
    if req is None:
        return ""
    if req.after is not None:
        at = budget.key if budget.unit == req.after_unit else (max(budget.steps) if req.after_unit == "steps" and budget.steps else None)
        if at is not None and at < req.after:
            return f"judged from {req.after:g} {req.after_unit} on (precondition); this budget is {budget.label}"
    failing = []
    for label in learned_levels:
        xs = [x for x in values if x.level == label]
        modes = [x.modes for x in xs]
        kls = [x.kl_uniform for x in xs]
        if not xs or (req.modes is not None and not all(math.isfinite(m) for m in modes)) or \
                (req.kl_uniform is not None and not all(math.isfinite(k) for k in kls)):
            failing.append(f"{label}: modes/KL not logged at this step")
            continue
        bad = []
        if req.modes is not None and min(modes) < req.modes:
            bad.append(f"digits covered {', '.join(f'{m:g}' for m in modes)} (needs ≥ {req.modes:g})")
        if req.kl_uniform is not None and max(kls) > req.kl_uniform:
            bad.append(f"KL {', '.join(f'{k:.3g}' for k in kls)} (needs ≤ {req.kl_uniform:g})")
        if bad:
            failing.append(f"{claim.factor}={label}: " + "; ".join(bad))
    return "not learned at this budget — " + " | ".join(failing) if failing else ""


def _test(v: Verdict, compared: list[str], by_level: dict[str, list[RunValue]]) -> Verdict:
    claim = v.claim
    vals = {label: [x.value for x in xs if math.isfinite(x.value)] for label, xs in by_level.items()}
    seeds = {label: [x.run.seed for x in xs if math.isfinite(x.value)] for label, xs in by_level.items()}
    a = compared[0]

    def one(b: str | float, relation: str) -> Comparison | None:
        if claim.binary:
            return compare_binary(vals[a], b if isinstance(b, float) else vals[b], relation, claim.tolerance)
        if isinstance(b, float):
            return compare(vals[a], b, relation, claim.tolerance)
        return compare(vals[a], vals[b], relation, claim.tolerance, seeds[a], seeds[b])

    if claim.relation in ("lowest", "highest"):
        direction = "<" if claim.relation == "lowest" else ">"
        comps = {f"{a} − {b}": one(b, direction) for b in compared[1:]}
        done = [c for c in comps.values() if c is not None]
        p_support = max((c.p_support for c in done), default=1.0) if len(done) == len(comps) else 1.0
        p_contra = min(1.0, len(comps) * min((c.p_contra for c in done), default=1.0))  # Bonferroni within the claim
        raw = [decide_p(c.p_support, c.p_contra) for c in done]
        verdict = (VerdictKind.CONTRADICTED if VerdictKind.CONTRADICTED in raw
                   else VerdictKind.SUPPORTED if p_support < ALPHA else VerdictKind.INCONCLUSIVE)
    else:
        key = f"{a} − {claim.value:g}" if len(compared) == 1 else f"{a} − {compared[1]}"
        comps = {key: one(float(claim.value) if len(compared) == 1 else compared[1], claim.relation)}
        c = comps[key]
        p_support, p_contra = (c.p_support, c.p_contra) if c is not None else (1.0, 1.0)
        verdict = decide_p(p_support, p_contra)
    notes = [c.note for c in comps.values() if c is not None and c.note]
    if any(c is None for c in comps.values()):
        notes.append("fewer than 2 runs on a side: no interval")
    censored = sum(x.censored for xs in by_level.values() for x in xs)
    if censored:
        notes.append(f"{censored} run(s) never got there by this step (counted at it)")
    return replace(v, verdict=verdict, intervals={k: c for k, c in comps.items() if c is not None},
                   note="; ".join(dict.fromkeys(notes)), p_support=p_support, p_contra=p_contra)


def judge(data: StudyData, factors: Sequence[Factor], claim: Claim) -> Verdict:
    """The claim's headline verdict (see :func:`judge_claim`)."""
    return judge_claim(data, factors, claim).headline


def judge_all(data: StudyData, factors: Sequence[Factor], claims: Sequence[Claim]) -> list[Judgement]:
    """Every claim judged, with Holm's adjustment across the headline verdicts that are tests."""
    out = [judge_claim(data, factors, c) for c in claims]
    apply_holm([j.headline for j in out])
    return out


def apply_holm(verdicts: Sequence[Verdict]) -> None:
    """Set ``holm`` (and ``holm_p``) on every tested verdict: the raw verdict where its
    Holm-adjusted p-value stays below 5 %, else inconclusive."""
    tested = [v for v in verdicts if v.verdict in TESTED and math.isfinite(v.p)]
    for v, adj in zip(tested, holm([v.p for v in tested])):
        v.holm_p = adj
        side = VerdictKind.SUPPORTED if v.p_support <= v.p_contra else VerdictKind.CONTRADICTED
        v.holm = side if adj < ALPHA and v.verdict == side else VerdictKind.INCONCLUSIVE
