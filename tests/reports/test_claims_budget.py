"""Claims judged over the budget (#28) on constructed runs: every verdict kind, preconditions,
unmeasurable statistics, the headline budget, the tests against scipy and textbook numbers,
Holm, and claims.csv, from which every verdict is recomputed."""

from __future__ import annotations

import csv
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.analysis import Factor, Level, vs_baseline
from reports.claims_csv import recompute, write_claims_csv
from reports.data import StudyData, TrialInfo
from reports.inference import clopper_pearson, compare, compare_binary, fisher_one_sided, holm, mdd_binomial, mdd_t
from reports.verdicts import VerdictKind, judge_all, judge_claim
from study.spec.claims import Claim, Requirement

SPE = 600  # steps per epoch at batch 100
EVALS = [e * SPE for e in range(11)]  # step 0 and every epoch to 10


def _trial(number: int, runs: list[dict], evals: list[int]) -> TrialInfo:
    """A trial whose repeats have step metrics at EVALS (each run: name -> 11 values) and the final
    metrics at the last step."""
    finals = []
    for r in runs:
        final = {k: float(v[-1]) for k, v in r.items() if not k.startswith("class_count")}
        final["steps"] = evals[-1]
        final["class_counts"] = [int(r[f"class_count.{d}"][-1]) for d in range(10)] if "class_count.0" in r else None
        finals.append(final)
    return TrialInfo(number=number, state="COMPLETE", params={}, values=[0.0], metrics={}, metrics_sd={}, repeat_metrics=finals,
                     reason=None, sweep=None, run_id=None, curve_runs=[], duration_s=None, started=None, intermediate={},
                     config={"seed": 0, "batch_size": 100})


def _study(levels: dict[str, list[dict]], evals: list[int] = EVALS) -> tuple[StudyData, list[Factor]]:
    trials = {i: _trial(i, runs, evals) for i, runs in enumerate(levels.values())}
    rows = [(i, r, key, step, float(v)) for i, runs in enumerate(levels.values()) for r, run in enumerate(runs)
            for key, values in run.items() for step, v in zip(evals, values)]
    data = StudyData(study=None, name="constructed", spec_raw={}, spec=None, objectives=[("fd", "minimize")], repeats=3,
                     baseline_values={}, trials=list(trials.values()), invocations=[],
                     curves=pd.DataFrame(rows, columns=["trial", "repeat", "key", "step", "value"]), environment=None,
                     floors=None, floors_note="")
    return data, [Factor("f", "sweep", [Level(label, [trials[i]]) for i, label in enumerate(levels)])]


def _run(fd_end: float, learned_from: int = 0, noise: float = 0.0) -> dict:
    """An FD curve falling from 70 to ``fd_end``; all 10 digits and KL 0.02 from epoch
    ``learned_from`` on (before it: 2 digits, KL 1.6)."""
    fd = list(np.linspace(70.0, fd_end, 11) + noise)
    modes = [10.0 if e >= learned_from else 2.0 for e in range(11)]
    kl = [0.02 if e >= learned_from else 1.6 for e in range(11)]
    return {"fd": fd, "modes": modes, "kl_uniform": kl}


def _claim(relation=">", compare=("a", "b"), quantity="fd", **kw) -> Claim:
    return Claim("c", "000 §X", "a claim", "f", tuple(compare), quantity, relation, **kw)


LEVELS = {
    "a": [_run(20.0, noise=n) for n in (0.0, 0.3, -0.2)],  # worse than b, run for run
    "b": [_run(5.0, noise=n) for n in (0.0, 0.2, -0.1)],
    "c": [_run(5.0, learned_from=8, noise=n) for n in (3.0, -9.0, 6.0)],  # learns late, spreads wide
}


def test_every_verdict_kind_on_constructed_runs():
    data, factors = _study(LEVELS)
    kind = lambda claim: judge_claim(data, factors, claim).headline.verdict  # noqa: E731
    assert kind(_claim(">")) == VerdictKind.SUPPORTED  # a's FD above b's in every pair
    assert kind(_claim("<")) == VerdictKind.CONTRADICTED
    assert kind(_claim("<", ("b", "c"))) == VerdictKind.INCONCLUSIVE  # c's runs spread over b
    assert kind(_claim(">", ("a", "z"))) == VerdictKind.NOT_RUN
    learned = Requirement(modes=9, kl_uniform=0.3)
    late = judge_claim(data, factors, _claim("<", ("c", "a"), requires=learned))
    by = {v.budget.key: v for v in late.by_budget}
    assert by[5.0].verdict == VerdictKind.NOT_REACHED and "digits covered 2, 2, 2 (needs ≥ 9)" in by[5.0].note
    assert "KL 1.6" in by[5.0].note and by[10.0].verdict != VerdictKind.NOT_REACHED
    after = judge_claim(data, factors, _claim(">", requires=Requirement(after=4.0)))
    assert [v.verdict == VerdictKind.NOT_REACHED for v in after.by_budget] == [b < 4 for b in range(1, 11)]


