"""Run a study: Optuna trials -> ``gan.train`` -> evaluation -> MLflow.

One MLflow experiment per study; one parent run per invocation; one nested run per trial, and
per repeat when a trial trains several seeds. Each worker process loops: reconcile the stores
(stale and failed trials), stop when the study has its trials, else run one more trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from mlflow.entities import Metric, Param, RunTag
from optuna.trial import TrialState

import gan
from gan import metrics as gm
from gan.evaluator import load_evaluator
from gan.losses import realness
from gan.plots import class_histogram, labelled_samples, save_grid
from gan.sampling import generate, interpolation_rows

from .spec import StudySpec
from .tracking import Stores, mask_url, retry

EVAL_SEED = 12345  # noise for evaluation samples: the same for every trial, so metrics compare
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
MAX_CURVE_POINTS = 1000
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call

optuna.logging.set_verbosity(optuna.logging.WARNING)


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
        return optuna.samplers.GridSampler(spec.grid(), seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, warn_independent_sampling=False)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # The first warmup_evals evaluations of every trial never prune it.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=spec.pruner_warmup_evals * spec.eval_every + 1)
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


def counted_trials(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state in COUNTED and not t.user_attrs.get("surplus"))


# -- stale and failed trials --------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile(study: optuna.Study, stores: Stores) -> None:
    """Fail trials whose process died (journal storage), close their MLflow runs, retry once.

    RDB storages find dead workers by Optuna's heartbeat; the journal file has none, so a
    RUNNING trial whose worker process on this host is gone is failed here.
    """
    host = socket.gethostname()
    storage = study._storage
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        worker = t.user_attrs.get("worker", {})
        if (
            t.state == TrialState.RUNNING
            and stores.embedded
            and worker.get("host") == host
            and not _pid_alive(int(worker.get("pid", 0)))
        ):
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    client = None
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("surplus"):
            continue
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id:
            client = client or stores.mlflow()
            for rid in [run_id, *t.user_attrs.get("repeat_run_ids", [])]:
                if retry(lambda: client.get_run(rid)).info.status == "RUNNING":
                    retry(lambda: client.set_tag(rid, "optuna.trial_state", "FAIL"))
                    retry(lambda: client.set_tag(rid, "gan_study.reason", "worker died (killed or crashed)"))
                    retry(lambda: client.set_terminated(rid, "KILLED"))
        if t.number not in retried and "retry_of" not in t.user_attrs and t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            retried.add(t.number)


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
    """Per-step records -> MLflow metrics averaged over windows, sent asynchronously."""

    client: Any
    run_id: str
    window: int
    pending: list = field(default_factory=list)
    operations: list = field(default_factory=list)

    def __call__(self, records: gan.Records) -> None:
        now = int(time.time() * 1000)
        steps = records.steps
        for start in range(0, len(steps), self.window):
            end = min(start + self.window, len(steps))
            for key, values in records.values.items():
                self.pending.append(Metric(key, sum(values[start:end]) / (end - start), now, steps[end - 1]))
        self.pending.append(Metric("images_per_sec", records.images_per_sec, now, steps[-1]))
        self.flush(wait=False)

    def flush(self, wait: bool) -> None:
        while self.pending:
            batch, self.pending = self.pending[:MLFLOW_BATCH], self.pending[MLFLOW_BATCH:]
            self.operations.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))
        if wait:
            for op in self.operations:
                op.wait()
            self.operations.clear()


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

    def __init__(self, spec: StudySpec, opts: RunOptions, parent_run_id: str | None, progress: bool):
        self.spec, self.opts, self.parent_run_id = spec, opts, parent_run_id
        self.client = opts.stores.mlflow()
        self.experiment_id = opts.stores.experiment_id(opts.study_name)
        self.device = gan.TrainConfig(device=opts.device).resolved_device()
        self.evaluation = Evaluation.load(opts.data_dir, self.device)
        self.progress = progress

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
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
        ahead = sum(
            1
            for t in trial.study.get_trials(deepcopy=False)
            if t.number < trial.number and t.state in COUNTED and not t.user_attrs.get("surplus")
        )
        if ahead >= opts.target_trials:  # another worker took the last slot meanwhile
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("surplus: the study already has its trials")
        overrides = self._suggest(trial)
        try:
            base = spec.config_for(overrides, seed=spec.seed, device=opts.device)
        except gan.ConfigError as exc:
            reason = f"invalid combination: {exc}"
            trial.set_user_attr("reason", reason)
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
            self._end_run(run_id, "COMPLETE", "FINISHED")
            return values if spec.multi_objective else values[0]
        except optuna.TrialPruned as exc:
            reason = str(exc) or "pruned"
            trial.set_user_attr("reason", reason)
            for rid in [*repeat_runs, run_id]:
                self._end_run(rid, "PRUNED", "FINISHED", reason)
            raise
        except BaseException as exc:  # noqa: BLE001 - record, then let Optuna mark FAIL
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".strip()
            trial.set_user_attr("reason", reason)
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            for rid in [*repeat_runs, run_id]:
                self._end_run(rid, "FAIL", status, reason)
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
            curves.flush(wait=True)
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
) -> None:
    """Run trials until the study has ``opts.target_trials`` of them (counting other workers')."""
    if opts.jobs > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.jobs))
    existing = len(open_study(spec, opts).get_trials(deepcopy=False))
    study = open_study(spec, opts, offset=1000 * index + existing)
    runner = TrialRunner(spec, opts, parent_run_id, progress)
    while True:
        with _reconcile_lock(opts.stores):
            reconcile(study, opts.stores)
        if counted_trials(study) >= opts.target_trials:
            return
        study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=callbacks)


@contextlib.contextmanager
def _reconcile_lock(stores: Stores):
    """One worker at a time fails stale trials and enqueues retries (no double retries)."""
    if not stores.embedded:
        yield
        return
    import fcntl

    with open(stores.workdir / ".reconcile.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _worker_entry(spec: StudySpec, opts: RunOptions, parent_run_id: str | None, index: int) -> None:
    import logging

    logging.getLogger("optuna").setLevel(logging.ERROR)
    try:
        worker_loop(spec, opts, parent_run_id, index, progress=False)
    except KeyboardInterrupt:
        pass


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
    """Run (or continue) the study until it has ``opts.target_trials`` trials."""
    stores = opts.stores
    stores.prepare()
    stores.check_tracking()
    study = open_study(spec, opts)
    experiment_id = stores.experiment_id(opts.study_name)
    client = stores.mlflow()
    started = time.time()
    parent = retry(
        lambda: client.create_run(
            experiment_id,
            run_name=f"invocation-{time.strftime('%Y%m%d-%H%M%S')}",
            tags={"gan_study.role": "invocation", "optuna.study_name": opts.study_name, "gan_study.host": socket.gethostname()},
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
            _run_in_process(spec, opts, parent, study)
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


def _run_in_process(spec: StudySpec, opts: RunOptions, parent: str, study: optuna.Study) -> None:
    bar = _study_bar(opts, study)

    def tick(study: optuna.Study, trial: Any) -> None:
        bar.n = min(counted_trials(study), opts.target_trials)
        bar.refresh()

    try:
        worker_loop(spec, opts, parent, 0, progress=not opts.quiet, callbacks=[tick])
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
