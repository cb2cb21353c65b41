"""What a study stores, in one place: the trial record (Optuna user attributes), the study's
own attributes, and the MLflow tag names.

The objective writes a trial's record field by field as the trial goes (its worker first, its
metrics last) through :func:`write`; ``status`` and the reports read it back with
:meth:`TrialRecord.from_trial`. A misspelled field is a ``TypeError`` here, not a silent empty
column in a report.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial

__all__ = ["PICTURES", "StudyAttrs", "Tag", "TrialRecord", "attrs", "write"]

PICTURES = "final/pictures.npz"
"""Per trial run: the images behind the reports' per-value strips, as uint8 arrays with the
evaluator's predicted digits, so a report draws them without torch or a checkpoint."""


@dataclass
class TrialRecord:
    """A trial's user attributes in Optuna; every field's name is its attribute key."""

    worker: dict[str, Any] | None = None
    """host, pid and process start time of the worker that runs (or ran) the trial."""
    config: dict[str, Any] = field(default_factory=dict)
    """The full ``gan.TrainConfig`` of the first repeat (``TrainConfig.to_dict``)."""
    mlflow_run_id: str | None = None
    repeat_run_ids: list[str] = field(default_factory=list)
    """MLflow runs of the repeats, in repeat order (empty for a single seed)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final metrics, the mean over repeats."""
    metrics_sd: dict[str, Any] = field(default_factory=dict)
    repeat_metrics: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    """Why the trial was pruned or failed (or given up as surplus)."""
    sweep: dict[str, str] | None = None
    """point, factor and value of a sweep trial."""
    retry_of: int | None = None
    """The number of the failed trial whose configuration this trial runs again."""
    surplus: bool = False
    """Given up before training: the study already had its trials, or its point ran elsewhere."""
    evaluator: dict[str, Any] | None = None
    """The card of the evaluator that scored the trial (weights hash, test accuracy, ...)."""
    invocation: str | None = None
    """The MLflow run id of the invocation that ran the trial (its effective spec is there)."""
    population: int | None = None
    """Runs trained at once in the population (``gan.train_population``) of the trial's first
    repeat, other trials' runs included; 1: it trained alone."""
    write_failed: bool = False
    """Failed because a file could not be written (a full disk, a read-only folder), no fault of
    its configuration: the failure never takes a slot, and the configuration runs again."""

    @classmethod
    def from_trial(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in dataclasses.fields(cls) if attrs.get(f.name) is not None})

    @property
    def checkpoint_run_id(self) -> str | None:
        """The MLflow run that holds the trial's generator (``checkpoint/checkpoint.pt``): the
        first repeat's when the trial trains several seeds, else the trial's own run."""
        return self.repeat_run_ids[0] if self.repeat_run_ids else self.mlflow_run_id

    @property
    def curve_runs(self) -> list[tuple[str, int]]:
        """(MLflow run id, repeat index) of the runs that hold the per-step curves."""
        if self.repeat_run_ids:
            return [(rid, i) for i, rid in enumerate(self.repeat_run_ids)]
        return [(self.mlflow_run_id, 0)] if self.mlflow_run_id else []


_FIELDS = frozenset(f.name for f in dataclasses.fields(TrialRecord))


def attrs(**values: Any) -> dict[str, Any]:
    """Record fields as Optuna user attributes; a name that is no field raises ``TypeError``."""
    unknown = sorted(set(values) - _FIELDS)
    if unknown:
        raise TypeError(f"not fields of TrialRecord: {unknown}")
    return values


def write(trial: optuna.Trial, **values: Any) -> None:
    """Set fields of ``trial``'s record (Optuna user attributes)."""
    for name, value in attrs(**values).items():
        trial.set_user_attr(name, value)


class StudyAttrs:
    """Keys of the study's own user attributes."""

    SPEC = "spec"
    """The spec as first run (a mapping): later runs must match it."""
    SPEC_HASH = "spec_hash"
    OBJECTIVES = "objectives"
    SWEEP_BASELINE_VALUES = "sweep_baseline_values"
    REPEATS = "repeats"
    ENQUEUED = "enqueued"
    """How many of the spec's ``enqueue:`` configurations were enqueued (set once, after them)."""
    REGISTERED_VERSION = "registered_model_version"
    """The MLflow model registry version of the best trial's generator, registered by ``run``."""


class Tag:
    """MLflow tag names of gan-study's runs (``mlflow.*`` ones are MLflow's standard tags)."""

    ROLE = "gan_study.role"
    """'invocation' (one per ``gan-study run``), 'trial', or 'repeat' (one seed of a trial)."""
    REASON = "gan_study.reason"
    HOST = "gan_study.host"
    PID = "gan_study.pid"
    STARTED = "gan_study.started"
    SWEEP_POINT = "gan_study.sweep_point"
    SWEEP_FACTOR = "gan_study.sweep_factor"
    SWEEP_VALUE = "gan_study.sweep_value"
    CURVES = "gan_study.curves"
    """'true' on the runs that hold per-step curves (the trial's, or each repeat's)."""
    REPEAT = "gan_study.repeat"
    SPEC_HASH = "gan_study.spec_hash"
    EVALUATOR_HASH = "gan_study.evaluator_hash"
    STUDY_NAME = "optuna.study_name"
    TRIAL_NUMBER = "optuna.trial_number"
    TRIAL_STATE = "optuna.trial_state"
    PARENT = "mlflow.parentRunId"
    SOURCE_NAME = "mlflow.source.name"
    SOURCE_TYPE = "mlflow.source.type"
    GIT_COMMIT = "mlflow.source.git.commit"
    USER = "mlflow.user"
    EXPERIMENT_KIND = "mlflow.experimentKind"
    """'custom_model_development': the MLflow UI opens the experiment on its training runs."""
    NOTE = "mlflow.note.content"
    """The description shown on an experiment's (or run's) page in the MLflow UI."""
    SPEC = "gan_study.spec"
    """The effective spec as YAML (experiment tag)."""
    BEST_TRIAL = "gan_study.best_trial"