def test_a_statistic_with_too_few_points_is_unmeasurable_not_inconclusive():
    # Two evaluations only (the start and the end): late_rise is always 0 there, steps_below the last step.
    two = {label: [{"fd": [70.0, v], "modes": [2, 10], "kl_uniform": [1.6, 0.02]} for v in values]
           for label, values in {"a": (20.0, 21.0, 19.0), "b": (5.0, 6.5, 4.2)}.items()}
    data, factors = _study(two, [0, 10 * SPE])
    for q in ("fd.late_rise", "fd.steps_below:30", "fd.end_slope", "fd.explodes"):
        v = judge_claim(data, factors, _claim(">", quantity=q, window=0.5)).headline
        assert v.verdict == VerdictKind.UNMEASURABLE and "points of fd" in v.note, (q, v.note)
    assert judge_claim(data, factors, _claim("<", quantity="fd.fall")).headline.verdict == VerdictKind.SUPPORTED
    assert judge_claim(data, factors, _claim(">")).headline.verdict == VerdictKind.SUPPORTED  # a final metric is fine


def test_budgets_are_epochs_and_the_headline_is_at_the_sources_budget():
    data, factors = _study(LEVELS)
    j = judge_claim(data, factors, _claim(">", epochs=4))
    assert [v.budget.key for v in j.by_budget] == [float(e) for e in range(1, 11)]
    assert j.by_budget[0].budget.label == "1 epoch (600 steps)" and j.by_budget[1].budget.label == "2 epochs (1,200 steps)"
    assert j.headline.budget.key == 4.0 and "source's budget" in j.where
    longer = judge_claim(data, factors, _claim(">", epochs=100))
    assert longer.headline.budget.key == 10.0 and "largest budget run; the source's is 100" in longer.where
    # Curve statistics are cut at the budget: FD at epoch 2 is the step metric there, not the final one.
    at2 = j.by_budget[1]
    assert at2.estimates["a"].mean == pytest.approx(60.0 + 0.1 / 3)


def test_share_of_a_digit_is_read_from_class_count_at_the_step():
    runs = [dict(_run(5.0), **{f"class_count.{d}": [100 + 20 * e * (d == 9) for e in range(11)] for d in range(10)}) for _ in range(3)]
    data, factors = _study({"a": runs, "b": runs})
    j = judge_claim(data, factors, _claim(">", ("a",), quantity="share:9", value=0.1))
    nine = {v.budget.key: v.estimates["a"].mean for v in j.by_budget}
    assert nine[1.0] == pytest.approx(120 / 1020) and nine[10.0] == pytest.approx(300 / 1200)


def test_paired_t_welch_and_one_sample_match_scipy():
    a, b = [5.1, 6.3, 4.8, 5.9], [4.0, 5.1, 4.1, 4.6]
    paired = compare(a, b, ">", a_seeds=[0, 1, 2, 3], b_seeds=[0, 1, 2, 3])
    ref = stats.ttest_rel(a, b)
    assert paired.test == "paired t" and paired.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert paired.p_support == pytest.approx(ref.pvalue, rel=1e-9)  # the claimed side: twice the one-sided p
    welch = compare(a, b, ">", a_seeds=[0, 1, 2, 3], b_seeds=[4, 5, 6, 7])  # other seeds: not paired
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 4
    df = math.floor((va + vb) ** 2 / (va**2 / 3 + vb**2 / 3))  # Welch-Satterthwaite, rounded down
    assert welch.test == "Welch t" and welch.df == df
    assert welch.p == pytest.approx(2 * stats.t.sf((np.mean(a) - np.mean(b)) / math.sqrt(va + vb), df), rel=1e-9)
    one = compare(a, 5.0, ">")
    assert one.p == pytest.approx(stats.ttest_1samp(a, 5.0).pvalue, rel=1e-9)
    assert (one.low + one.high) / 2 == pytest.approx(np.mean(a) - 5.0)
    assert paired.effect == pytest.approx((np.mean(a) - np.mean(b)) / np.std(b, ddof=1))


def test_equivalence_is_two_one_sided_tests():
    near = compare([1.0, 1.1, 0.9, 1.05], 1.0, "≈", tolerance=0.5)
    assert near.p_support < 0.05 and near.low > -0.5 and near.high < 0.5
    far = compare([3.0, 3.1, 2.9], 1.0, "≈", tolerance=0.5)
    assert far.p_contra < 0.05 and far.p_support == 1.0


