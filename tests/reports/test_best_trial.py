"""One best-trial rule (study.storage.best): the trial ``run`` registers is the trial the report shows,
whatever ties, pruned and failed trials the study holds, and it is Optuna's best trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from reports.data import StudyData, TrialInfo
from study.storage.registry import best_trial

COMPLETE, PRUNED, FAIL = TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL


def _study(directions: list[str], trials: list[tuple[TrialState, list[float] | None]]) -> optuna.Study:
    study = optuna.create_study(directions=directions)
    for state, values in trials:
        intermediate = {0: 0.5} if state == PRUNED else None  # pruned better than any complete trial
        study.add_trial(create_trial(state=state, values=values, intermediate_values=intermediate))
    return study


def _report_best(study: optuna.Study) -> int | None:
    trials = [TrialInfo(number=t.number, state=t.state.name, params={}, values=t.values, metrics={}, metrics_sd={}, repeat_metrics=[],
                        reason=None, sweep=None, run_id=None, curve_runs=[], duration_s=None, started=None, intermediate={}, config={})
              for t in study.get_trials(deepcopy=False)]
    objectives = [(f"objective {i}", d.name.lower()) for i, d in enumerate(study.directions)]
    data = StudyData(study=study, name="best", spec_raw={}, spec=None, objectives=objectives, repeats=1, baseline_values={}, trials=trials,
                     invocations=[], curves=None, environment=None, floors=None, floors_note="")
    best = data.best_trial()
    return None if best is None else best.number


@pytest.mark.parametrize(("directions", "trials", "expected"), [
    # ties on the value: the lower number
    (["minimize"], [(FAIL, None), (COMPLETE, [2.0]), (PRUNED, None), (COMPLETE, [1.0]), (COMPLETE, [1.0])], 3),
    (["maximize"], [(COMPLETE, [1.0]), (COMPLETE, [2.0]), (FAIL, None), (COMPLETE, [2.0]), (PRUNED, None)], 1),
    # trial 1 ties trial 2 on the first objective but is dominated by it; 2 and 3 are equal
    (["minimize", "maximize"], [(PRUNED, None), (COMPLETE, [1.0, 5.0]), (COMPLETE, [1.0, 7.0]), (COMPLETE, [1.0, 7.0]),
                                (COMPLETE, [3.0, 9.0]), (FAIL, None)], 2),
    (["minimize"], [(PRUNED, None), (FAIL, None)], None),
])
def test_the_registry_and_the_report_pick_the_same_best_trial(directions, trials, expected):
    study = _study(directions, trials)
    registered = best_trial(study)
    assert (None if registered is None else registered.number) == expected
    assert _report_best(study) == expected
    if expected is not None and len(directions) == 1:
        assert study.best_trial.number == expected
    elif expected is not None:  # the Pareto trial best on the first objective, the lower number on ties
        sign = 1 if directions[0] == "minimize" else -1
        assert min(study.best_trials, key=lambda t: (sign * t.values[0], t.number)).number == expected
