"""Run a study: the invocation, its workers, and the loop each worker runs.

One MLflow experiment per study and one parent run per invocation (``gan-study run``), which
records the effective spec. Each worker loops: reconcile the stores (stale and failed trials,
see :mod:`study.trials.recovery`), stop when the study has its trials, else run one more trial
(:mod:`study.trials.objective`). ``--jobs N`` runs N such workers as processes.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch
import yaml
from mlflow.entities import Param
from optuna.trial import FrozenTrial, TrialState

from gan.config import resolve_device
from gan.errors import GanStudyError

from ..spec.enqueue import enqueue_once
from .evaluation import Evaluation, load_evaluation
from .interrupt import DEFER_SECONDS, install, last_signal
from ..storage.names import check_name
from .objective import TrialRunner, free_memory
from .preflight import check_limits
from ..storage.record import Tag, TrialRecord
from .progress import Channel, Meter, StudyProgress, is_tty, step
from .recovery import counts, fail_trials_of_this_process, may_take_over, reconcile, worker_identity
from ..storage.registry import register_best
from ..storage.runs import describe_experiment, log_artifacts, source_tags, start_run
from ..spec.samplers import effective_spec, open_study, spec_hash
from ..spec.spec import StudySpec
from ..storage.errors import mask_url
from ..storage.tracking import Stores, retry

__all__ = ["RunOptions", "StudyFailed", "StudyOutcome", "run_study", "worker_loop"]

MAX_CONSECUTIVE_FAILURES = 5  # a worker whose trials keep failing stops instead of burning the study
POLL_SECONDS = 2.0

STOP_GRACE_SECONDS = DEFER_SECONDS
"""How long an interrupted run waits for a worker to stop, before it interrupts it, and again
before it kills it: the store calls' own deadline (study.trials.interrupt.DEFER_SECONDS)."""


class StudyFailed(GanStudyError):
    """A worker stopped because its trials keep failing, or a worker process died."""

    exit_code = 1  # a runtime failure, not bad input


@dataclass(frozen=True)
class RunOptions:
    stores: Stores
    study_name: str
    device: str = "auto"
    jobs: int = 1
    quiet: bool = False
    data_dir: str | None = None
    target_trials: int = 10

    def __post_init__(self) -> None:
        check_name(self.study_name)  # a path and a store key: library callers get the CLI's rule


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
    enqueued: int = 0
    """Configurations of the spec's ``enqueue:`` added to the study by this invocation."""
    registered: str | None = None
    """The model registry version of the best generator registered by this invocation."""
    ran: int = 0
    """Trials this invocation ran to an end (complete, pruned or failed; surplus ones not)."""
    ran_failed: int = 0
    """Of those, the failed ones."""
    last_failure: str | None = None
    """Why the last of them that failed did."""
    workers: int = 1
    """Worker processes this invocation ran: ``jobs``, or fewer when fewer trials were left."""


