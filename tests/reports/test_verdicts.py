"""Claims judged on synthetic runs with known answers (#15): the Welch interval, each verdict,
and each curve statistic. The real pipeline (a sweep whose report carries the Claims section) is
tested in test_report_values.py."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.analysis import Factor, Level
from reports.data import StudyData, TrialInfo
from reports.verdicts import decide, judge, measure_runs, welch
from study.spec.claims import Claim

STEPS = np.arange(0, 1000, 10)


def _trial(number: int, finals: list[dict], curves: dict[str, list[np.ndarray]] | None = None) -> TrialInfo:
    return TrialInfo(number=number, state="COMPLETE", params={}, values=[0.0], metrics={}, metrics_sd={}, repeat_metrics=finals,
                     reason=None, sweep=None, run_id=None, curve_runs=[], duration_s=None, started=None, intermediate={}, config={})


def _data(trials: dict[int, tuple[list[dict], dict[str, list[np.ndarray]]]]) -> StudyData:
    rows = [(n, r, key, int(s), float(v)) for n, (_, curves) in trials.items() for key, per_run in curves.items()
            for r, values in enumerate(per_run) for s, v in zip(STEPS, values)]
    return StudyData(study=None, name="synthetic", spec_raw={}, spec=None, objectives=[("fd", "minimize")], repeats=3, baseline_values={},
                     trials=[_trial(n, finals) for n, (finals, _) in trials.items()], invocations=[],
                     curves=pd.DataFrame(rows, columns=["trial", "repeat", "key", "step", "value"]), environment=None, floors=None, floors_note="")


def _study(levels: dict[str, list[float]], curves: dict[str, list[np.ndarray]] | None = None):
    """One factor 'f' whose levels hold runs with the given final fd (and curves, per level)."""
    trials = {i: ([{"fd": v, "class_counts": [10] * 10} for v in values], (curves or {}).get(label, {}))
              for i, (label, values) in enumerate(levels.items())}
    data = _data(trials)
    factor = Factor("f", "sweep", [Level(label, [data.trials[i]]) for i, label in enumerate(levels)])
    return data, [factor]


def _claim(relation: str, compare=("a", "b"), quantity="fd", **kw) -> Claim:
    return Claim("c", "000 §X", "a claim", "f", tuple(compare), quantity, relation, **kw)


def test_welch_interval_matches_the_textbook():
    one = welch([1.0, 2.0, 3.0], 0.0)  # mean 2, sd 1, n 3: 2 ± t(0.975, 2) * 1/sqrt(3) = 2 ± 2.484
    assert one.diff == 2.0 and one.df == 2 and one.high - 2.0 == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    two = welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    # Welch-Satterthwaite: v1 = 1/3, v2 = 2.5/5 -> df = (1/3 + 1/2)^2 / ((1/3)^2/2 + (1/2)^2/4) = 0.694 / 0.118 = 5.88
    assert two.diff == -1.0 and two.df == pytest.approx(5.88, abs=0.01)
    assert two.high - two.diff == pytest.approx(2.571 * math.sqrt(1 / 3 + 1 / 2), rel=1e-3)  # t(0.975, 5)
    assert welch([1.0], [2.0, 3.0]) is None and welch([1.0], 0.0) is None


def test_the_four_verdicts_on_known_answers():
    data, factors = _study({"a": [1.0, 1.1, 0.9], "b": [5.0, 5.2, 4.8], "c": [1.5, 0.5, 3.0]})
    assert judge(data, factors, _claim("<")).verdict == "supported"  # a clearly lower
    assert judge(data, factors, _claim(">")).verdict == "contradicted"  # claimed higher, clearly lower
    assert judge(data, factors, _claim("<", ("a", "c"))).verdict == "inconclusive"  # overlapping runs
    assert judge(data, factors, _claim("≈", ("a",), value=1.0, tolerance=0.5)).verdict == "supported"
    assert judge(data, factors, _claim("≈", ("a",), value=1.0, tolerance=0.01)).verdict == "inconclusive"
    assert judge(data, factors, _claim("≈", ("a", "b"), tolerance=0.5)).verdict == "contradicted"
    assert judge(data, factors, _claim("lowest", ("a",))).verdict == "inconclusive"  # not clearly below c
    assert judge(data, factors, _claim("lowest", ("a", "b"))).verdict == "supported"
    assert judge(data, factors, _claim("highest", ("a", "b"))).verdict == "contradicted"
    missing = judge(data, factors, _claim("<", ("a", "z")))
    assert missing.verdict == "not run" and "z" in missing.note
    v = judge(data, factors, _claim("<"))
    assert v.estimates["a"].n == 3 and v.intervals["a − b"].high < 0


def test_one_run_per_level_is_inconclusive_not_a_verdict():
    data, factors = _study({"a": [1.0], "b": [5.0]})
    v = judge(data, factors, _claim("<"))
    assert v.verdict == "inconclusive" and "fewer than 2 runs" in v.note


def test_decide_is_symmetric_and_respects_the_tolerance():
    from reports.verdicts import Interval

    iv = Interval(0.3, 0.1, 0.5, 4)
    assert decide(">", iv) == "supported" and decide("<", iv) == "contradicted"
    assert decide("≈", iv, 0.6) == "supported" and decide("≈", iv, 0.05) == "contradicted" and decide("≈", iv, 0.2) == "inconclusive"
    assert decide(">", None) == "inconclusive"


def test_curve_statistics_measure_what_they_name():
    flat = np.full(len(STEPS), 0.7)
    rising = np.concatenate([np.full(50, 0.7), np.linspace(0.7, 7.0, 50)])  # 10x its early level
    falling = np.linspace(10.0, 1.0, len(STEPS))  # an FD curve that reaches 2.0 at step ~880
    collapse = np.concatenate([np.linspace(10.0, 2.0, 80), np.full(20, 6.0)])
    curves = {"a": {"g_loss": [rising, rising], "fd": [falling, falling]}, "b": {"g_loss": [flat, flat], "fd": [collapse, collapse]}}
    data, factors = _study({"a": [1.0, 1.0], "b": [1.0, 1.0]}, curves)
    runs = {lv.label: lv.trials for lv in factors[0].levels}
    m = lambda level, q, **kw: measure_runs(data, runs[level], _claim(">", quantity=q, **kw))  # noqa: E731
    assert m("a", "g_loss.explodes") == [1.0, 1.0] and m("b", "g_loss.explodes") == [0.0, 0.0]
    assert m("b", "g_loss.end_mean") == pytest.approx([0.7, 0.7]) and m("b", "g_loss.end_sd")[0] == pytest.approx(0.0)
    assert m("a", "g_loss.end_max") == pytest.approx([7.0, 7.0])
    assert m("a", "g_loss.end_slope")[0] == pytest.approx(6.3 / 490 * 1000, rel=1e-6)  # per 1,000 steps
    assert m("a", "fd.late_rise") == pytest.approx([0.0, 0.0]) and m("b", "fd.late_rise") == pytest.approx([4.0, 4.0])
    first = STEPS[np.argmax(falling <= 2.0)]
    assert m("a", "fd.steps_below:2") == [first, first] and m("a", "fd.steps_below:0.5") == [STEPS[-1]] * 2  # never: the last step
    assert m("a", "share:3") == [0.1, 0.1]
    # 2 of 2 against 0 of 2 has no spread, but an exact test of so few runs decides nothing (#28)
    exploded = judge(data, factors, _claim(">", quantity="g_loss.explodes"))
    assert exploded.verdict == "inconclusive" and exploded.intervals["a − b"].test == "Fisher exact"
    diverged = {"a": {"g_loss": [np.full(len(STEPS), np.nan)] * 2}}
    data, factors = _study({"a": [1.0, 1.0]}, diverged)
    assert measure_runs(data, factors[0].levels[0].trials, _claim(">", quantity="g_loss.explodes")) == [1.0, 1.0]


def test_a_claim_statistic_is_one_register_call(monkeypatch):
    """Adding a statistic takes one edit in one place: the spec's claims parse it, the report
    measures it, and its fewest points decide when it is unmeasurable."""
    from study.spec import quantities as sq
    from study.spec.claims import parse_claims
    from study.spec.space import SpecError, SweepPoint

    monkeypatch.setattr(sq, "STATISTICS", dict(sq.STATISTICS))  # the registration ends with this test
    sq.register_statistic(sq.Statistic("end_min", 5, lambda c: (float(c.end().min()), False), windowed=True))

    entry = {"id": "c", "source": "000 §X", "claim": "a claim", "factor": "f", "compare": ["a", "b"],
             "quantity": "fd.end_min", "relation": "<", "window": 0.2}
    sweep = (SweepPoint("f=a", "f", "a", {}), SweepPoint("f=b", "f", "b", {}))
    (claim,) = parse_claims([entry], sweep, {})
    falling = np.linspace(10.0, 1.0, len(STEPS))
    data, factors = _study({"a": [1.0, 1.0], "b": [1.0, 1.0]}, {"a": {"fd": [falling, falling]}, "b": {"fd": [falling + 3, falling + 3]}})
    runs = {lv.label: lv.trials for lv in factors[0].levels}
    assert measure_runs(data, runs["a"], claim) == pytest.approx([1.0, 1.0])
    assert measure_runs(data, runs["b"], claim) == pytest.approx([4.0, 4.0])
    # 20 points in a 0.2 window of 100: measured; in a 0.04 window (4 points) it is unmeasurable
    assert judge(data, factors, claim).verdict != "unmeasurable"
    narrow = parse_claims([{**entry, "window": 0.04}], sweep, {})[0]
    assert judge(data, factors, narrow).verdict == "unmeasurable"
    with pytest.raises(ValueError, match="registered already"):
        sq.register_statistic(sq.Statistic("end_min", 1, lambda c: (0.0, False)))
    monkeypatch.setattr(sq, "STATISTICS", {k: v for k, v in sq.STATISTICS.items() if k != "end_min"})
    with pytest.raises(SpecError, match="unknown quantity 'fd.end_min'"):
        parse_claims([entry], sweep, {})


def test_a_factor_with_a_baseline_of_its_own_is_compared_without_the_common_baseline():
    from dataclasses import replace

    from reports.analysis import sweep_factors
    from study.spec.spec import load_spec

    spec = load_spec("seeds")
    points = [("baseline", "baseline"), ("self_attention", "off"), ("self_attention", "on"), ("lr", "2e-5")]
    trials = [replace(_trial(i, [{"fd": 1.0}]), sweep={"factor": f, "value": v}) for i, (f, v) in enumerate(points)]
    data = replace(_data({}), spec=spec, trials=trials, baseline_values=dict(spec.baseline_values))
    levels = {f.name: [(lv.label, lv.baseline) for lv in f.levels] for f in sweep_factors(data)}
    # The DCGAN's attention levels are not compared with the MLP baseline; lr's are.
    assert levels["self_attention"] == [("off", False), ("on", False)]
    assert (spec.baseline_values["lr"], True) in levels["lr"]


def test_a_claim_travels_to_worker_processes_by_pickle():
    """A spec's claims are pickled to the workers of ``--jobs N``; statistics go by name (their
    ``compute`` may be a lambda)."""
    import pickle

    claim = _claim(">", quantity="fd.steps_below:30")
    back = pickle.loads(pickle.dumps(claim))
    assert back == claim and back.quantity.statistic is claim.quantity.statistic and back.quantity.threshold == 30.0
