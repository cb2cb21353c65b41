"""Small statistics for the reports: t-intervals over repeats and the baseline comparison."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Two-sided 95 % quantiles of Student's t, t_{0.975, df}, for df 1..30 (used without scipy).
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the factor of a two-sided 95 % t-interval."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        if df <= len(_T975):
            return _T975[df - 1]
        return 1.960 + 2.4 / df  # within 0.003 of the exact value beyond df=30


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` repeats with the half-width of its 95 % t-interval (nan for n < 2)."""

    mean: float
    sd: float
    n: int

    @property
    def half(self) -> float:
        if self.n < 2 or not math.isfinite(self.sd):
            return math.nan
        return t_quantile(self.n - 1) * self.sd / math.sqrt(self.n)

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not xs:
            return cls(math.nan, math.nan, 0)
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return cls(mean, sd, len(xs))


def compare(value: Estimate, baseline: Estimate) -> str:
    """'clear' when the 95 % intervals of value and baseline do not overlap, else 'within noise'.

    With fewer than 2 repeats on either side there is no spread to compare with: 'n/a'.
    """
    if value.n < 2 or baseline.n < 2 or math.isnan(value.half) or math.isnan(baseline.half):
        return "n/a"
    return "clear" if abs(value.mean - baseline.mean) > value.half + baseline.half else "within noise"


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for tables: 4 significant digits, no scientific notation for ordinary sizes."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e6):
        return str(int(value))
    mag = abs(value)
    if 10**digits <= mag < 1e6:
        return f"{value:.0f}"
    if mag != 0 and (mag < 1e-3 or mag >= 1e6):
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def fmt_estimate(est: Estimate, digits: int = 4) -> str:
    """'12.3 ± 1.4' with the 95 % half-width where repeats exist, else the plain mean."""
    if est.n == 0:
        return ""
    if math.isnan(est.half):
        return fmt(est.mean, digits)
    return f"{fmt(est.mean, digits)} ± {fmt(est.half, 2)}"