def _quiet_libraries() -> None:
    """Failed trials are reported by the runner in one line (their tracebacks go to MLflow);
    MLflow announces schema migrations at INFO."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def worker_loop(
    spec: StudySpec,
    opts: RunOptions,
    parent_run_id: str | None,
    index: int,
    progress: bool,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
    evaluation: Evaluation | None = None,
    meter: Meter | None = None,
) -> None:
    """Run trials until the study has ``opts.target_trials`` of them (counting other workers').

    A worker also waits for other workers' running trials that it could take over if their
    worker died (RDB heartbeat; journal trials of processes on this host), so a study whose
    worker is killed near the end still completes, with the killed trial retried. ``meter``:
    where this worker's training goes for the invocation's progress (:mod:`study.trials.progress`).
    """
    meter = meter or Meter()
    if opts.jobs > 1:  # share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // opts.jobs))
    storage = opts.stores.optuna_storage()
    existing = len(open_study(spec, opts.study_name, storage).get_trials(deepcopy=False))
    study = open_study(spec, opts.study_name, storage, offset=1000 * index + existing)
    runner = TrialRunner(spec, opts.stores, opts.study_name, target_trials=opts.target_trials, device=opts.device,
                         data_dir=opts.data_dir, parent_run_id=parent_run_id, progress=progress, evaluation=evaluation,
                         storage=storage, meter=meter)
    finished: list[FrozenTrial] = []
    failures, told = 0, False
    try:
        while True:
            # One worker at a time fails stale trials and enqueues retries (no double retries).
            with opts.stores.lock("reconcile", when=opts.stores.embedded):
                retry(lambda: reconcile(study, storage, opts.stores))  # rides out a database or server restart
            trials = study.get_trials(deepcopy=False)
            queued = any(t.state == TrialState.WAITING and not TrialRecord.from_trial(t).surplus for t in trials)
            if sum(1 for t in trials if counts(t)) < opts.target_trials or queued:
                told = False
                finished.clear()
                try:
                    study.optimize(runner, n_trials=1, catch=(Exception,), callbacks=[*(callbacks or []), lambda s, t: finished.append(t)])
                except optuna.exceptions.UpdateFinishedTrialError:
                    # Our trial was failed as stale (no heartbeat for the grace period) and retried.
                    print("gan-study: this worker's trial was failed by another worker (missed heartbeats)", file=sys.stderr)
                finally:
                    meter.end()  # the cohort's outcome is in the storage now
                free_memory()  # an out-of-memory trial leaves the next one a clean device
                if runner.stop is not None:  # a full disk or read-only folder: every next trial would fail alike
                    raise runner.stop
                last = finished[-1] if finished else None
                if last is None or last.state == TrialState.FAIL:
                    failures += 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        reason = (TrialRecord.from_trial(last).reason if last else None) or "failed before it started"
                        raise StudyFailed(f"{failures} trials in a row failed on this worker (last: {reason}); fix the cause and run the same command again to continue the study")
                elif not TrialRecord.from_trial(last).surplus:
                    failures = 0
                continue
            others = [t for t in trials if t.state == TrialState.RUNNING and may_take_over(t, opts.stores)]
            if not others:
                return
            if not told and not opts.quiet:
                wait = f"up to {opts.stores.grace_period} s without a heartbeat" if opts.stores.heartbeats else "its process ends"
                print(f"gan-study: waiting for {len(others)} running trial(s) of other workers (a dead worker's trial is retried after {wait})", file=sys.stderr, flush=True)
                told = True
            time.sleep(min(POLL_SECONDS, opts.stores.heartbeat_interval) if opts.stores.heartbeats else POLL_SECONDS)
    except KeyboardInterrupt:
        # However early in a trial the signal came, the trial is failed now with its reason.
        fail_trials_of_this_process(study, storage)
        raise


def _worker_entry(spec: StudySpec, opts: RunOptions, parent_run_id: str | None, index: int, channel: Channel | None = None) -> None:
    _quiet_libraries()
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # as the CLI: a file-size limit is an error, not a kill
    install(signal.SIGINT)  # as the CLI: Ctrl-C never cuts a store write in half
    try:
        worker_loop(spec, opts, parent_run_id, index, progress=False, meter=channel.meter(index) if channel else None)
    except KeyboardInterrupt:
        pass
    except GanStudyError as exc:
        print(f"gan-study: error: worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(3)


def run_study(spec: StudySpec, opts: RunOptions) -> StudyOutcome:
    """Run (or continue) the study until it has ``opts.target_trials`` trials.

    Nothing is written until the stores answer and the data and evaluator load: bad input
    fails with one line and leaves the stores as they were.
    """
    _quiet_libraries()
    # Before anything: --jobs and the training's memory against this machine (study.spec.limits).
    check_limits(spec, opts.jobs, resolve_device(opts.device))
    stores = opts.stores
    stores.check()
    stores.check_artifacts(opts.study_name)
    # Before the stores exist: a missing or corrupt dataset fails here, and an evaluator that
    # must be trained is trained once (worker processes then read it from the cache).
    evaluation = load_evaluation(opts.data_dir, resolve_device(opts.device), spec.evaluator)
    stores.prepare()
    stores.check_tracking()
    study = open_study(spec, opts.study_name, stores.optuna_storage())
    enqueued = enqueue_once(study, spec, stores)
    workers = workers_for(study, spec, opts)
    if workers < opts.jobs and not opts.quiet:
        each = f", {spec.trials_at_once} to a worker" if spec.trials_at_once > 1 else ""
        print(f"gan-study: {workers} worker{'s' if workers > 1 else ''} for --jobs {opts.jobs}: "
              f"the study has {trials_left(study, opts.target_trials)} trial(s) left{each}", file=sys.stderr, flush=True)
    opts = dataclasses.replace(opts, jobs=workers)
    experiment_id = stores.experiment_id(opts.study_name)
    client = stores.mlflow()
    effective = effective_spec(spec)
    describe_experiment(client, experiment_id, spec.description, yaml.safe_dump(effective, sort_keys=False))
    started = time.time()
    me = worker_identity()
    tags = {
        Tag.ROLE: "invocation", Tag.STUDY_NAME: opts.study_name, Tag.HOST: me["host"], Tag.PID: str(me["pid"]),
        Tag.STARTED: me["started"] or "", Tag.SPEC_HASH: spec_hash(effective),
        **source_tags(f"gan-study run {spec.name}"),
    }
    parent = start_run(client, experiment_id, f"invocation-{time.strftime('%Y%m%d-%H%M%S')}", tags)
    params = {"spec": spec.name, "sampler": spec.sampler, "pruner": spec.pruner, "target_trials": opts.target_trials,
              "budget": f"{spec.budget:g} {spec.budget_unit}", "repeats": spec.repeats, "jobs": opts.jobs,
              "storage": mask_url(stores.storage_url), "spec_hash": spec_hash(effective)}
    retry(lambda: client.log_batch(parent, params=[Param(k, str(v)) for k, v in params.items()]))
    status = "FAILED"
    try:
        log_artifacts(client, parent, {"spec.yaml": lambda p: p.write_text(yaml.safe_dump(effective, sort_keys=False))})
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
    result = outcome(study, started, parent)
    result.enqueued, result.workers = enqueued, workers
    try:
        with step("registering the best generator in the MLflow model registry"):
            result.registered = register_best(study, stores, parent)
    except Exception as exc:  # noqa: BLE001 - the study itself is done; say why the model is not in the registry
        print(f"gan-study: warning: the best generator was not registered: {mask_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)}",
              file=sys.stderr, flush=True)
    return result


def _run_in_process(spec: StudySpec, opts: RunOptions, parent: str, study: optuna.Study, evaluation: Evaluation | None = None) -> None:
    channel = Channel(1)
    progress = StudyProgress(study, opts.target_trials, channel, quiet=opts.quiet)
    try:
        with progress.polling():  # a thread reads the storage (the parent's own handle) and the channel
            worker_loop(spec, opts, parent, 0, progress=not opts.quiet and is_tty(), evaluation=evaluation, meter=channel.meter(0))
    finally:
        progress.close()


def _run_processes(spec: StudySpec, opts: RunOptions, parent: str, study: optuna.Study) -> None:
    import multiprocessing as mp

    # Spawned workers start clean (no forked torch threads or SQLite handles).
    ctx = mp.get_context("spawn")
    channel = Channel(opts.jobs, ctx)  # each worker adds its training to its slot; the storage has the trials
    procs = [ctx.Process(target=_worker_entry, args=(spec, opts, parent, i, channel), daemon=False) for i in range(opts.jobs)]
    for p in procs:
        p.start()
    progress = StudyProgress(study, opts.target_trials, channel, quiet=opts.quiet)
    try:
        progress.poll()
        while any(p.is_alive() for p in procs):
            time.sleep(1.0)
            progress.poll()
    except KeyboardInterrupt:
        _stop_workers(procs)
        raise
    finally:
        progress.close()
    for p in procs:
        p.join()
    failed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode]
    if failed:
        raise StudyFailed(f"worker(s) {', '.join(f'{i} (exit code {code})' for i, code in failed)} stopped early; see the messages above, then run the same command again to continue")


def _stop_workers(procs: list) -> None:
    """Stop the workers of an interrupted run, each as its own Ctrl-C would (its trial marked
    failed in both stores), killing only one that has not ended a grace period later.

    Ctrl-C at a terminal reaches the workers too (one process group); SIGTERM from ``kill`` or a
    scheduler reaches this process alone, and the workers would train on for the rest of their
    trials while this process waited for them. Each stray gets one SIGINT: a second one could cut
    the failure record of a worker that is already stopping."""
    if last_signal() != signal.SIGTERM:  # the terminal's Ctrl-C: give them time to stop on their own
        _join_all(procs, STOP_GRACE_SECONDS)
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGINT)
    _join_all(procs, STOP_GRACE_SECONDS)
    for p in procs:
        if p.is_alive():  # stuck past the store calls' own deadline: its trial is recovered as a dead worker's
            p.kill()
            p.join()


def _join_all(procs: list, seconds: float) -> None:
    """Wait for the workers together: one grace period for all, not one per worker."""
    deadline = time.monotonic() + seconds
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))


def trials_left(study: optuna.Study, target_trials: int) -> int:
    """Trials still to run: the free slots and the queued trials (as ``study.trials.slots.companions``)."""
    trials = study.get_trials(deepcopy=False)
    free = target_trials - sum(1 for t in trials if counts(t))
    queued = sum(1 for t in trials if t.state == TrialState.WAITING and not TrialRecord.from_trial(t).surplus)
    return max(0, free) + queued


def workers_for(study: optuna.Study, spec: StudySpec, opts: RunOptions) -> int:
    """``--jobs``, but never more workers than the trials left need (each trains
    ``spec.trials_at_once`` of them together); at least one, which reconciles and waits for others."""
    return max(1, min(opts.jobs, math.ceil(trials_left(study, opts.target_trials) / spec.trials_at_once)))


def outcome(study: optuna.Study, started: float, parent: str) -> StudyOutcome:
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    best = None
    if TrialState.COMPLETE in states and len(study.directions) == 1:
        b = study.best_trial
        best = {"number": b.number, "value": b.value, "params": b.params, "metrics": TrialRecord.from_trial(b).metrics}
    result = StudyOutcome(study.study_name, len(trials), states.count(TrialState.COMPLETE), states.count(TrialState.PRUNED),
                          states.count(TrialState.FAIL), best, time.time() - started, parent)
    ours = [(t, r) for t in trials if t.state.is_finished() and (r := TrialRecord.from_trial(t)).invocation == parent and not r.surplus]
    failed = [(t, r) for t, r in ours if t.state == TrialState.FAIL]
    result.ran, result.ran_failed = len(ours), len(failed)
    result.last_failure = failed[-1][1].reason if failed else None
    return result
