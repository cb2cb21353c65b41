"""Run a study: Optuna trials -> ``gan.train`` -> evaluation -> MLflow.

One MLflow experiment per study; one parent run per invocation; one nested run per trial, and
per repeat when a trial trains several seeds. Each worker process loops: reconcile the stores
(stale and failed trials), stop when the study has its trials, else run one more trial.

Crashes: a trial whose worker died (kill -9, power loss) is failed by the next worker that
looks -- through Optuna's heartbeat on RDB storages, through the worker's process id on the
embedded journal -- its MLflow runs are closed as KILLED and its configuration is retried once.
A failed retry is final and takes the trial's slot, so a study (and a grid) always ends.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from mlflow.entities import Metric, Param, RunTag
from optuna.trial import FrozenTrial, TrialState

import gan
from gan import metrics as gm
from gan.config import resolve_device
from gan.errors import GanStudyError
from gan.evaluator import load_evaluator
from gan.losses import realness
from gan.plots import class_histogram, labelled_samples, save_grid
from gan.sampling import generate, interpolation_rows

from .spec import StudySpec
from .tracking import StoreError, Stores, mask_url, retry

EVAL_SEED = 12345  # noise for evaluation samples: the same for every trial, so metrics compare
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_CURVE_POINTS = 500  # per curve and run: plenty for plots, half the insert cost of 1000
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
FLUSH_SECONDS = 30.0  # the longest the curves in MLflow lag behind training between evaluations
WORKER_DIED = "worker died (killed or crashed) while running the trial"
MAX_CONSECUTIVE_FAILURES = 5  # a worker whose trials keep failing stops instead of burning the study
UNCLAIMED_SECONDS = 600  # a journal trial with no worker recorded this long after its start is dead
GRID_WAIT_SECONDS = 60  # how long a grid trial waits for earlier trials to show their point

# Failed trials are reported by the runner in one line (and their tracebacks go to MLflow).
optuna.logging.set_verbosity(optuna.logging.ERROR)


class StudyFailed(GanStudyError):
    """A worker stopped because its trials keep failing, or a worker process died."""


@dataclass(frozen=True)
class RunOptions:
    stores: Stores
    study_name: str
    device: str = "auto"
    jobs: int = 1
    quiet: bool = False
    data_dir: str | None = None
    target_trials: int = 10


# -- the study and its samplers ---------------------------------------------------------------
def make_sampler(spec: StudySpec, offset: int) -> optuna.samplers.BaseSampler:
    """The spec's sampler; ``offset`` keeps workers and resumed runs from repeating draws."""
    seed = spec.sampler_seed + offset
    if spec.sampler == "grid":
        # Every worker and every resumed run must shuffle the grid alike: Optuna maps trial
        # number n to the n-th grid point, so differently shuffled workers would repeat points.
        return RetryingGridSampler(spec.grid(), seed=spec.sampler_seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=spec.sampler_startup_trials, warn_independent_sampling=False)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler_startup_trials, multivariate=True)


class RetryingGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, which also knows the grid point of a retry (an enqueued trial).

    Optuna's own leaves enqueued trials without a grid point and then fails in ``after_trial``
    (KeyError 'grid_id') when one point is left; here a retry takes its original's point.
    """

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fixed = trial.system_attrs.get("fixed_params")
        if fixed is not None and "grid_id" not in trial.system_attrs:
            point = tuple(fixed.get(name) for name in self._param_names)
            grid_id = next((i for i, p in enumerate(self._all_grids) if all(self._grid_value_equal(a, b) for a, b in zip(p, point))), None)
            if grid_id is not None:
                study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
                study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)
            return
        super().before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        if "grid_id" in study._storage.get_trial_system_attrs(trial._trial_id):
            super().after_trial(study, trial, state, values)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # The first warmup_evals evaluations of every trial never prune it.
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_evals * spec.eval_every + 1)
    if spec.pruner == "hyperband":  # max_resource: the last step the first trial reports
        return optuna.pruners.HyperbandPruner(min_resource=spec.eval_every, max_resource="auto")
    return optuna.pruners.NopPruner()


def open_study(spec: StudySpec, opts: RunOptions, offset: int = 0) -> optuna.Study:
    storage = opts.stores.optuna_storage()
    study = retry(
        lambda: optuna.create_study(
            study_name=opts.study_name,
            storage=storage,
            sampler=make_sampler(spec, offset),
            pruner=make_pruner(spec),
            directions=[o.direction for o in spec.objectives],
            load_if_exists=True,
        )
    )
    if [d.name.lower() for d in study.directions] != [o.direction for o in spec.objectives]:
        from .spec import SpecError

        raise SpecError(
            f"study {opts.study_name!r} exists with directions {[d.name.lower() for d in study.directions]}, "
            f"the spec asks for {[o.direction for o in spec.objectives]}: use another --study-name"
        )
    attrs = study.user_attrs
    if "spec" not in attrs:
        study.set_user_attr("spec", spec.source)
        study.set_user_attr("objectives", [o.metric for o in spec.objectives])
        study.set_user_attr("sweep_baseline_values", spec.baseline_values)
        study.set_user_attr("repeats", spec.repeats)
    return study


def will_retry(t: FrozenTrial) -> bool:
    """A failed trial whose configuration runs once more (an original failure, not a retry)."""
    return t.state == TrialState.FAIL and bool(t.params) and "retry_of" not in t.user_attrs and not t.user_attrs.get("surplus")


def counts(t: FrozenTrial) -> bool:
    """Whether a trial takes one of the study's ``target_trials`` slots.

    Finished, running and queued trials do; a failure does once it is final (a failed retry):
    a failure that will be retried leaves its slot to the retry.
    """
    if t.user_attrs.get("surplus"):
        return False
    if t.state in COUNTED:
        return True
    return t.state == TrialState.FAIL and "retry_of" in t.user_attrs


def counted_trials(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


# -- stale and failed trials --------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of process ``pid`` from /proc (Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def _process_started(pid: int) -> str | None:
    """The start time of process ``pid``, to tell a reused process id from the worker."""
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _process_started(pid)}


def _alive(worker: dict[str, Any]) -> bool:
    """Whether the process described by ``worker`` (on this host) still runs."""
    pid = int(worker.get("pid") or 0)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the signal said it exists
    state, started = stat
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return worker.get("started") in (None, "", started)


def _dead_here(worker: dict[str, Any] | None) -> bool:
    return bool(worker) and worker.get("host") == socket.gethostname() and not _alive(worker)


def stale_trials(study: optuna.Study, stores: Stores, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """RUNNING trials whose worker is gone.

    RDB storages: Optuna's heartbeat (no sign of life for ``stores.grace_period`` seconds),
    which works across machines. The journal file has no heartbeat: a trial whose worker
    process on this host is gone (or that never got a worker in ``UNCLAIMED_SECONDS``).
    """
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if not running:
        return []
    if not stores.embedded:
        from optuna.storages._heartbeat import is_heartbeat_enabled

        storage = study._storage
        if not is_heartbeat_enabled(storage):
            return []
        stale = set(storage._get_stale_trial_ids(study._study_id))
        return [t for t in running if t._trial_id in stale]
    now = time.time()
    out = []
    for t in running:
        worker = t.user_attrs.get("worker")
        if worker is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > UNCLAIMED_SECONDS:
                out.append(t)
        elif _dead_here(worker):
            out.append(t)
    return out


def reconcile(study: optuna.Study, stores: Stores) -> None:
    """Fail trials whose worker died, close MLflow runs left RUNNING, retry failed configs once."""
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    changed = False
    for t in stale_trials(study, stores, trials):
        with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):  # another worker was first
            storage.set_trial_user_attr(t._trial_id, "reason", WORKER_DIED)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            changed = True
    if changed:
        trials = study.get_trials(deepcopy=False)
    close_abandoned_runs(study.study_name, stores, trials)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if will_retry(t) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            retried.add(t.number)


def close_abandoned_runs(study_name: str, stores: Stores, trials: list[FrozenTrial]) -> None:
    """MLflow runs still RUNNING whose Optuna trial has ended, or whose invocation process died.

    A trial's runs are always ended before Optuna hears its result; one still RUNNING after
    that belongs to a worker that died mid-trial.
    """
    client = stores.mlflow()
    experiment = retry(lambda: client.get_experiment_by_name(study_name))
    if experiment is None:
        return
    runs = retry(lambda: client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'", max_results=5000))
    by_number = {t.number: t for t in trials}
    for run in runs:
        tags = run.data.tags
        rid = run.info.run_id
        if tags.get("gan_study.role") == "invocation":
            worker = {"host": tags.get("gan_study.host"), "pid": tags.get("gan_study.pid"), "started": tags.get("gan_study.started") or None}
            if worker["pid"] and _dead_here(worker):
                retry(lambda: client.set_tag(rid, "gan_study.reason", "the invocation's process died (killed or crashed)"))
                retry(lambda: client.set_terminated(rid, "KILLED"))
            continue
        number = tags.get("optuna.trial_number")
        t = by_number.get(int(number)) if number and number.isdigit() else None
        if t is None or not t.state.is_finished():
            continue
        reason = t.user_attrs.get("reason") or WORKER_DIED
        retry(lambda: client.log_batch(rid, tags=[RunTag("optuna.trial_state", t.state.name), RunTag("gan_study.reason", reason[:5000])]))
        retry(lambda: client.set_terminated(rid, "KILLED" if t.state == TrialState.FAIL else "FINISHED"))


# -- one trial ------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """The evaluator, its real statistics and the data: loaded once per worker."""

    data: gan.MNIST
    evaluator: Any
    real: Any
    device: torch.device

    @classmethod
    def load(cls, data_dir: str | None, device: torch.device) -> Evaluation:
        data = gan.load_mnist(data_dir, device=device)
        evaluator = load_evaluator(data_dir, device="cpu")
        return cls(data, evaluator, gm.real_stats(evaluator, data_dir), device)

    def score(self, generator, discriminator, cfg: gan.TrainConfig, n: int) -> tuple[dict[str, Any], torch.Tensor]:
        images = generate(generator, n, seed=EVAL_SEED)
        values = gm.score(images, self.evaluator, self.real)
        with torch.no_grad():
            out = torch.cat([discriminator(chunk.to(self.device)).float().cpu() for chunk in images.split(2000)])
        values["d_acc_generated"] = float((realness(cfg, out) < 0).float().mean())
        return values, images


@dataclass
class CurveLogger:
    """Per-step records -> MLflow metrics averaged over windows, sent in large blocking batches:
    at each evaluation, at the end, and at least every FLUSH_SECONDS (fresh curves in the UI).

    Not MLflow's asynchronous logging per records block: its background thread took ~20 % of
    a CPU trial's training time, where one batch costs ~0.1 ms per point (benchmarks.throughput).
    """

    client: Any
    run_id: str
    window: int
    pending: list = field(default_factory=list)
    flushed_at: float = field(default_factory=time.monotonic)

    def __call__(self, records: gan.Records) -> None:
        now = int(time.time() * 1000)
        steps = records.steps
        for start in range(0, len(steps), self.window):
            end = min(start + self.window, len(steps))
            for key, values in records.values.items():
                self.pending.append(Metric(key, sum(values[start:end]) / (end - start), now, steps[end - 1]))
        self.pending.append(Metric("images_per_sec", records.images_per_sec, now, steps[-1]))
        if time.monotonic() - self.flushed_at > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MLFLOW_BATCH], self.pending[MLFLOW_BATCH:]
            retry(lambda: self.client.log_batch(self.run_id, metrics=batch))
        self.flushed_at = time.monotonic()


def log_metrics(client, run_id: str, values: dict[str, Any], step: int) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items() if isinstance(v, (int, float))]
    retry(lambda: client.log_batch(run_id, metrics=metrics))


def log_artifacts(client, run_id: str, files: dict[str, Callable[[Path], None]]) -> None:
    """Write each file with its writer into a temp folder and upload it to ``path`` in the run."""
    with tempfile.TemporaryDirectory() as tmp:
        for rel, write in files.items():
            local = Path(tmp) / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            write(local)
            parent = str(Path(rel).parent)
            retry(lambda: client.log_artifact(run_id, str(local), None if parent == "." else parent))


class TrialRunner:
    """Builds the objective for Optuna; one instance per worker process."""

    def __init__(self, spec: StudySpec, opts: RunOptions, parent_run_id: str | None, progress: bool, evaluation: Evaluation | None = None):
        self.spec, self.opts, self.parent_run_id = spec, opts, parent_run_id
        self.client = opts.stores.mlflow()
        self.experiment_id = opts.stores.experiment_id(opts.study_name)
        self.device = resolve_device(opts.device)
        self.evaluation = evaluation or load_evaluation(opts.data_dir, self.device)
        self.progress = progress
        self.last: tuple[str, str | None] | None = None
        """(outcome, reason) of the last trial this worker ran: COMPLETE, PRUNED, FAIL or SURPLUS."""

    def _surplus(self, trial: optuna.Trial, why: str) -> None:
        trial.set_user_attr("surplus", True)
        trial.set_user_attr("reason", why)
        self.last = ("SURPLUS", why)
        raise optuna.TrialPruned(why)

    def _claim(self, trial: optuna.Trial) -> None:
        """Give the trial up (as 'surplus') when it is not needed: the study has its trials,
        or another trial retries the same failure, or (grid) an earlier trial has its point."""
        trials = trial.study.get_trials(deepcopy=False)
        retry_of = trial.user_attrs.get("retry_of")
        if retry_of is not None:
            # A retry always runs: the study committed to its configuration. Only one retry, though.
            twin = next((t for t in trials if t.user_attrs.get("retry_of") == retry_of and t.number < trial.number and not t.user_attrs.get("surplus")), None)
            if twin is not None:
                self._surplus(trial, f"surplus: trial {twin.number} already retries trial {retry_of}")
            return
        ahead = sum(1 for t in trials if t.number < trial.number and counts(t))
        if ahead >= self.opts.target_trials:  # another worker took the last slot meanwhile
            self._surplus(trial, "surplus: the study already has its trials")

    def _grid_twin(self, trial: optuna.Trial) -> int | None:
        """An earlier trial that runs (or ran) this trial's grid point, if any.

        Workers race for grid points only past the first grid-size trials (Optuna then draws an
        unvisited point); the lower trial number wins. An earlier trial whose point is not
        known yet (just started) is waited for, a while.
        """
        deadline = time.time() + GRID_WAIT_SECONDS
        mine = trial.params
        retry_of = trial.user_attrs.get("retry_of")
        while True:
            pending = False
            for t in trial.study.get_trials(deepcopy=False):
                if t.number >= trial.number or t.user_attrs.get("surplus") or t.number == retry_of:
                    continue
                params = t.params or t.system_attrs.get("fixed_params", {})
                if t.state == TrialState.RUNNING and not params:
                    pending = True
                elif params == mine and not will_retry(t):  # a failure to be retried: its retry decides
                    return t.number
            if not pending or time.time() > deadline:
                return None
            time.sleep(0.2)

    # The sampled point -> config overrides and labels for the reports.
    def _suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        spec = self.spec
        if spec.sweep:
            label = trial.suggest_categorical("point", [p.label for p in spec.sweep])
            point = next(p for p in spec.sweep if p.label == label)
            trial.set_user_attr("sweep", {"point": point.label, "factor": point.factor, "value": point.value})
            return dict(point.overrides)
        overrides: dict[str, Any] = {}
        for p in spec.space:
            if p.choices is not None:
                overrides.update(p.decode(trial.suggest_categorical(p.name, list(p.labels()))))
            elif p.integer:
                overrides[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                overrides[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
        return overrides

    def _start_run(self, name: str, parent: str | None, tags: dict[str, str]) -> str:
        all_tags = {"optuna.study_name": self.opts.study_name, **tags}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        return retry(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)).info.run_id

    def _end_run(self, run_id: str, state: str, status: str, reason: str | None = None) -> None:
        tags = [RunTag("optuna.trial_state", state)]
        if reason:
            tags.append(RunTag("gan_study.reason", reason[:5000]))
        retry(lambda: self.client.log_batch(run_id, tags=tags))
        retry(lambda: self.client.set_terminated(run_id, status))

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, ...]:
        spec, opts = self.spec, self.opts
        self.last = None
        trial.set_user_attr("worker", worker_identity())
        self._claim(trial)
        overrides = self._suggest(trial)
        if spec.is_grid:
            twin = self._grid_twin(trial)
            if twin is not None:
                self._surplus(trial, f"surplus: trial {twin} already runs this grid point")
        try:
            base = spec.config_for(overrides, seed=spec.seed, device=opts.device)
        except gan.ConfigError as exc:
            reason = f"invalid combination: {exc}"
            trial.set_user_attr("reason", reason)
            self.last = ("PRUNED", reason)
            raise optuna.TrialPruned(reason) from exc
        trial.set_user_attr("config", base.to_dict())
        tags = {"optuna.trial_number": str(trial.number), "gan_study.role": "trial", "optuna.trial_state": "RUNNING"}
        if "sweep" in trial.user_attrs:
            sweep = trial.user_attrs["sweep"]
            tags.update({"gan_study.sweep_point": sweep["point"], "gan_study.sweep_factor": sweep["factor"], "gan_study.sweep_value": sweep["value"]})
        tags["gan_study.curves"] = "true" if spec.repeats == 1 else "false"
        run_id = self._start_run(f"trial-{trial.number}", self.parent_run_id, tags)
        trial.set_user_attr("mlflow_run_id", run_id)
        params = [Param(k, str(v)) for k, v in base.to_dict().items() if k != "seed"]
        params.append(Param("seeds", ",".join(str(spec.seed + r) for r in range(spec.repeats))))
        retry(lambda: self.client.log_batch(run_id, params=params))
        repeat_runs: list[str] = []
        try:
            results = []
            for r in range(spec.repeats):
                cfg = base.replace(seed=spec.seed + r)
                target = run_id
                if spec.repeats > 1:
                    target = self._start_run(
                        f"trial-{trial.number}-seed-{cfg.seed}", run_id, {**tags, "gan_study.role": "repeat", "gan_study.curves": "true", "gan_study.repeat": str(r)}
                    )
                    repeat_runs.append(target)
                    trial.set_user_attr("repeat_run_ids", repeat_runs)
                    retry(lambda: self.client.log_batch(target, params=[Param(k, str(v)) for k, v in cfg.to_dict().items()]))
                results.append(self._train_one(trial, cfg, target, report=r == 0))
                if target != run_id:
                    self._end_run(target, "COMPLETE", "FINISHED")
            summary = summarize(results)
            trial.set_user_attr("metrics", summary["mean"])
            trial.set_user_attr("metrics_sd", summary["sd"])
            trial.set_user_attr("repeat_metrics", results)
            if spec.repeats > 1:
                log_metrics(self.client, run_id, summary["mean"], step=0)
                log_metrics(self.client, run_id, {f"{k}_sd": v for k, v in summary["sd"].items()}, step=0)
            values = tuple(summary["mean"][o.metric] for o in spec.objectives)
            if not all(math.isfinite(v) for v in values):
                raise gan.DivergenceError(f"the objective is not finite: {dict(zip([o.metric for o in spec.objectives], values))}", step=0)
            self._end_run(run_id, "COMPLETE", "FINISHED")
            self.last = ("COMPLETE", None)
            return values if spec.multi_objective else values[0]
        except gan.DivergenceError as exc:  # the objective itself came out non-finite
            reason = f"diverged: {exc}"
            trial.set_user_attr("reason", reason)
            for rid in [*repeat_runs, run_id]:
                self._end_run(rid, "PRUNED", "FINISHED", reason)
            self.last = ("PRUNED", reason)
            raise optuna.TrialPruned(reason) from exc
        except optuna.TrialPruned as exc:
            reason = str(exc) or "pruned"
            trial.set_user_attr("reason", reason)
            for rid in [*repeat_runs, run_id]:
                self._end_run(rid, "PRUNED", "FINISHED", reason)
            self.last = ("PRUNED", reason)
            raise
        except BaseException as exc:  # noqa: BLE001 - record, then let Optuna mark FAIL
            reason = failure_reason(exc)
            self.last = ("FAIL", reason)
            text = "".join(traceback.format_exception(exc))
            with contextlib.suppress(Exception):  # the stores may be what failed
                trial.set_user_attr("reason", reason)
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            tracked = True
            for rid in [*repeat_runs, run_id]:
                try:
                    self._end_run(rid, "FAIL", status, reason)
                except Exception:  # noqa: BLE001 - the next worker's reconcile closes the run
                    tracked = False
            if tracked and not isinstance(exc, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    log_artifacts(self.client, run_id, {"error/traceback.txt": lambda p: p.write_text(mask_url(text))})
                print(f"gan-study: trial {trial.number} failed: {reason}", file=sys.stderr, flush=True)
            raise

    def _train_one(self, trial: optuna.Trial, cfg: gan.TrainConfig, run_id: str, report: bool) -> dict[str, Any]:
        spec, ev = self.spec, self.evaluation
        total = cfg.total_steps(len(ev.data))
        window = math.ceil(total / MAX_CURVE_POINTS)
        curves = CurveLogger(self.client, run_id, window)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, desc=f"trial {trial.number}" + (f" seed {cfg.seed}" if spec.repeats > 1 else ""), unit="step", leave=False)

        def on_records(records: gan.Records) -> None:
            curves(records)
            if bar is not None:
                bar.update(len(records.steps))

        def on_eval(point: gan.EvalPoint) -> None:
            curves.flush()  # training is paused anyway
            values, _ = ev.score(point.generator, point.discriminator, cfg, spec.eval_samples)
            log_metrics(self.client, run_id, values, point.step)
            log_artifacts(self.client, run_id, {f"samples/step_{point.step:06d}.png": lambda p: save_grid(point.generator(point.fixed_noise), p)})
            if report and not spec.multi_objective:
                metric = spec.objectives[0].metric
                trial.report(values[metric], point.step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {point.step}: {metric}={values[metric]:.4g} is behind the other trials")

        records_every = window * math.ceil(100 / window)
        try:
            result = gan.train(cfg, ev.data, on_records=on_records, records_every=records_every, on_eval=on_eval, eval_every=spec.eval_every)
        except gan.DivergenceError as exc:
            raise optuna.TrialPruned(f"diverged: {exc}") from exc
        finally:
            curves.flush()
            if bar is not None:
                bar.close()
        values, images = ev.score(result.generator, result.discriminator, cfg, spec.final_samples)
        values.update(train_seconds=result.seconds, images_per_sec=result.images_per_sec, steps=result.steps)
        log_metrics(self.client, run_id, values, result.steps)
        self._final_artifacts(result, images, values, run_id)
        return {k: v for k, v in values.items()}

    def _final_artifacts(self, result: gan.TrainResult, images: torch.Tensor, values: dict[str, Any], run_id: str) -> None:
        ev = self.evaluation
        twenty = images[:20]
        predicted, _ = ev.evaluator.predict(twenty)
        record = {
            "metrics": values,
            "config": result.config.to_dict(),
            "environment": gan.environment(result.device),
            "samples": self.spec.final_samples,
            "eval_seed": EVAL_SEED,
        }
        log_artifacts(
            self.client,
            run_id,
            {
                "samples/final.png": lambda p: save_grid(result.generator(result.fixed_noise), p),
                "final/samples_20.png": lambda p: labelled_samples(twenty, predicted.argmax(1).tolist(), p),
                "final/class_histogram.png": lambda p: class_histogram(values["class_counts"], p),
                "final/interpolation.png": lambda p: save_grid(interpolation_rows(result.generator, rows=5, steps=10), p, nrow=10),
                "final/metrics.json": lambda p: p.write_text(json.dumps(record, indent=2)),
                "checkpoint/checkpoint.pt": lambda p: gan.save_checkpoint(p, result.config, result.generator, result.discriminator, step=result.steps, metrics={k: v for k, v in values.items() if isinstance(v, float)}),
            },
        )


def failure_reason(exc: BaseException) -> str:
    """One line that says why a trial failed (the reason recorded in Optuna and MLflow)."""
    first = mask_url(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    if isinstance(exc, torch.OutOfMemoryError):
        return f"out of memory ({type(exc).__name__}: {first}); try a smaller batch_size or model, or a bigger GPU"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    return f"{type(exc).__name__}: {first}".strip().rstrip(":")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_evaluation(data_dir: str | None, device: torch.device) -> Evaluation:
    """The evaluator and real statistics, or a one-line error when their cache cannot be written."""
    try:
        return Evaluation.load(data_dir, device)
    except OSError as exc:
        from gan.evaluator import resolve_cache_dir

        raise StoreError(
            f"cannot read or write the evaluator cache in {resolve_cache_dir()} ({exc.strerror or exc}): "
            "set GAN_STUDY_CACHE to a writable folder"
        ) from exc


def summarize(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each numeric metric over repeats."""
    keys = [k for k, v in results[0].items() if isinstance(v, (int, float))]
    mean = {k: statistics.fmean(r[k] for r in results) for k in keys}
    sd = {k: statistics.stdev([r[k] for r in results]) if len(results) > 1 else 0.0 for k in keys}
    return {"mean": mean, "sd": sd}


