"""Trials whose worker died, and the study's trial slots.

A trial whose worker died (kill -9, power loss) is failed by the next worker that looks --
through Optuna's heartbeat on RDB storages, through the worker's process id on the embedded
journal -- its MLflow runs are closed as KILLED and its configuration is retried once. A failed
retry is final and takes the trial's slot, so a study (and a grid) always ends.

A trial that failed to write a file (a full disk) is retried again however often, and never
takes a slot: its configuration did nothing wrong, and each run stops at the first such failure.

A failed trial's reason is always written before its state, so no reader sees a failure
without its reason.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import optuna
from mlflow.entities import RunTag
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..storage.compat import stale_trial_ids
from ..storage import record
from ..storage.record import Tag, TrialRecord
from ..storage.tracking import Stores, retry

__all__ = ["counted_trials", "counts", "fail_trials_of_this_process", "reconcile", "will_retry", "worker_identity"]

WORKER_DIED = "worker died (killed or crashed) while running the trial"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
UNCLAIMED_SECONDS = 600  # a journal trial with no worker recorded this long after its start is dead
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def will_retry(t: FrozenTrial) -> bool:
    """A failed trial whose configuration runs once more (an original failure, not a retry)."""
    record = TrialRecord.from_trial(t)
    return (t.state == TrialState.FAIL and bool(t.params) and (record.retry_of is None or record.write_failed)
            and not record.surplus)


def counts(t: FrozenTrial) -> bool:
    """Whether a trial takes one of the study's trial slots.

    Finished, running and queued trials do; a failure does once it is final (a failed retry):
    a failure that will be retried leaves its slot to the retry.
    """
    record = TrialRecord.from_trial(t)
    if record.surplus:
        return False
    if t.state in COUNTED:
        return True
    return t.state == TrialState.FAIL and record.retry_of is not None and not record.write_failed


def counted_trials(study: optuna.Study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counts(t))


# -- process liveness ---------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of process ``pid`` from /proc (Linux); None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> dict[str, Any]:
    """host, pid and start time of this process: the start time tells a reused pid apart."""
    pid = os.getpid()
    stat = _proc_stat(pid)
    return {"host": socket.gethostname(), "pid": pid, "started": stat[1] if stat else None}


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


def dead_here(worker: dict[str, Any] | None) -> bool:
    return bool(worker) and worker.get("host") == socket.gethostname() and not _alive(worker)


def may_take_over(t: FrozenTrial, stores: Stores) -> bool:
    """A RUNNING trial this worker could fail and retry if its worker died: any trial with a
    heartbeat (RDB); on the journal and the gRPC proxy, one whose worker runs on this host (or has
    not started)."""
    record = TrialRecord.from_trial(t)
    if record.surplus:
        return False
    if stores.heartbeats:
        return True
    return record.worker is None or record.worker.get("host") == socket.gethostname()


# -- stale and failed trials --------------------------------------------------------------------
def _trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name), number)


def stale_trials(study: optuna.Study, storage: BaseStorage, stores: Stores, trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """RUNNING trials whose worker is gone.

    RDB storages: Optuna's heartbeat (no sign of life for ``stores.grace_period`` seconds),
    which works across machines. The journal file and the gRPC proxy have no heartbeat: a trial
    whose worker process on this host is gone (or that never got a worker in ``UNCLAIMED_SECONDS``).
    """
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if not running:
        return []
    if stores.heartbeats:
        stale = stale_trial_ids(storage, storage.get_study_id_from_name(study.study_name))
        return [t for t in running if _trial_id(storage, study, t.number) in stale]
    now = time.time()
    out = []
    for t in running:
        worker = TrialRecord.from_trial(t).worker
        if worker is None:
            started = t.datetime_start.timestamp() if t.datetime_start else now
            if now - started > UNCLAIMED_SECONDS:
                out.append(t)
        elif dead_here(worker):
            out.append(t)
    return out


def fail_trial(storage: BaseStorage, study: optuna.Study, t: FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial failed, its reason first; False if it had already finished."""
    trial_id = _trial_id(storage, study, t.number)
    try:
        for key, value in record.attrs(reason=reason).items():
            storage.set_trial_user_attr(trial_id, key, value)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker (or the trial) was first
        return False
    return True


def reconcile(study: optuna.Study, storage: BaseStorage, stores: Stores) -> None:
    """Fail trials whose worker died, close MLflow runs left RUNNING, retry failed configs once."""
    trials = study.get_trials(deepcopy=False)
    changed = False
    for t in stale_trials(study, storage, stores, trials):
        changed |= fail_trial(storage, study, t, WORKER_DIED)
    if changed:
        trials = study.get_trials(deepcopy=False)
    close_abandoned_runs(study.study_name, stores, trials)
    retried = {TrialRecord.from_trial(t).retry_of for t in trials}
    for t in trials:
        if will_retry(t) and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs=record.attrs(retry_of=t.number))
            retried.add(t.number)


def fail_trials_of_this_process(study: optuna.Study, storage: BaseStorage) -> None:
    """On Ctrl-C or SIGTERM: trials this process still runs are failed now, with their reason,
    however early in the trial the signal came (before the objective could record it)."""
    me = worker_identity()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = TrialRecord.from_trial(t).worker or {}
        if worker.get("host") == me["host"] and worker.get("pid") == me["pid"]:
            fail_trial(storage, study, t, INTERRUPTED)


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
        if tags.get(Tag.ROLE) == "invocation":
            worker = {"host": tags.get(Tag.HOST), "pid": tags.get(Tag.PID), "started": tags.get(Tag.STARTED) or None}
            if worker["pid"] and dead_here(worker):
                retry(lambda: client.set_tag(rid, Tag.REASON, "the invocation's process died (killed or crashed)"))
                retry(lambda: client.set_terminated(rid, "KILLED"))
            continue
        number = tags.get(Tag.TRIAL_NUMBER)
        t = by_number.get(int(number)) if number and number.isdigit() else None
        if t is None or not t.state.is_finished():
            continue
        reason = TrialRecord.from_trial(t).reason or WORKER_DIED
        retry(lambda: client.log_batch(rid, tags=[RunTag(Tag.TRIAL_STATE, t.state.name), RunTag(Tag.REASON, reason[:5000])]))
        retry(lambda: client.set_terminated(rid, "KILLED" if t.state == TrialState.FAIL else "FINISHED"))
