"""The summary's trials row: retries of failed trials are counted apart from the study's target."""

from __future__ import annotations

from reports.data import TrialInfo
from reports.sections_summary import trials_row


def _trial(number: int, state: str, retry_of: int | None = None) -> TrialInfo:
    return TrialInfo(number=number, state=state, params={}, values=None, metrics={}, metrics_sd={}, repeat_metrics=[], reason=None,
                     sweep=None, run_id=None, curve_runs=[], duration_s=None, started=None, intermediate={}, config={},
                     retry_of=retry_of)


def test_retries_count_apart_from_the_target():
    trials = [_trial(0, "FAIL"), _trial(1, "COMPLETE"), _trial(2, "FAIL"), _trial(3, "COMPLETE", retry_of=0),
              _trial(4, "COMPLETE", retry_of=2)]
    assert trials_row(trials, "3", "3 complete, 0 pruned, 2 failed") == "3 of 3 and 2 retries of failed ones: 3 complete, 0 pruned, 2 failed"
    assert trials_row(trials[:4], "3", "s").startswith("3 of 3 and 1 retry of failed ones")
    assert trials_row(trials[:2], "", "s") == "2: s"
