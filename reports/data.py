"""Everything a report shows, read once from the Optuna study and its MLflow runs.

The reader never writes to the stores and copes with studies in any state: trials that are
still running, pruned or failed, runs missing from MLflow (a trial made by hand with
``study.ask()``) and an MLflow experiment that does not exist yet.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.study import StudyDirection
from optuna.trial import TrialState

from gan import metrics as gm
from gan.errors import GanStudyError
from study.storage.best import best_of
from study.storage.record import StudyAttrs, Tag, TrialRecord

from .mlflow_runs import attach_runs, copy_best_artifacts, describe_invocation, fetch_curves, find_experiment, search_runs

log = logging.getLogger("gan_study.reports")


def claim_keys() -> tuple[str, ...]:
    """What claims read besides the curves the figures draw (a spec with claims only): the curves
    no figure draws (D's mean outputs), every score at every evaluation and the per-digit counts
    of its samples (``class_count.D``)."""
    hidden = tuple(m.name for m in gm.metrics_of("curve") if not m.panel)
    scores = tuple(m.name for m in gm.metrics_of("score") if not m.panel)
    return (*hidden, *scores, *(f"class_count.{d}" for d in range(10)))


def leaderboard_metrics() -> list[str]:
    """The registry's shown metrics that have a value per trial, in registry order."""
    return [m.name for m in gm.metrics_of("score", "run", shown=True)]


class ReportError(GanStudyError):
    """A report cannot be written (unknown format, unwritable folder, unreadable store)."""


@dataclass
class TrialInfo:
    number: int
    state: str
    """COMPLETE, PRUNED, FAIL, RUNNING or WAITING."""
    params: dict[str, Any]
    values: list[float] | None
    metrics: dict[str, float]
    metrics_sd: dict[str, float]
    repeat_metrics: list[dict[str, Any]]
    reason: str | None
    sweep: dict[str, str] | None
    run_id: str | None
    curve_runs: list[tuple[str, int]]
    """(MLflow run id, repeat index) of the runs that hold this trial's per-step curves."""
    duration_s: float | None
    started: datetime | None
    intermediate: dict[int, float]
    config: dict[str, Any]
    evaluator: dict[str, Any] | None = None
    """The card of the evaluator that scored the trial."""
    population: int | None = None
    """Runs trained at once in the population this trial's runs were part of (1: alone)."""
    retry_of: int | None = None
    """The failed trial whose configuration this trial runs again."""

    @property
    def n_repeats(self) -> int:
        return len(self.repeat_metrics) if self.repeat_metrics else (1 if self.metrics else 0)

    def repeat_values(self, metric: str) -> list[float]:
        """The metric of each repeat (the trial's mean where per-repeat values are missing)."""
        values = [float(r[metric]) for r in self.repeat_metrics if isinstance(r.get(metric), (int, float))]
        if not values and isinstance(self.metrics.get(metric), (int, float)):
            values = [float(self.metrics[metric])]
        return values


@dataclass
class StudyData:
    study: optuna.Study
    name: str
    spec_raw: dict[str, Any]
    spec: Any
    """The parsed :class:`study.spec.spec.StudySpec`, or None when the stored spec no longer parses."""
    objectives: list[tuple[str, str]]
    """(metric, direction) per objective."""
    repeats: int
    baseline_values: dict[str, str]
    trials: list[TrialInfo]
    invocations: list[dict[str, Any]]
    """Parent runs of the invocations: params, status, start and end (ms)."""
    curves: pd.DataFrame
    """Long table of per-step curves: trial, repeat, key, step, value."""
    environment: dict[str, Any] | None
    floors: dict[str, Any] | None
    floors_note: str
    mlflow_note: str = ""
    artifacts: dict[str, Path] = field(default_factory=dict)
    """Best-trial artifacts copied to the figures folder: kind -> path."""
    pictures: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Trial number -> the arrays of its first repeat's ``final/pictures.npz`` (see reports.pictures)."""
    data_dir: str | None = None

    @functools.cached_property
    def run_curves(self) -> dict[tuple[int, int, str], tuple[np.ndarray, np.ndarray]]:
        """Each run's curve as (steps, values) sorted by step, keyed by (trial, repeat, key)."""
        out = {}
        if not self.curves.empty:
            for (trial, repeat, key), g in self.curves.groupby(["trial", "repeat", "key"]):
                g = g.sort_values("step", kind="stable")
                out[(int(trial), int(repeat), str(key))] = (g["step"].to_numpy(float), g["value"].to_numpy(float))
        return out

    @property
    def is_sweep(self) -> bool:
        return bool(self.spec_raw.get("sweep")) or any(t.sweep for t in self.trials)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def primary(self) -> tuple[str, str]:
        return self.objectives[0]

    def by_state(self, *states: str) -> list[TrialInfo]:
        return [t for t in self.trials if t.state in states]

    @property
    def complete(self) -> list[TrialInfo]:
        return self.by_state("COMPLETE")

    def best_trial(self) -> TrialInfo | None:
        """The best complete trial (:func:`study.storage.best.best_of`, the one ``run`` registers)."""
        return best_of(self.complete, [StudyDirection[direction.upper()] for _, direction in self.objectives])


# -- reading ------------------------------------------------------------------------------------
def load(study: optuna.Study, stores, figures: Path, data_dir: str | None = None) -> StudyData:
    """Read the study, its MLflow runs, their curves and the best trial's artifacts."""
    attrs = study.user_attrs
    spec_raw = attrs.get(StudyAttrs.SPEC) or {}
    spec = _parse_spec(spec_raw)
    objectives = _objectives(study, attrs, spec)
    trials = [_trial_info(t) for t in study.get_trials(deepcopy=False)]
    _fill_sweep(trials, spec)

    client, experiment_id, note = find_experiment(stores, study.study_name)
    invocations: list[dict[str, Any]] = []
    curves = pd.DataFrame(columns=["trial", "repeat", "key", "step", "value"])
    if experiment_id is not None:
        runs = search_runs(client, experiment_id)
        invocations = [describe_invocation(r) for r in runs if r.data.tags.get(Tag.ROLE) == "invocation"]
        invocations.sort(key=lambda r: r["start"] or 0)
        attach_runs(trials, runs)
        curve_runs = [(t.number, rid, rep) for t in trials if t.state == "COMPLETE" for rid, rep in t.curve_runs]
        # The figures' curves: per step, and scores at every evaluation (step 0 and the end included).
        drawn = tuple(m.name for m in gm.over_training() if m.panel)
        keys = drawn + (claim_keys() if spec is not None and spec.claims else ())
        curves = fetch_curves(client, curve_runs, keys)
    data = StudyData(
        study=study,
        name=study.study_name,
        spec_raw=spec_raw,
        spec=spec,
        objectives=objectives,
        repeats=int(attrs.get(StudyAttrs.REPEATS) or (spec.repeats if spec else 1)),
        baseline_values=dict(attrs.get(StudyAttrs.SWEEP_BASELINE_VALUES) or {}),
        trials=trials,
        invocations=invocations,
        curves=curves,
        environment=None,
        floors=None,
        floors_note="",
        mlflow_note=note,
    )
    best = data.best_trial()
    if best is not None and best.curve_runs and experiment_id is not None:
        data.artifacts = copy_best_artifacts(client, best.curve_runs[0][0], figures)
        metrics_json = data.artifacts.pop("metrics_json", None)
        if metrics_json is not None:
            try:
                data.environment = json.loads(metrics_json.read_text()).get("environment")
            finally:
                metrics_json.unlink(missing_ok=True)
    data.floors, data.floors_note = load_floors(spec, data_dir)
    data.data_dir = data_dir
    if experiment_id is not None:
        from .pictures import fetch_pictures

        data.pictures = fetch_pictures(client, [t for t in trials if t.state == "COMPLETE"])
    return data


def _parse_spec(raw: dict[str, Any]):
    if not raw:
        return None
    try:
        from study.spec.spec import parse_spec

        return parse_spec(raw, where="stored spec")
    except Exception as exc:  # a spec of an older version: report from the raw dict
        log.warning("the stored spec does not parse (%s); reporting from its raw values", exc)
        return None


def _objectives(study: optuna.Study, attrs: dict[str, Any], spec) -> list[tuple[str, str]]:
    directions = [d.name.lower() for d in study.directions]
    names = list(attrs.get(StudyAttrs.OBJECTIVES) or ([o.metric for o in spec.objectives] if spec else []))
    if len(names) != len(directions):
        names = [f"objective {i}" for i in range(len(directions))] if len(directions) > 1 else ["fd"]
    return list(zip(names, directions))


def _trial_info(t: optuna.trial.FrozenTrial) -> TrialInfo:
    rec = TrialRecord.from_trial(t)
    duration = None
    if t.datetime_start and t.datetime_complete:
        duration = (t.datetime_complete - t.datetime_start).total_seconds()
    elif t.datetime_start and t.state == TrialState.RUNNING:
        now = datetime.now(t.datetime_start.tzinfo)
        duration = max(0.0, (now - t.datetime_start).total_seconds())
    return TrialInfo(
        number=t.number,
        state=t.state.name,
        params=dict(t.params),
        values=list(t.values) if t.values is not None else None,
        metrics={k: v for k, v in rec.metrics.items() if isinstance(v, (int, float))},
        metrics_sd={k: v for k, v in rec.metrics_sd.items() if isinstance(v, (int, float))},
        repeat_metrics=list(rec.repeat_metrics),
        reason=rec.reason,
        sweep=rec.sweep,
        run_id=rec.mlflow_run_id,
        curve_runs=rec.curve_runs,
        duration_s=duration,
        started=t.datetime_start,
        intermediate=dict(t.intermediate_values),
        config=dict(rec.config),
        evaluator=rec.evaluator,
        population=rec.population,
        retry_of=rec.retry_of,
    )


def _fill_sweep(trials: list[TrialInfo], spec) -> None:
    """Sweep labels for trials that have the point as a param but not the user attribute."""
    if spec is None or not spec.sweep:
        return
    points = {p.label: p for p in spec.sweep}
    for t in trials:
        if t.sweep is None and t.params.get("point") in points:
            p = points[t.params["point"]]
            t.sweep = {"point": p.label, "factor": p.factor, "value": p.value}


def load_floors(spec, data_dir: str | None) -> tuple[dict[str, Any] | None, str]:
    """The real-vs-real value of every metric at the trials' final sample count."""
    n = int(spec.final_samples) if spec is not None else 10_000
    n = min(max(n, 10), 60_000)
    try:
        from gan.evaluator import load_evaluator
        from gan.metrics import floors

        evaluator = load_evaluator(data_dir, source=getattr(spec, "evaluator", "pinned"))  # compare passes a stand-in
        values = floors(evaluator, data_dir, n=n, seed=0)
    except GanStudyError as exc:
        return None, f"real-data floors are not shown: {exc}"
    except Exception as exc:  # noqa: BLE001 - a report without floors beats no report
        return None, f"real-data floors are not shown: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return dict(values), f"floor: {n:,} random MNIST training images scored like generated samples (the trials' final sample count)"


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
