"""The objective: one Optuna trial -> ``gan.train`` per repeat -> evaluation -> MLflow.

One MLflow run per trial, nested under the invocation's run, and one run per repeat under it
when a trial trains several seeds. Runs of one shape train together as one population (a
trial's repeats; with ``population: K``, also the trials a search asks for with the one
Optuna hands in, its companions). A trial ends in one of three ways, and its record (Optuna)
and runs (MLflow) say the same with the same reason:

- COMPLETE: every repeat trained and was scored;
- PRUNED: the pruner stopped it, training diverged, its combination of values is invalid, or
  it was not needed (surplus: the study had its trials, another trial runs its grid point);
- FAIL: anything else (out of memory, a store error, Ctrl-C), with the traceback in MLflow.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import sys
import traceback
from dataclasses import dataclass
from typing import Any, TypeAlias

import optuna
import torch
from mlflow.entities import Param
from optuna.storages import BaseStorage
from optuna.trial import TrialState

import gan
from gan.config import resolve_device

from ..storage import record
from ..storage.compat import heartbeat
from .evaluation import Evaluation, load_evaluation
from ..storage.faults import WriteError, write_failure
from .progress import Meter
from .recovery import worker_identity
from ..storage.record import Tag, TrialRecord
from ..storage.runs import RunEnd, TrialRuns, end_run, log_artifacts, log_metrics, source_tags
from .slots import claim, companions, give_up, grid_twin
from ..spec.spec import StudySpec
from ..storage.errors import mask_url
from ..storage.tracking import Stores
from .training import RunTraining, train_runs

__all__ = ["TrialRunner", "failure_reason"]

Values: TypeAlias = float | tuple[float, ...]
"""A complete trial's objective value (a tuple with several objectives)."""
Outcome: TypeAlias = Values | optuna.TrialPruned
"""How a trial ended short of failing: its values, or the ``TrialPruned`` that ended it."""


@dataclass
class _Started:
    """A trial ready to train: its MLflow runs and one ``RunTraining`` per repeat."""

    trial: optuna.Trial
    tracked: TrialRuns
    runs: list[RunTraining]