# -- workers and the invocation ------------------------------------------------------------------
def worker_loop(
    spec: StudySpec,
    opts: RunOptions,
    parent_run_id: str | None,
    index: int,
    progress: bool,
    callbacks: list[Callable[[optuna.Study, Any], None]] | None = None,
    evaluation: Evaluation | None = None,
) -> None:
    """Run trials until the study has ``opts.target_trials`` of them (counting other workers').

    A worker also waits for other workers' running trials that it could take over if their
    worker died (RDB heartbeat; journal trials of processes on this host), so a study whose
    worker is killed near the end still completes, with the killed trial retried.
    """
    if opts.jobs > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.jobs))
    existing = len(open_study(spec, opts).get_trials(deepcopy=False))
    study = open_study(spec, opts, offset=1000 * index + existing)
    runner = TrialRunner(spec, opts, parent_run_id, progress, evaluation)
    failures, told = 0, False
    while True:
        # One worker at a time fails stale trials and enqueues retries (no double retries).
        with opts.stores.lock("reconcile", when=opts.stores.embedded):
            retry(lambda: reconcile(study, opts.stores))  # rides out a database or server restart
        trials = study.get_trials(deepcopy=False)
        queued = any(t.state == TrialState.WAITING and not t.user_attrs.get("surplus") for t in trials)
        if sum(1 for t in trials if counts(t)) < opts.target_trials or queued:
            told = False
            try:
                study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=callbacks)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Our trial was failed as stale (no heartbeat for the grace period) and retried.
                print("gan-study: this worker's trial was failed by another worker (missed heartbeats)", file=sys.stderr)
            free_memory()  # an out-of-memory trial leaves the next one a clean device
            outcome_, reason = runner.last or ("FAIL", "failed before it started")
            if outcome_ == "FAIL":
                failures += 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    raise StudyFailed(f"{failures} trials in a row failed on this worker (last: {reason}); fix the cause and run the same command again to continue the study")
            elif outcome_ != "SURPLUS":
                failures = 0
            continue
        others = [t for t in trials if t.state == TrialState.RUNNING and _may_take_over(t, opts.stores)]
        if not others:
            return
        if not told and not opts.quiet:
            wait = f"up to {opts.stores.grace_period} s without a heartbeat" if not opts.stores.embedded else "its process ends"
            print(f"gan-study: waiting for {len(others)} running trial(s) of other workers (a dead worker's trial is retried after {wait})", file=sys.stderr, flush=True)
            told = True
        time.sleep(POLL_SECONDS if opts.stores.embedded else min(POLL_SECONDS, opts.stores.heartbeat_interval))


