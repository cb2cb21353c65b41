"""The one inference rule of the report's findings (§6) and claims (§7): a 95 % test of a
difference, chosen by what the runs are, with its p-values, effect size and the smallest
difference the runs could have detected.

- **paired t** where the two levels ran the same seeds run for run: each seed fixes the initial
  weights, the noise and the batch order, so pairing cancels the seed's part of the spread;
- **Welch's t** for two levels that share no seeds (unequal spreads allowed);
- **one-sample t** for one level against a number;
- **Clopper–Pearson** (exact binomial) for a 0/1 quantity against a number, and **Fisher's exact
  test** for a 0/1 quantity in two levels: a t-interval of 0/1 values with no spread has zero
  width and claims a certainty three runs cannot give.

Each test gives two p-values, twice the one-sided p of the claimed direction (``p_support``) and
of the other (``p_contra``), so ``p_support < 0.05`` exactly when the 95 % interval excludes
every effect against the claim (for ≈: it lies inside ± tolerance). Holm's step-down adjustment
runs over those p-values. Welch degrees of freedom are rounded down (the wider interval).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import optimize, stats

__all__ = ["ALPHA", "POWER", "Comparison", "VerdictKind", "clopper_pearson", "compare", "compare_binary", "decide", "fisher_one_sided",
           "holm", "mdd_binomial", "mdd_fisher", "mdd_t", "paired_seeds", "t_test"]

ALPHA = 0.05
POWER = 0.8
WHY = {
    "paired t": "the levels ran the same seeds run for run, so each pair shares its initial weights, noise and batch "
                "order and the seed's part of the spread cancels in the difference",
    "Welch t": "the levels share no seeds run for run; Welch's t allows unequal spreads",
    "one-sample t": "one level against the claim's number",
    "Clopper–Pearson": "0 or 1 per run: the exact binomial test and interval (a t-interval of 0/1 values without spread "
                       "would have zero width)",
    "Fisher exact": "0 or 1 per run in two levels: Fisher's exact test",
}


@dataclass(frozen=True)
class Comparison:
    """One claimed comparison A − B (or A − value), tested at 95 %."""

    test: str
    diff: float
    low: float
    high: float
    """The 95 % interval of the difference (nan where the test gives none: Fisher)."""
    p_support: float
    p_contra: float
    n: tuple[int, int]
    """Runs of A and of B (pairs twice for paired; B 0 against a number)."""
    effect: float = math.nan
    """The difference in units of the reference's sd (B's; A's against a number)."""
    se: float = math.nan
    """A t-test's standard error of the difference."""
    df: float = math.nan
    note: str = ""
    ref_p: float = math.nan
    """0/1 quantities: the proportion the power is computed against (the number, or B's share)."""

    @property
    def mdd(self) -> float:
        """The smallest |difference| this test detects with 80 % power at this run count and
        spread (inf: none can be); computed when asked (the noncentral t is slow)."""
        if self.test == "Clopper–Pearson":
            return mdd_binomial(self.n[0], self.ref_p)
        if self.test == "Fisher exact":
            return mdd_fisher(self.n[0], self.n[1], self.ref_p) if math.isnan(self.low) and not self.note else math.nan
        return mdd_t(self.se, self.df)

    @property
    def why(self) -> str:
        return WHY.get(self.test, "")

    @property
    def p(self) -> float:
        """The comparison's p-value: that of whichever side its data favour."""
        return min(self.p_support, self.p_contra)


class VerdictKind(StrEnum):
    """A claim's verdict (see :mod:`reports.verdicts`); a ``str``, so it compares with and is
    written as its text."""

    SUPPORTED = "supported"
    CONTRADICTED = "contradicted"
    INCONCLUSIVE = "inconclusive"
    NOT_REACHED = "not reached"
    UNMEASURABLE = "unmeasurable"
    NOT_RUN = "not run"


def decide(p_support: float, p_contra: float, alpha: float = ALPHA) -> VerdictKind:
    """Supported, contradicted or inconclusive from a comparison's two p-values."""
    if p_support < alpha:
        return VerdictKind.SUPPORTED
    return VerdictKind.CONTRADICTED if p_contra < alpha else VerdictKind.INCONCLUSIVE


# -- t-tests ------------------------------------------------------------------------------------
def paired_seeds(a_seeds: Sequence[int], b_seeds: Sequence[int]) -> bool:
    """Whether two levels ran the same seeds, each once (then their runs pair run for run)."""
    return len(a_seeds) >= 2 and len(set(a_seeds)) == len(a_seeds) and sorted(a_seeds) == sorted(b_seeds)