def failure_reason(exc: BaseException) -> str:
    """One line that says why a trial failed (the reason recorded in Optuna and MLflow)."""
    first = mask_url(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory ({type(exc).__name__}: {first}); try a smaller batch_size or model, or a bigger GPU"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    if isinstance(exc, WriteError):  # already one line naming the file and the fix
        return first
    return f"{type(exc).__name__}: {first}".strip().rstrip(":")


def free_memory() -> None:
    # A full collection takes most of a second in a process holding MLflow and matplotlib; only
    # a GPU's cached blocks need it (reference cycles would otherwise hold tensors a while).
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each numeric metric over repeats."""
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float))]
    mean = {k: statistics.fmean(r[k] for r in results) for k in keys}
    sd = {k: statistics.stdev([r[k] for r in results]) if len(results) > 1 else 0.0 for k in keys}
    return {"mean": mean, "sd": sd}


class TrialRunner:
    """The objective Optuna calls; one instance per worker process."""

    def __init__(self, spec: StudySpec, stores: Stores, study_name: str, *, target_trials: int, device: str = "auto",
                 data_dir: str | None = None, parent_run_id: str | None = None, progress: bool = False,
                 evaluation: Evaluation | None = None, storage: BaseStorage | None = None, meter: Meter | None = None):
        self.spec, self.study_name, self.target_trials, self.storage = spec, study_name, target_trials, storage
        self.meter = meter or Meter()  # the invocation's progress: this worker's training (study.trials.progress)
        self.device_name, self.parent_run_id, self.progress = device, parent_run_id, progress
        self.client = stores.mlflow()
        self.experiment_id = stores.experiment_id(study_name)
        self.evaluation = evaluation or load_evaluation(data_dir, resolve_device(device), spec.evaluator)
        self.stop: WriteError | None = None
        """Set when a trial failed to write a file (full disk, read-only folder): the worker stops."""

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The sampled point as config overrides (and, for a sweep, its labels for the reports)."""
        spec = self.spec
        if spec.sweep:
            label = trial.suggest_categorical("point", [p.label for p in spec.sweep])
            point = next(p for p in spec.sweep if p.label == label)
            record.write(trial, sweep={"point": point.label, "factor": point.factor, "value": point.value})
            return dict(point.overrides)
        overrides: dict[str, Any] = {}
        drawn: dict[str, Any] = {}  # the choice labels drawn so far: they decide the conditional parameters
        for p in spec.space:
            if not p.active(drawn):
                continue  # define-by-run: an inapplicable parameter is never drawn, never recorded
            if p.choices is not None:
                drawn[p.name] = trial.suggest_categorical(p.name, list(p.labels()))
                overrides.update(p.decode(drawn[p.name]))
            elif p.integer:
                overrides[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                overrides[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
        return overrides

    # -- the trial and its cohort ---------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> Values:
        """Run ``trial``, which Optuna's ``optimize`` hands us, with its companions (told here)."""
        cohort = [trial]
        tracked = {trial.number: self.trial_runs()}
        outcomes: dict[int, Outcome] = {}
        try:  # all of it: however early a Ctrl-C comes, the failures are recorded with their reason
            record.write(trial, worker=worker_identity(), invocation=self.parent_run_id)
            for companion in companions(trial, self.spec.trials_at_once, self.target_trials):
                record.write(companion, worker=worker_identity(), invocation=self.parent_run_id)
                cohort.append(companion)
                tracked[companion.number] = self.trial_runs()
            with contextlib.ExitStack() as beats:
                for companion in cohort[1:]:  # Optuna beats for the trial it runs; these are ours
                    beats.enter_context(heartbeat(self.storage, companion))
                self.run_cohort(cohort, tracked, outcomes)
        except BaseException as exc:  # noqa: BLE001 - record, then let Optuna mark FAIL
            exc = (write_failure(exc) or exc) if isinstance(exc, Exception) else exc
            if isinstance(exc, WriteError):
                self.stop = exc
            for t in cohort:
                if t is trial or t.number not in outcomes:
                    self.record_failure(t, exc, tracked[t.number])
            with contextlib.suppress(Exception):  # the stores may be what failed: reconcile ends the rest
                self.tell(cohort[1:], outcomes)
            raise
        self.tell(cohort[1:], outcomes)
        if isinstance(outcomes[trial.number], optuna.TrialPruned):
            raise outcomes[trial.number]
        return outcomes[trial.number]

    def trial_runs(self) -> TrialRuns:
        return TrialRuns(self.client, self.experiment_id, self.parent_run_id)

    @staticmethod
    def tell(companions: list[optuna.Trial], outcomes: dict[int, Outcome]) -> None:
        """Optuna learns how the companions ended (a companion without an outcome failed)."""
        for t in companions:
            outcome = outcomes.get(t.number)
            if outcome is None:
                t.study.tell(t, state=TrialState.FAIL)
            elif isinstance(outcome, optuna.TrialPruned):
                t.study.tell(t, state=TrialState.PRUNED)
            else:
                t.study.tell(t, outcome)

    def run_cohort(self, cohort: list[optuna.Trial], tracked: dict[int, TrialRuns], outcomes: dict[int, Outcome]) -> None:
        """Start, train and end the trials; ``outcomes`` gets, per trial number, its objective
        value(s) or the ``TrialPruned`` that ended it (recorded in Optuna and MLflow with its reason)."""
        started: list[_Started] = []
        for t in cohort:
            try:
                started.append(self.start(t, tracked[t.number]))
            except optuna.TrialPruned as exc:
                outcomes[t.number] = self.pruned(t, exc, tracked[t.number])
        # The worker loop ends the cohort in the meter once Optuna has its outcome.
        self.meter.begin([run.total for s in started for run in s.runs], len(started))
        results = self.train_cohort(started)
        for s in started:
            number, runs = s.trial.number, results[s.trial.number]
            ended = next((r for r in runs if isinstance(r, optuna.TrialPruned)), None)
            if ended is None:
                try:
                    outcomes[number] = self.complete(s, runs)
                    continue
                except optuna.TrialPruned as exc:  # an objective that is not finite
                    ended = exc
            outcomes[number] = self.pruned(s.trial, ended, s.tracked)

    def start(self, trial: optuna.Trial, tracked: TrialRuns) -> _Started:
        """Claim a slot, draw the configuration and open the trial's MLflow runs; ``TrialPruned``
        when the trial is not needed or its combination of values is invalid."""
        spec = self.spec
        claim(trial, self.target_trials)
        overrides = self.suggest(trial)
        twin = grid_twin(trial) if spec.is_grid else None
        if twin is not None:
            give_up(trial, f"surplus: trial {twin} already runs this grid point")
        try:
            base = spec.config_for(overrides, seed=spec.seed, device=self.device_name)
        except gan.ConfigError as exc:
            raise optuna.TrialPruned(f"invalid combination: {exc}") from exc
        card = self.evaluation.evaluator.card()
        record.write(trial, config=base.to_dict(), evaluator=card)
        tags = {Tag.STUDY_NAME: self.study_name, Tag.TRIAL_NUMBER: str(trial.number), Tag.ROLE: "trial",
                Tag.TRIAL_STATE: "RUNNING", Tag.CURVES: "true" if spec.repeats == 1 else "false",
                Tag.EVALUATOR_HASH: card["weights_hash"], **source_tags(f"gan-study run {spec.name}")}
        sweep = TrialRecord.from_trial(trial).sweep
        if sweep:
            tags.update({Tag.SWEEP_POINT: sweep["point"], Tag.SWEEP_FACTOR: sweep["factor"], Tag.SWEEP_VALUE: sweep["value"]})
        params = [Param(k, str(v)) for k, v in base.to_dict().items() if k != "seed"]
        params.append(Param("seeds", ",".join(str(spec.seed + r) for r in range(spec.repeats))))
        params += [Param(f"evaluator_{k}", str(v)) for k, v in card.items()]
        run_id = tracked.open(trial, tags, params)
        verdict: list[optuna.TrialPruned] = []  # shared by the trial's runs: a pruned trial stops them all
        runs = []
        for r in range(spec.repeats):
            cfg = base.replace(seed=spec.seed + r)
            # one repeat: the trial's own run holds it; several: a run each under the trial's
            target = run_id if spec.repeats == 1 else tracked.open_repeat(trial, cfg, r, tags)
            runs.append(RunTraining(spec, self.evaluation, self.client, trial, cfg, target, report=r == 0,
                                    progress_bar=self.progress, verdict=verdict, meter=self.meter))
        return _Started(trial, tracked, runs)

    def train_cohort(self, started: list[_Started]) -> dict[int, list[dict[str, Any] | optuna.TrialPruned]]:
        """Train every run of the started trials, in populations of up to ``spec.runs_at_once``
        (``gan.populations``; with ``population: auto`` only where that is faster); per trial
        number, its runs' final metrics or the ``TrialPruned`` that ended it, in repeat order."""
        runs = [run for s in started for run in s.runs]
        results: dict[int, Any] = {}  # id(run) -> its result
        for members in gan.populations([run.cfg for run in runs], self.spec.runs_at_once, where_faster=self.spec.population is None):
            chunk = [runs[i] for i in members]
            for run in chunk:
                if run.report:
                    record.write(run.trial, population=len(chunk))
            results.update(zip(map(id, chunk), train_runs(chunk, self.evaluation.data), strict=True))
        return {s.trial.number: [results[id(run)] for run in s.runs] for s in started}

    def complete(self, started: _Started, results: list[dict[str, Any]]) -> Values:
        """End a trial whose runs all trained: its summary, and its objective value(s)."""
        spec, trial, run_id = self.spec, started.trial, started.tracked.ids[0]
        summary = summarize(results)
        record.write(trial, metrics=summary["mean"], metrics_sd=summary["sd"], repeat_metrics=results)
        if spec.repeats > 1:
            for target in started.tracked.ids[1:]:
                end_run(self.client, target, RunEnd.COMPLETE)
            log_metrics(self.client, run_id, summary["mean"], step=0)
            log_metrics(self.client, run_id, {f"{k}_sd": v for k, v in summary["sd"].items()}, step=0)
        values = tuple(summary["mean"][o.metric] for o in spec.objectives)
        if not all(math.isfinite(v) for v in values):
            raise optuna.TrialPruned(f"diverged: the objective is not finite: {dict(zip([o.metric for o in spec.objectives], values))}")
        end_run(self.client, run_id, RunEnd.COMPLETE)
        return values if spec.multi_objective else values[0]

    def pruned(self, trial: optuna.Trial, exc: optuna.TrialPruned, tracked: TrialRuns) -> optuna.TrialPruned:
        reason = str(exc) or "pruned"
        record.write(trial, reason=reason)
        tracked.end(RunEnd.PRUNED, reason)
        return exc

    def record_failure(self, trial: optuna.Trial, exc: BaseException, tracked: TrialRuns) -> None:
        reason = failure_reason(exc)
        with contextlib.suppress(Exception):  # the stores may be what failed
            record.write(trial, reason=reason, **({"write_failed": True} if isinstance(exc, WriteError) else {}))
        interrupted = isinstance(exc, KeyboardInterrupt)
        ended = tracked.end_failed(RunEnd.KILLED if interrupted else RunEnd.FAILED, reason)
        if tracked.ids and ended and not interrupted:
            text = mask_url("".join(traceback.format_exception(exc)))
            with contextlib.suppress(Exception):
                log_artifacts(self.client, tracked.ids[0], {"error/traceback.txt": lambda p: p.write_text(text)})
        if not interrupted:
            print(f"gan-study: trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