POLL_SECONDS = 2.0


def _may_take_over(t: FrozenTrial, stores: Stores) -> bool:
    """A RUNNING trial this worker could fail and retry if its worker died: any trial with a
    heartbeat (RDB); on the journal, one whose worker runs on this host (or has not started)."""
    if t.user_attrs.get("surplus"):
        return False
    if not stores.embedded:
        return True
    worker = t.user_attrs.get("worker")
    return worker is None or worker.get("host") == socket.gethostname()


def _worker_entry(spec: StudySpec, opts: RunOptions, parent_run_id: str | None, index: int) -> None:
    import logging

    logging.getLogger("optuna").setLevel(logging.ERROR)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        worker_loop(spec, opts, parent_run_id, index, progress=False)
    except KeyboardInterrupt:
        pass
    except GanStudyError as exc:
        print(f"gan-study: error: worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


@dataclass
class StudyOutcome:
    study_name: str
    trials: int
    complete: int
    pruned: int
    failed: int
    best: dict[str, Any] | None
    seconds: float
    parent_run_id: str


def run_study(spec: StudySpec, opts: RunOptions) -> StudyOutcome:
    """Run (or continue) the study until it has ``opts.target_trials`` trials.

    Nothing is written until the stores answer and the data and evaluator load: bad input
    fails with one line and leaves the stores as they were.
    """
    stores = opts.stores
    stores.check()
    # Before the stores exist: a missing or corrupt dataset fails here, and an evaluator that
    # must be trained is trained once (worker processes then read it from the cache).
    evaluation = load_evaluation(opts.data_dir, resolve_device(opts.device))
    stores.prepare()
    stores.check_tracking()
    study = open_study(spec, opts)
    experiment_id = stores.experiment_id(opts.study_name)
    client = stores.mlflow()
    started = time.time()
    me = worker_identity()
    parent = retry(
        lambda: client.create_run(
            experiment_id,
            run_name=f"invocation-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={
                "gan_study.role": "invocation",
                "optuna.study_name": opts.study_name,
                "gan_study.host": me["host"],
                "gan_study.pid": str(me["pid"]),
                "gan_study.started": me["started"] or "",
            },
        )
    ).info.run_id
    retry(
        lambda: client.log_batch(
            parent,
            params=[
                Param("spec", spec.name),
                Param("sampler", spec.sampler),
                Param("pruner", spec.pruner),
                Param("target_trials", str(opts.target_trials)),
                Param("budget", f"{spec.budget:g} {spec.budget_unit}"),
                Param("repeats", str(spec.repeats)),
                Param("jobs", str(opts.jobs)),
                Param("storage", mask_url(stores.storage_url)),
            ],
        )
    )
    log_artifacts(client, parent, {"spec.yaml": lambda p: p.write_text(_yaml(spec.source))})
    status = "FAILED"
    try:
        if opts.jobs == 1:
            _run_in_process(spec, opts, parent, study, evaluation)
        else:
            _run_processes(spec, opts, parent, study)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        retry(lambda: client.set_terminated(parent, status))
    return outcome(study, started, parent)


