"""The report's statistics: t-intervals, the baseline comparison, number formatting."""

from __future__ import annotations

import math

import pytest

from reports.stats import _T975, Estimate, compare, fmt, fmt_estimate, t_quantile


def test_t_quantiles():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(1000) == pytest.approx(1.962, abs=1e-3)
    scipy = pytest.importorskip("scipy.stats")
    for df, table in enumerate(_T975, start=1):
        assert table == pytest.approx(scipy.t.ppf(0.975, df), abs=1e-3)


def test_estimate_is_a_t_interval():
    e = Estimate.of([1.0, 2.0, 3.0])
    assert (e.mean, e.sd, e.n) == (2.0, 1.0, 3)
    assert e.half == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    one = Estimate.of([5.0])
    assert one.n == 1 and math.isnan(one.half)
    assert fmt_estimate(one) == "5" and fmt_estimate(e) == "2 ± 2.5"
    assert Estimate.of([]).n == 0 and fmt_estimate(Estimate.of([])) == ""


def test_compare_to_the_baseline():
    base = Estimate.of([10.0, 10.2, 9.8])
    assert compare(Estimate.of([20.0, 20.2, 19.8]), base) == "clear"
    assert compare(Estimate.of([10.1, 10.3, 9.9]), base) == "within noise"
    assert compare(Estimate.of([20.0]), base) == "n/a"


def test_fmt():
    assert fmt(3.0) == "3" and fmt(0.12345) == "0.1235" and fmt(0.00012) == "1.200e-04"
    assert fmt(126.4, 2) == "126" and fmt(float("nan")) == "" and fmt(None) == ""
