"""Writing to MLflow: runs with their standard source tags, curves, metrics and artifacts.

Curves are sent in large blocking batches (at each evaluation, at the end, and at least every
``FLUSH_SECONDS``), not through MLflow's asynchronous logging per records block: its background
thread took ~20 % of a CPU trial's training time, where one batch costs ~0.1 ms per point
(benchmarks.throughput).
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

import gan

from . import record
from .record import Tag
from .faults import write_failure
from .tracking import creation_race, retry

__all__ = ["CurveLogger", "RunEnd", "TrialRuns", "describe_experiment", "end_run", "log_artifacts", "log_metrics", "run_name", "source_tags", "start_run"]

MAX_RUN_NAME = 120  # readable in the MLflow UI's run list (MLflow itself allows 250)
MAX_EXPERIMENT_TAG = 20_000  # MLflow refuses a longer experiment tag value (the seeds spec with its claims is ~60k)
SPEC_CUT = "# ... the rest: artifact spec.yaml of the study's parent run\n"
MLFLOW_BATCH = 1000  # MLflow's limit of metrics per log_batch call
FLUSH_SECONDS = 30.0  # the longest the curves in MLflow lag behind training between evaluations
REPO = Path(__file__).resolve().parents[2]


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout gan-study runs from (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


@contextlib.contextmanager
def fluent_mlflow(uri: str) -> Iterator[Any]:
    """MLflow's fluent API (``mlflow.pytorch``) on ``uri`` for the block, then MLflow's global
    URIs and ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` as they were: ``set_tracking_uri``
    exports the variable, and every later CLI run and subprocess of this process would inherit
    another study's store from it."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])  # None unsets it
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def source_tags(command: str) -> dict[str, str]:
    """MLflow's standard source tags, as MLflow itself sets them for a local script."""
    tags = {Tag.SOURCE_NAME: command, Tag.SOURCE_TYPE: "LOCAL"}
    try:
        tags[Tag.USER] = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        pass
    commit = git_commit()
    if commit:
        tags[Tag.GIT_COMMIT] = commit
    return tags


def run_name(number: int, params: dict[str, Any]) -> str:
    """A readable trial run name: ``trial-7 lr_g=5e-04 optimizer=rmsprop`` (sampled values only)."""
    parts = [f"trial-{number}"]
    for key, value in params.items():
        if key == "point":  # a sweep point's label is already 'factor=value'
            parts.append(str(value))
        elif isinstance(value, float):
            shown = f"{value:.1e}".replace(".0e", "e").replace("e-0", "e-") if value and abs(value) < 1e-2 else f"{value:.3g}"
            parts.append(f"{key}={shown}")
        else:
            parts.append(f"{key}={value}")
    name = " ".join(parts)
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 3] + "..."


def describe_experiment(client, experiment_id: str, description: str, spec_yaml: str) -> None:
    """Tags that make the MLflow UI fit a study: it opens on the training runs, and the
    experiment's page shows the study's description and spec."""
    head = (description.strip() + "\n\n" if description.strip() else "") + "Spec:\n\n```yaml\n"
    cut = MAX_EXPERIMENT_TAG - len(head) - len(SPEC_CUT) - 4
    shown = spec_yaml if len(spec_yaml) <= cut else spec_yaml[:cut].rsplit("\n", 1)[0] + "\n" + SPEC_CUT
    note = head + shown + "```\n"
    for key, value in ((Tag.EXPERIMENT_KIND, "custom_model_development"), (Tag.NOTE, note), (Tag.SPEC, spec_yaml[:5000])):
        # Workers starting together set the same tags: on a tracking server backed by PostgreSQL
        # the loser's INSERT fails on the winner's row ("duplicate key"); set again, it updates.
        retry(lambda: client.set_experiment_tag(experiment_id, key, value), transient=creation_race)


def start_run(client, experiment_id: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
    all_tags = {**tags, **({Tag.PARENT: parent} if parent else {})}
    return retry(lambda: client.create_run(experiment_id, run_name=name, tags=all_tags)).info.run_id


class RunEnd(Enum):
    """How a trial's MLflow run ends: the Optuna state it is tagged with, and MLflow's status."""

    COMPLETE = ("COMPLETE", "FINISHED")
    PRUNED = ("PRUNED", "FINISHED")
    FAILED = ("FAIL", "FAILED")
    KILLED = ("FAIL", "KILLED")  # interrupted (Ctrl-C, SIGTERM)


def end_run(client, run_id: str, end: RunEnd, reason: str | None = None) -> None:
    """Tag the run with its Optuna state (and why), then end it with its MLflow status."""
    state, status = end.value
    tags = [RunTag(Tag.TRIAL_STATE, state)]
    if reason:
        tags.append(RunTag(Tag.REASON, reason[:5000]))
    retry(lambda: client.log_batch(run_id, tags=tags))
    retry(lambda: client.set_terminated(run_id, status))


@dataclass
class TrialRuns:
    """A trial's MLflow runs: its own first, then one per repeat when it trains several seeds;
    the trial's record (Optuna) keeps their ids."""

    client: Any
    experiment_id: str
    parent: str | None  # the invocation's run
    ids: list[str] = field(default_factory=list)

    def open(self, trial: Any, tags: dict[str, str], params: list[Param]) -> str:
        """The trial's own run, with its tags and parameters."""
        run_id = start_run(self.client, self.experiment_id, run_name(trial.number, trial.params), tags, self.parent)
        self.ids.append(run_id)
        record.write(trial, mlflow_run_id=run_id)
        retry(lambda: self.client.log_batch(run_id, params=params))
        return run_id

    def open_repeat(self, trial: Any, cfg: gan.TrainConfig, r: int, tags: dict[str, str]) -> str:
        """A run for repeat ``r`` under the trial's run."""
        target = start_run(self.client, self.experiment_id, f"trial-{trial.number}-seed-{cfg.seed}",
                           {**tags, Tag.ROLE: "repeat", Tag.CURVES: "true", Tag.REPEAT: str(r)}, self.ids[0])
        self.ids.append(target)
        record.write(trial, repeat_run_ids=self.ids[1:])
        retry(lambda: self.client.log_batch(target, params=[Param(k, str(v)) for k, v in cfg.to_dict().items()]))
        return target

    def end(self, end: RunEnd, reason: str | None = None) -> None:
        for rid in self.ids:
            end_run(self.client, rid, end, reason)

    def end_failed(self, end: RunEnd, reason: str) -> bool:
        """End every run of a failed trial; False where a store call failed (the next worker's
        reconcile closes those runs)."""
        ended = True
        for rid in self.ids:
            try:
                end_run(self.client, rid, end, reason)
            except Exception:  # noqa: BLE001 - the others still end
                ended = False
        return ended


@dataclass
class CurveLogger:
    """Per-step records -> MLflow metrics averaged over windows of ``window`` steps."""

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
            try:
                local.parent.mkdir(parents=True, exist_ok=True)
                write(local)
            except Exception as exc:
                raise write_failure(exc, f"the artifact {rel} in the temporary folder {tmp}") or exc
            parent = str(Path(rel).parent)
            try:
                retry(lambda: client.log_artifact(run_id, str(local), None if parent == "." else parent))
            except Exception as exc:
                raise write_failure(exc, f"the artifact {rel} of MLflow run {run_id} into its artifact store") or exc