def test_clopper_pearson_and_fisher_against_textbook_numbers():
    assert clopper_pearson(3, 3) == pytest.approx((0.2924, 1.0), abs=1e-4)  # 0.025 ** (1/3) = 0.292
    assert clopper_pearson(0, 3) == pytest.approx((0.0, 0.7076), abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson(7, 20) == pytest.approx(tuple(stats.binomtest(7, 20).proportion_ci(method="exact")), abs=1e-12)
    # Fisher: the lady tasting tea, 3 of 4 right: one-sided p = 17/70.
    assert fisher_one_sided(3, 4, 1, 4)[0] == pytest.approx(17 / 70)
    # 3 of 3 runs explode: the exact interval [0.29, 1] does not exclude 0.5, so no verdict (#28).
    three = compare_binary([1.0, 1.0, 1.0], 0.5, ">")
    assert three.test == "Clopper–Pearson" and three.p_support == pytest.approx(0.25) and three.p_support > 0.05
    assert math.isinf(three.mdd) and math.isinf(mdd_binomial(3, 0.5))
    nine = compare_binary([1.0] * 9, 0.5, ">")
    assert nine.p_support < 0.05 and nine.low + 0.5 == pytest.approx(0.025 ** (1 / 9))
    assert compare_binary([1.0] * 3, [0.0] * 3, ">").p_support == pytest.approx(2 / 20)  # Fisher: 1 / C(6, 3), doubled


def test_holm_against_the_textbook_and_mdd_has_80_percent_power():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)
    se, df = 0.4, 2
    mdd = mdd_t(se, df)
    crit = stats.t.ppf(0.975, df)
    assert stats.nct.sf(crit, df, mdd / se) + stats.nct.cdf(-crit, df, mdd / se) == pytest.approx(0.8, abs=1e-6)
    assert mdd / se > stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # wider than the normal approximation at df 2


def test_holm_verdicts_stand_beside_the_raw_ones():
    data, factors = _study(LEVELS)
    claims = [Claim(f"c{i}", "000", "x", "f", pair, "fd", rel) for i, (pair, rel) in
              enumerate([(("a", "b"), ">"), (("b", "c"), "<"), (("a", "c"), ">")])]
    js = judge_all(data, factors, claims)
    ps = [j.headline.p for j in js]
    for j, adj in zip(js, holm(ps)):
        assert j.headline.holm_p == pytest.approx(adj)
        assert j.headline.holm in (j.headline.verdict, VerdictKind.INCONCLUSIVE)


def test_claims_csv_holds_every_run_and_recomputes_every_verdict(tmp_path):
    data, factors = _study(LEVELS)
    claims = [
        _claim(">", epochs=4),
        Claim("low", "000", "x", "f", ("b",), "fd", "lowest"),
        Claim("late", "000", "x", "f", ("c", "a"), "fd", "<", requires=Requirement(modes=9, kl_uniform=0.3, levels=("c",))),
        Claim("near", "000", "x", "f", ("b",), "fd.end_mean", "≈", value=5.0, tolerance=1.0, window=0.2),
        Claim("boom", "000", "x", "f", ("a", "b"), "fd.explodes", ">"),
        Claim("rise", "000", "x", "f", ("a", "b"), "fd.late_rise", "<", requires=Requirement(after=3.0)),
        Claim("missing", "000", "x", "f", ("a", "z"), "fd", ">"),
        Claim("wrong", "000", "x", "f", ("a", "b"), "fd", "<"),
    ]
    js = judge_all(data, factors, claims)
    path = write_claims_csv(js, tmp_path / "claims.csv")
    rows = list(csv.DictReader(path.open()))
    assert len([r for r in rows if r["claim"] == "c"]) == 10 * 6  # 10 budgets × 2 levels × 3 runs
    report = {(j.claim.id, r["budget"]): None for j in js for r in rows if r["claim"] == j.claim.id}
    again = recompute(path)
    assert set(again) == set(report)
    for j in js:
        for v in j.by_budget or [j.headline]:
            key = (j.claim.id, "end" if v.budget is None or v.budget.key is None else repr(float(v.budget.key)))
            holm_again = again[key][1]
            assert again[key][0] == str(v.verdict), (key, again[key], v.verdict, v.note)
            if v is j.headline and v.holm is not None:
                assert holm_again == str(v.holm)
    kinds = {str(v.verdict) for j in js for v in j.by_budget or [j.headline]}
    assert kinds == {"supported", "contradicted", "inconclusive", "not reached", "unmeasurable", "not run"}


def test_findings_use_the_claims_rule():
    data, factors = _study(LEVELS)
    levels = {lv.label: lv for lv in factors[0].levels}
    word, c = vs_baseline(levels["a"], levels["b"], "fd")
    assert word == "clear" and c.test == "paired t"
    word, c = vs_baseline(levels["c"], levels["b"], "fd")
    assert word == "within noise"
