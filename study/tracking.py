"""Where a study's results live: the Optuna storage and the MLflow tracking store.

Embedded defaults keep everything under one work folder (no server):
``<workdir>/optuna.journal`` (Optuna's journal file, safe for several processes),
``<workdir>/mlflow.db`` (MLflow's SQLite store) and ``<workdir>/mlartifacts/``.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gan.errors import GanStudyError

T = TypeVar("T")
log = logging.getLogger("gan_study")


class StoreError(GanStudyError):
    """A storage URL or tracking URI cannot be used, or a study does not exist."""


def mask_url(url: str) -> str:
    """``postgresql://user:***@host/db``: passwords never reach a log or the terminal."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


@dataclass(frozen=True)
class Stores:
    workdir: Path
    storage_url: str
    tracking_uri: str
    artifact_root: str | None
    """Artifact folder of the embedded store; None where the tracking server decides."""

    @classmethod
    def resolve(cls, workdir: str | os.PathLike = "gan-study-runs", storage: str | None = None, tracking_uri: str | None = None) -> Stores:
        workdir = Path(workdir).expanduser().resolve()
        storage_url = storage or str(workdir / "optuna.journal")
        artifact_root = None if tracking_uri else (workdir / "mlartifacts").as_uri()
        return cls(workdir, storage_url, tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}", artifact_root)

    @property
    def embedded(self) -> bool:
        return "://" not in self.storage_url

    def prepare(self) -> None:
        """Create the work folder where the embedded stores need it; a clear error if we can't."""
        if not (self.embedded or self.tracking_uri.startswith("sqlite:") or self.artifact_root):
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            probe = self.workdir / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write to the work folder {self.workdir} ({exc.strerror}): choose another with --workdir") from exc

    def optuna_storage(self, heartbeat: bool = True):
        """The Optuna storage: a journal file for a path, an RDB storage for a URL."""
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if self.embedded:
            return JournalStorage(JournalFileBackend(self.storage_url))
        kwargs: dict[str, Any] = {}
        if self.storage_url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        hb = {"heartbeat_interval": 30, "grace_period": 90} if heartbeat else {}
        try:
            return optuna.storages.RDBStorage(self.storage_url, **hb, **kwargs)
        except Exception as exc:
            raise StoreError(f"cannot open the Optuna storage {mask_url(self.storage_url)}: {_first_line(exc)}") from exc

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def check_tracking(self) -> None:
        """Fail early, with one line, when the tracking store cannot be reached."""
        try:
            retry(lambda: self.mlflow().search_experiments(max_results=1), attempts=2)
        except Exception as exc:
            raise StoreError(f"cannot reach the MLflow tracking store {mask_url(self.tracking_uri)}: {_first_line(exc)}") from exc

    def experiment_id(self, study_name: str) -> str:
        client = self.mlflow()
        experiment = client.get_experiment_by_name(study_name)
        if experiment is not None:
            return experiment.experiment_id
        location = f"{self.artifact_root}/{study_name}" if self.artifact_root else None
        try:
            return client.create_experiment(study_name, artifact_location=location)
        except Exception:  # another worker created it first
            experiment = client.get_experiment_by_name(study_name)
            if experiment is None:
                raise
            return experiment.experiment_id


def retry(fn: Callable[[], T], attempts: int = 5, delay: float = 0.5) -> T:
    """Call ``fn`` again on transient store errors (SQLite 'database is locked', a busy server)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1:
                raise
            log.debug("store call failed (%s), retrying", _first_line(exc))
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return mask_url(text.splitlines()[0])