def t_test(a: Sequence[float], b: Sequence[float] | float, paired: bool = False) -> tuple[str, float, float, float] | None:
    """(test, A − B, its standard error, df); None with fewer than 2 values on a sampled side.
    ``paired``: a and b hold one value per seed, in the same seed order."""
    xa = np.asarray(a, float)
    if isinstance(b, (int, float)):
        if len(xa) < 2:
            return None
        return "one-sample t", float(xa.mean() - b), float(xa.std(ddof=1) / math.sqrt(len(xa))), float(len(xa) - 1)
    xb = np.asarray(b, float)
    if paired:
        d = xa - xb
        if len(d) < 2:
            return None
        return "paired t", float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), float(len(d) - 1)
    if len(xa) < 2 or len(xb) < 2:
        return None
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    denom = (va**2 / (len(xa) - 1) if va else 0.0) + (vb**2 / (len(xb) - 1) if vb else 0.0)
    df = (va + vb) ** 2 / denom if denom else float(len(xa) + len(xb) - 2)
    return "Welch t", float(xa.mean() - xb.mean()), float(math.sqrt(va + vb)), float(max(1, math.floor(df)))


def compare(a: Sequence[float], b: Sequence[float] | float, relation: str, tolerance: float | None = None,
            a_seeds: Sequence[int] = (), b_seeds: Sequence[int] = ()) -> Comparison | None:
    """A − B (or A − b) under ``relation`` (>, <, ≈) by a t-test, paired where the seeds match.
    None with fewer than 2 runs on a side. A comparison without spread (every difference
    equal) has no interval: both p-values are 1 and the note says so."""
    paired = not isinstance(b, (int, float)) and paired_seeds(a_seeds, b_seeds)
    if paired:
        order_b = {s: v for s, v in zip(b_seeds, b)}
        b = [order_b[s] for s in a_seeds]
    found = t_test(a, b, paired)
    if found is None:
        return None
    test, diff, se, df = found
    n = (len(a), 0 if isinstance(b, (int, float)) else len(b))
    ref = np.asarray(a if isinstance(b, (int, float)) else b, float)
    sd_ref = float(ref.std(ddof=1)) if len(ref) > 1 else math.nan
    effect = diff / sd_ref if sd_ref > 0 else math.nan
    if not se > 0:
        return Comparison(test, diff, math.nan, math.nan, 1.0, 1.0, n, effect, se, df,
                          "no spread over runs (every difference equal): no interval, no verdict")
    half = stats.t.ppf(1 - ALPHA / 2, df) * se
    lo, hi = _t_p_values(diff, se, df, relation, tolerance or 0.0)
    return Comparison(test, diff, diff - half, diff + half, lo, hi, n, effect, se, df)


def _t_p_values(diff: float, se: float, df: float, relation: str, tol: float) -> tuple[float, float]:
    """(p_support, p_contra): twice the one-sided p-values; see the module docstring."""
    above = lambda c: float(stats.t.sf((diff - c) / se, df))  # noqa: E731 - p of H0: diff <= c
    below = lambda c: float(stats.t.cdf((diff - c) / se, df))  # noqa: E731 - p of H0: diff >= c
    if relation == ">":
        return min(1.0, 2 * above(0.0)), min(1.0, 2 * below(0.0))
    if relation == "<":
        return min(1.0, 2 * below(0.0)), min(1.0, 2 * above(0.0))
    if relation == "≈":
        return min(1.0, 2 * max(above(-tol), below(tol))), min(1.0, 2 * min(above(tol), below(-tol)))
    raise ValueError(f"unknown relation {relation!r}")


