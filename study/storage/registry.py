"""Using a study's result: the best trial's generator in the MLflow model registry, and the
generator of any trial for ``gan-study sample``.

On completion of ``run``, the best trial's generator (rebuilt from its ``checkpoint/checkpoint.pt``
artifact; its first repeat's when it trains several seeds) is logged with ``mlflow.pytorch`` in the invocation's run and registered under the
study's name, the version tagged with the trial's number, run and metrics and described by its
config. A study whose best trial is already the latest version is not registered again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import gan
from gan.errors import GanStudyError

from .best import best_of
from .record import StudyAttrs, Tag, TrialRecord
from .runs import fluent_mlflow
from .tracking import Stores, retry

__all__ = ["NoTrialError", "best_trial", "load_generator", "register_best"]

CHECKPOINT = "checkpoint/checkpoint.pt"


class NoTrialError(GanStudyError):
    """The study has no (such) completed trial with a generator to use."""


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The best complete trial (:func:`study.storage.best.best_of`); None when no trial completed."""
    return best_of(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), study.directions)


def _checkpoint_generator(stores: Stores, run_id: str, folder: Path) -> torch.nn.Module:
    local = retry(lambda: stores.mlflow().download_artifacts(run_id, CHECKPOINT, str(folder)))
    return gan.load_checkpoint(local).generator


def register_best(study: optuna.Study, stores: Stores, parent_run_id: str) -> str | None:
    """Register the best trial's generator under the study's name; the version, or None when
    there is no complete trial or the best is already registered."""
    best = best_trial(study)
    if best is None:
        return None
    rec = TrialRecord.from_trial(best)
    if not rec.checkpoint_run_id:
        return None
    # Invocations ending together on one work folder take turns: one version per best trial.
    with stores.lock("register", when=stores.embedded):
        return _register(study, stores, parent_run_id, best, rec)


def _register(study: optuna.Study, stores: Stores, parent_run_id: str, best: FrozenTrial, rec: TrialRecord) -> str | None:
    import mlflow
    import mlflow.pytorch

    client, name = stores.mlflow(), study.study_name
    with contextlib.suppress(Exception):
        versions = client.search_model_versions(f"name='{name}'", max_results=1, order_by=["version_number DESC"])
        if versions and versions[0].tags.get(Tag.BEST_TRIAL) == str(best.number):
            return None
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)  # the pickle-format caution: our own model
    with tempfile.TemporaryDirectory() as tmp:
        generator = _checkpoint_generator(stores, rec.checkpoint_run_id, Path(tmp))
    metrics = {k: v for k, v in rec.metrics.items() if isinstance(v, (int, float))}
    tags = {Tag.BEST_TRIAL: str(best.number), Tag.STUDY_NAME: name, "gan_study.trial_run_id": rec.mlflow_run_id,
            **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
    description = (f"Generator of trial {best.number} (value {best.values}). Config:\n\n```json\n"
                   f"{json.dumps(rec.config, indent=2)}\n```")
    # The whole block on the fluent URI: MLflow's registry stores look a version's logged model
    # up through the *global* tracking URI (MlflowClient()), not the client's own.
    with fluent_mlflow(stores.tracking_uri):
        with warnings.catch_warnings(), mlflow.start_run(run_id=parent_run_id):
            warnings.simplefilter("ignore")  # no signature: a generator takes latent vectors
            info = mlflow.pytorch.log_model(generator, name="best-generator", serialization_format="pickle",
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "gan-study"],
                                            params={k: str(v) for k, v in rec.config.items()}, tags={Tag.BEST_TRIAL: str(best.number)})
        with contextlib.suppress(Exception):  # another invocation created it first
            client.create_registered_model(name, description=f"Best generators of the gan-study study {name!r}")
        version = retry(lambda: client.create_model_version(name, source=info.model_uri, run_id=rec.checkpoint_run_id, tags=tags,
                                                             description=description, model_id=info.model_id))
    study.set_user_attr(StudyAttrs.REGISTERED_VERSION, int(version.version))
    return str(version.version)


def load_generator(study: optuna.Study, stores: Stores, number: int | None) -> tuple[FrozenTrial, torch.nn.Module, str]:
    """The trial (``number``, else the best) and its generator, from the model registry where it
    holds that trial, else from the trial's checkpoint artifact; and where it came from."""
    if number is None:
        trial = best_trial(study)
        if trial is None:
            raise NoTrialError(f"study {study.study_name!r} has no complete trial yet: run it, or name a trial with --trial N")
    else:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        if number not in trials:
            raise NoTrialError(f"study {study.study_name!r} has no trial {number}: trials are 0-{len(trials) - 1} (see 'gan-study status')")
        trial = trials[number]
        if trial.state != TrialState.COMPLETE:
            raise NoTrialError(f"trial {number} of study {study.study_name!r} is {trial.state.name}, not COMPLETE: it has no final generator")
    client = stores.mlflow()
    with contextlib.suppress(Exception):
        for v in client.search_model_versions(f"name='{study.study_name}'", order_by=["version_number DESC"]):
            if v.tags.get(Tag.BEST_TRIAL) == str(trial.number):
                uri = f"models:/{study.study_name}/{v.version}"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = _load_registered(stores, uri)
                return trial, model, f"registered model {uri}"
    run_id = TrialRecord.from_trial(trial).checkpoint_run_id
    if not run_id:
        raise NoTrialError(f"trial {trial.number} has no MLflow run, so no checkpoint: choose another with --trial N")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            generator = _checkpoint_generator(stores, run_id, Path(tmp))
        except gan.CheckpointError:
            raise
        except Exception as exc:
            raise NoTrialError(f"trial {trial.number}'s run {run_id} has no {CHECKPOINT} artifact ({str(exc).splitlines()[0][:120]}): "
                               "choose another with --trial N") from exc
    return trial, generator, f"checkpoint of run {run_id}"


def _load_registered(stores: Stores, uri: str) -> torch.nn.Module:
    import mlflow
    import mlflow.pytorch

    with fluent_mlflow(stores.tracking_uri):
        return mlflow.pytorch.load_model(uri, map_location="cpu").eval()
