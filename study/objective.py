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
import time
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from mlflow.entities import Param
from optuna.storages import BaseStorage
from optuna.trial import TrialState

import gan
from gan.config import resolve_device

from . import record
from .compat import heartbeat
from .evaluation import Evaluation, load_evaluation
from .faults import WriteError, write_failure
from .progress import Meter
from .recovery import counts, dead_here, will_retry, worker_identity
from .record import Tag, TrialRecord
from .runs import end_run, log_artifacts, log_metrics, run_name, source_tags, start_run
from .spec import StudySpec
from .tracking import Stores, mask_url, retry
from .training import RunTraining, train_runs

__all__ = ["TrialRunner", "failure_reason"]

GRID_WAIT_SECONDS = 600  # a trial that shows no point this long after this one asked is dead


@dataclass
class _Started:
    """A trial ready to train: its MLflow runs (the trial's, then its repeats') and one
    ``RunTraining`` per repeat."""

    trial: optuna.Trial
    run_ids: list[str]
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
        self.meter = meter or Meter()  # the invocation's progress: this worker's training (study.progress)
        self.device_name, self.parent_run_id, self.progress = device, parent_run_id, progress
        self.client = stores.mlflow()
        self.experiment_id = stores.experiment_id(study_name)
        self.evaluation = evaluation or load_evaluation(data_dir, resolve_device(device), spec.evaluator)
        self.stop: WriteError | None = None
        """Set when a trial failed to write a file (full disk, read-only folder): the worker stops."""

    # -- before training: is the trial needed, and what does it train? ---------------------------
    def give_up(self, trial: optuna.Trial, why: str) -> None:
        """End the trial as surplus: it does not count and is never retried."""
        record.write(trial, surplus=True)
        raise optuna.TrialPruned(why)

    def claim(self, trial: optuna.Trial) -> None:
        """Give the trial up when it is not needed: the study has its trials, or another trial
        retries the same failure."""
        trials = trial.study.get_trials(deepcopy=False)
        retry_of = TrialRecord.from_trial(trial).retry_of
        if retry_of is not None:
            # A retry always runs: the study committed to its configuration. Only one retry, though.
            twin = next((t for t in trials if t.number < trial.number and TrialRecord.from_trial(t).retry_of == retry_of
                         and not TrialRecord.from_trial(t).surplus), None)
            if twin is not None:
                self.give_up(trial, f"surplus: trial {twin.number} already retries trial {retry_of}")
            return
        ahead = sum(1 for t in trials if t.number < trial.number and counts(t))
        if ahead >= self.target_trials:  # another worker took the last slot meanwhile
            self.give_up(trial, "surplus: the study already has its trials")

    def grid_twin(self, trial: optuna.Trial) -> int | None:
        """An earlier trial that runs (or ran) this trial's grid point, if any.

        Workers race for grid points only past the first grid-size trials (Optuna then draws an
        unvisited point); the lower trial number wins. An earlier trial whose point is not
        known yet (just started) is waited for, a while.
        """
        deadline = time.monotonic() + GRID_WAIT_SECONDS  # a starved worker on a busy machine is waited for
        mine = trial.params
        retry_of = TrialRecord.from_trial(trial).retry_of
        while True:
            pending = False
            for t in trial.study.get_trials(deepcopy=False):
                if t.number >= trial.number or TrialRecord.from_trial(t).surplus or t.number == retry_of:
                    continue
                params = t.params or t.system_attrs.get("fixed_params", {})
                if t.state == TrialState.RUNNING and not params:
                    pending = pending or not dead_here(TrialRecord.from_trial(t).worker)  # a dead one never shows it
                elif params == mine and not will_retry(t):  # a failure to be retried: its retry decides
                    return t.number
            if not pending or time.monotonic() > deadline:
                return None
            time.sleep(0.2)

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
    def companions(self, leader: optuna.Trial) -> list[optuna.Trial]:
        """More trials to train with ``leader``, asked of Optuna now: ``spec.trials_at_once`` in
        all, never more than the study's free slots. A search's sampler keeps them apart with its
        constant liar; a grid (or sweep) hands out its points in trial-number order, so they are
        the next points (``grid_twin`` still settles races between workers)."""
        size = self.spec.trials_at_once
        if size <= 1:
            return []
        trials = leader.study.get_trials(deepcopy=False)
        free = self.target_trials - sum(1 for t in trials if counts(t))
        queued = sum(1 for t in trials if t.state == TrialState.WAITING and not TrialRecord.from_trial(t).surplus)
        return [leader.study.ask() for _ in range(min(size - 1, max(0, free) + queued))]

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        """Run ``trial``, which Optuna's ``optimize`` hands us, with its companions (told here)."""
        cohort = [trial]
        run_ids: dict[int, list[str]] = {trial.number: []}  # per trial: its run, then its repeats' runs
        outcomes: dict[int, Any] = {}
        try:  # all of it: however early a Ctrl-C comes, the failures are recorded with their reason
            record.write(trial, worker=worker_identity(), invocation=self.parent_run_id)
            for companion in self.companions(trial):
                record.write(companion, worker=worker_identity(), invocation=self.parent_run_id)
                cohort.append(companion)
                run_ids[companion.number] = []
            with contextlib.ExitStack() as beats:
                for companion in cohort[1:]:  # Optuna beats for the trial it runs; these are ours
                    beats.enter_context(heartbeat(self.storage, companion))
                self.run_cohort(cohort, run_ids, outcomes)
        except BaseException as exc:  # noqa: BLE001 - record, then let Optuna mark FAIL
            exc = (write_failure(exc) or exc) if isinstance(exc, Exception) else exc
            if isinstance(exc, WriteError):
                self.stop = exc
            for t in cohort:
                if t is trial or t.number not in outcomes:
                    self.record_failure(t, exc, run_ids[t.number])
            with contextlib.suppress(Exception):  # the stores may be what failed: reconcile ends the rest
                self.tell(cohort[1:], outcomes)
            raise
        self.tell(cohort[1:], outcomes)
        if isinstance(outcomes[trial.number], optuna.TrialPruned):
            raise outcomes[trial.number]
        return outcomes[trial.number]

    @staticmethod
    def tell(companions: list[optuna.Trial], outcomes: dict[int, Any]) -> None:
        """Optuna learns how the companions ended (a companion without an outcome failed)."""
        for t in companions:
            outcome = outcomes.get(t.number)
            if outcome is None:
                t.study.tell(t, state=TrialState.FAIL)
            elif isinstance(outcome, optuna.TrialPruned):
                t.study.tell(t, state=TrialState.PRUNED)
            else:
                t.study.tell(t, outcome)

    def run_cohort(self, cohort: list[optuna.Trial], run_ids: dict[int, list[str]], outcomes: dict[int, Any]) -> None:
        """Start, train and end the trials; ``outcomes`` gets, per trial number, its objective
        value(s) or the ``TrialPruned`` that ended it (recorded in Optuna and MLflow with its reason)."""
        started: list[_Started] = []
        for t in cohort:
            try:
                started.append(self.start(t, run_ids[t.number]))
            except optuna.TrialPruned as exc:
                outcomes[t.number] = self.pruned(t, exc, run_ids[t.number])
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
            outcomes[number] = self.pruned(s.trial, ended, run_ids[number])

    def start(self, trial: optuna.Trial, run_ids: list[str]) -> _Started:
        """Claim a slot, draw the configuration and open the trial's MLflow runs; ``TrialPruned``
        when the trial is not needed or its combination of values is invalid."""
        spec = self.spec
        self.claim(trial)
        overrides = self.suggest(trial)
        twin = self.grid_twin(trial) if spec.is_grid else None
        if twin is not None:
            self.give_up(trial, f"surplus: trial {twin} already runs this grid point")
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
        run_id = start_run(self.client, self.experiment_id, run_name(trial.number, trial.params), tags, self.parent_run_id)
        run_ids.append(run_id)
        record.write(trial, mlflow_run_id=run_id)
        params = [Param(k, str(v)) for k, v in base.to_dict().items() if k != "seed"]
        params.append(Param("seeds", ",".join(str(spec.seed + r) for r in range(spec.repeats))))
        params += [Param(f"evaluator_{k}", str(v)) for k, v in card.items()]
        retry(lambda: self.client.log_batch(run_id, params=params))
        verdict: list[optuna.TrialPruned] = []  # shared by the trial's runs: a pruned trial stops them all
        runs = []
        for r in range(spec.repeats):
            cfg = base.replace(seed=spec.seed + r)
            target = self.repeat_run(trial, cfg, r, tags, run_ids)
            runs.append(RunTraining(spec, self.evaluation, self.client, trial, cfg, target, report=r == 0,
                                    progress_bar=self.progress, verdict=verdict, meter=self.meter))
        return _Started(trial, run_ids, runs)

    def train_cohort(self, started: list[_Started]) -> dict[int, list[Any]]:
        """Train every run of the started trials, those of one shape together in populations of
        up to ``spec.runs_at_once`` (``gan.population_support``), the others one at a time; per trial
        number, its runs' final metrics or the ``TrialPruned`` that ended it, in repeat order."""
        groups: dict[Any, list[RunTraining]] = {}
        for s in started:
            for run in s.runs:
                alone = gan.population_support(run.cfg) is not None or self.alone_under_auto(run.cfg)
                groups.setdefault(id(run) if alone else gan.shape_key(run.cfg), []).append(run)
        results: dict[int, Any] = {}  # id(run) -> its result
        for group in groups.values():
            for first in range(0, len(group), self.spec.runs_at_once):
                chunk = group[first:first + self.spec.runs_at_once]
                for run in chunk:
                    if run.report:
                        record.write(run.trial, population=len(chunk))
                results.update(zip(map(id, chunk), train_runs(chunk, self.evaluation.data), strict=True))
        return {s.trial.number: [results[id(run)] for run in s.runs] for s in started}

    def alone_under_auto(self, cfg: gan.TrainConfig) -> bool:
        """``population: auto`` trains DCGANs one at a time on the CPU: there a grouped conv is
        no faster than one conv per member, and a population of 4 ran at x0.94 of solo runs
        (docs/performance.md). A spec's ``population: K`` still batches them."""
        return self.spec.population is None and cfg.arch == "dcgan" and cfg.resolved_device().type == "cpu"

    def complete(self, started: _Started, results: list[dict[str, Any]]) -> float | tuple[float, ...]:
        """End a trial whose runs all trained: its summary, and its objective value(s)."""
        spec, trial, run_id = self.spec, started.trial, started.run_ids[0]
        summary = summarize(results)
        record.write(trial, metrics=summary["mean"], metrics_sd=summary["sd"], repeat_metrics=results)
        if spec.repeats > 1:
            for target in started.run_ids[1:]:
                end_run(self.client, target, "COMPLETE", "FINISHED")
            log_metrics(self.client, run_id, summary["mean"], step=0)
            log_metrics(self.client, run_id, {f"{k}_sd": v for k, v in summary["sd"].items()}, step=0)
        values = tuple(summary["mean"][o.metric] for o in spec.objectives)
        if not all(math.isfinite(v) for v in values):
            raise optuna.TrialPruned(f"diverged: the objective is not finite: {dict(zip([o.metric for o in spec.objectives], values))}")
        end_run(self.client, run_id, "COMPLETE", "FINISHED")
        return values if spec.multi_objective else values[0]

    def pruned(self, trial: optuna.Trial, exc: optuna.TrialPruned, run_ids: list[str]) -> optuna.TrialPruned:
        reason = str(exc) or "pruned"
        record.write(trial, reason=reason)
        for rid in run_ids:
            end_run(self.client, rid, "PRUNED", "FINISHED", reason)
        return exc

    def record_failure(self, trial: optuna.Trial, exc: BaseException, run_ids: list[str]) -> None:
        reason = failure_reason(exc)
        with contextlib.suppress(Exception):  # the stores may be what failed
            record.write(trial, reason=reason, **({"write_failed": True} if isinstance(exc, WriteError) else {}))
        interrupted = isinstance(exc, KeyboardInterrupt)
        tracked = True
        for rid in run_ids:
            try:
                end_run(self.client, rid, "FAIL", "KILLED" if interrupted else "FAILED", reason)
            except Exception:  # noqa: BLE001 - the next worker's reconcile closes the run
                tracked = False
        if run_ids and tracked and not interrupted:
            text = mask_url("".join(traceback.format_exception(exc)))
            with contextlib.suppress(Exception):
                log_artifacts(self.client, run_ids[0], {"error/traceback.txt": lambda p: p.write_text(text)})
        if not interrupted:
            print(f"gan-study: trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)

    def repeat_run(self, trial: optuna.Trial, cfg: gan.TrainConfig, r: int, tags: dict[str, str], run_ids: list[str]) -> str:
        """The MLflow run of repeat ``r``: the trial's own when it has one repeat, else a new one under it."""
        if self.spec.repeats == 1:
            return run_ids[0]
        target = start_run(self.client, self.experiment_id, f"trial-{trial.number}-seed-{cfg.seed}",
                           {**tags, Tag.ROLE: "repeat", Tag.CURVES: "true", Tag.REPEAT: str(r)}, run_ids[0])
        run_ids.append(target)
        record.write(trial, repeat_run_ids=run_ids[1:])
        retry(lambda: self.client.log_batch(target, params=[Param(k, str(v)) for k, v in cfg.to_dict().items()]))
        return target