def mdd_t(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The difference a two-sided ``alpha`` t-test with this standard error and df detects with
    ``power`` (from the noncentral t)."""
    if not (se > 0 and df >= 1):
        return math.nan
    crit = stats.t.ppf(1 - alpha / 2, df)

    def short(ncp: float) -> float:
        low = stats.nct.cdf(-crit, df, ncp)  # the wrong-sign tail: negligible, and nan far out
        return float(stats.nct.sf(crit, df, ncp)) + (float(low) if math.isfinite(low) else 0.0) - power

    return float(optimize.brentq(short, 0.0, 200.0) * se)


# -- 0/1 quantities -----------------------------------------------------------------------------
def clopper_pearson(x: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The exact (Clopper–Pearson) 1 − alpha interval of a proportion x / n."""
    lo = 0.0 if x == 0 else float(stats.beta.ppf(alpha / 2, x, n - x + 1))
    hi = 1.0 if x == n else float(stats.beta.ppf(1 - alpha / 2, x + 1, n - x))
    return lo, hi


def fisher_one_sided(xa: int, na: int, xb: int, nb: int) -> tuple[float, float]:
    """Fisher's exact one-sided p-values that A's proportion is (greater, less) than B's."""
    table = [[xa, na - xa], [xb, nb - xb]]
    return (float(stats.fisher_exact(table, alternative="greater").pvalue),
            float(stats.fisher_exact(table, alternative="less").pvalue))


def _binom_p(x: int, n: int, p0: float, relation: str, tol: float) -> tuple[float, float]:
    ge = lambda p: float(stats.binom.sf(x - 1, n, min(max(p, 0.0), 1.0)))  # noqa: E731 - P(X >= x): evidence p > p0
    le = lambda p: float(stats.binom.cdf(x, n, min(max(p, 0.0), 1.0)))  # noqa: E731 - P(X <= x): evidence p < p0
    if relation == ">":
        return min(1.0, 2 * ge(p0)), min(1.0, 2 * le(p0))
    if relation == "<":
        return min(1.0, 2 * le(p0)), min(1.0, 2 * ge(p0))
    return min(1.0, 2 * max(ge(p0 - tol), le(p0 + tol))), min(1.0, 2 * min(ge(p0 + tol), le(p0 - tol)))


def compare_binary(a: Sequence[float], b: Sequence[float] | float, relation: str,
                   tolerance: float | None = None) -> Comparison | None:
    """A 0/1 quantity: Clopper–Pearson (exact binomial) against a number, Fisher's exact test
    between two levels. None without runs; ≈ between two levels has no exact test here."""
    xa, na = int(round(sum(a))), len(a)
    if na == 0:
        return None
    if isinstance(b, (int, float)):
        lo, hi = clopper_pearson(xa, na)
        ps, pc = _binom_p(xa, na, float(b), relation, tolerance or 0.0)
        return Comparison("Clopper–Pearson", xa / na - b, lo - b, hi - b, ps, pc, (na, 0), ref_p=float(b))
    xb, nb = int(round(sum(b))), len(b)
    if nb == 0:
        return None
    diff = xa / na - xb / nb
    if relation == "≈":
        return Comparison("Fisher exact", diff, math.nan, math.nan, 1.0, 1.0, (na, nb),
                          note="no exact equivalence test for two 0/1 levels: no verdict")
    greater, less = fisher_one_sided(xa, na, xb, nb)
    ps, pc = (greater, less) if relation == ">" else (less, greater)
    return Comparison("Fisher exact", diff, math.nan, math.nan, min(1.0, 2 * ps), min(1.0, 2 * pc), (na, nb), ref_p=xb / nb)


@functools.lru_cache(maxsize=512)
def mdd_binomial(n: int, p0: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |p − p0| that the exact binomial test (two-sided, doubled one-sided p) of
    ``n`` runs detects with ``power``; inf when no p in [0, 1] can be."""
    xs = np.arange(n + 1)
    reject = (2 * stats.binom.sf(xs - 1, n, p0) < alpha) | (2 * stats.binom.cdf(xs, n, p0) < alpha)
    if not reject.any():
        return math.inf
    grid = np.linspace(0, 1, 1001)
    pw = stats.binom.pmf(xs[reject][:, None], n, grid[None, :]).sum(axis=0)
    hits = np.abs(grid - p0)[pw >= power]
    return float(hits.min()) if len(hits) else math.inf


@functools.lru_cache(maxsize=512)
def mdd_fisher(na: int, nb: int, pb: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |pa − pb| that Fisher's exact test (doubled one-sided p) of ``na`` against
    ``nb`` runs detects with ``power``, B's proportion held at ``pb``; inf when none can be."""
    reject = np.zeros((na + 1, nb + 1), bool)
    for xa in range(na + 1):
        for xb in range(nb + 1):
            reject[xa, xb] = 2 * min(fisher_one_sided(xa, na, xb, nb)) < alpha
    if not reject.any():
        return math.inf
    pmf_b = stats.binom.pmf(np.arange(nb + 1), nb, pb)
    grid = np.linspace(0, 1, 501)
    pw = stats.binom.pmf(np.arange(na + 1)[None, :], na, grid[:, None]) @ reject.astype(float) @ pmf_b
    hits = np.abs(grid - pb)[pw >= power]
    return float(hits.min()) if len(hits) else math.inf


# -- several claims -----------------------------------------------------------------------------
def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (nan stays nan and is not counted)."""
    idx = [i for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out