def _yaml(source: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(source, sort_keys=False)


def _study_bar(opts: RunOptions, study: optuna.Study):
    from tqdm import tqdm

    return tqdm(total=opts.target_trials, initial=min(counted_trials(study), opts.target_trials), desc=f"study {opts.study_name}", unit="trial", disable=opts.quiet)


def _run_in_process(spec: StudySpec, opts: RunOptions, parent: str, study: optuna.Study, evaluation: Evaluation | None = None) -> None:
    bar = _study_bar(opts, study)

    def tick(study: optuna.Study, trial: Any) -> None:
        bar.n = min(counted_trials(study), opts.target_trials)
        bar.refresh()

    try:
        worker_loop(spec, opts, parent, 0, progress=not opts.quiet, callbacks=[tick], evaluation=evaluation)
    finally:
        bar.close()


def _run_processes(spec: StudySpec, opts: RunOptions, parent: str, study: optuna.Study) -> None:
    import multiprocessing as mp

    # Spawned workers start clean (no forked torch threads or SQLite handles).
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_entry, args=(spec, opts, parent, i), daemon=False) for i in range(opts.jobs)]
    for p in procs:
        p.start()
    bar = _study_bar(opts, study)
    try:
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            bar.n = min(counted_trials(study), opts.target_trials)
            bar.refresh()
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        bar.close()
    for p in procs:
        p.join()
    failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise StudyFailed(f"worker(s) {', '.join(f'{i} (exit code {code})' for i, code in failed)} stopped early; see the messages above, then run the same command again to continue")


def outcome(study: optuna.Study, started: float, parent: str) -> StudyOutcome:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    best = None
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "metrics": b.user_attrs.get("metrics", {})}
    return StudyOutcome(
        study.study_name,
        len(trials),
        states.count(TrialState.COMPLETE),
        states.count(TrialState.PRUNED),
        states.count(TrialState.FAIL),
        best,
        time.time() - started,
        parent,
    )
