"""Where a study's results live: the Optuna storage and the MLflow tracking store.

Embedded defaults keep everything under one work folder (no server):
``<workdir>/optuna.journal`` (Optuna's journal file, safe for several processes),
``<workdir>/mlflow.db`` (MLflow's SQLite store) and ``<workdir>/mlartifacts/``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse
from urllib.request import url2pathname

from .errors import StoreError, exception_chain, first_line, mask_url
from .faults import check_store_files
from .names import check_name, inside, refuse_links
from .proxy import check_proxy, open_proxy
from .store_checks import check_database, check_server, check_writable, driver_hint, writable_problem

T = TypeVar("T")
log = logging.getLogger("gan_study")


HEARTBEAT_ENV = "GAN_STUDY_HEARTBEAT"
"""``INTERVAL[,GRACE]`` in seconds: how often a running trial proves its worker is alive, and
how long without a sign of life before another worker fails the trial (RDB storages only)."""
DEFAULT_HEARTBEAT = (30, 90)


def mlflow_settings() -> None:
    """MLflow's settings for gan-study's processes, as environment defaults (a user's own value
    wins; spawned workers inherit them). Call it before MLflow is imported."""
    # MLflow announces its schema migrations at INFO; the CLI prints only what the user asked for.
    # (MLflow sets its loggers' level from MLFLOW_LOGGING_LEVEL when it is imported.)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow prints "View run ... at: URL" to stdout whenever a run on a server ends; the CLI's
    # output is its own (and workers end many runs).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # sample/registry downloads: no bars
    # MLflow 3.17's telemetry sets and unsets an environment variable from a background thread
    # while store calls read the environment: 2 of 635 trials in the storage-scale benchmark
    # failed on KeyError('_MLFLOW_TELEMETRY_SESSION_ID'). A study's store calls must not race.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow's HTTP client retries 7 times with doubling back-off (minutes); with retry() around
    # each call on top, a worker rides out a tracking-server restart of about a minute and gives
    # up on a dead server in a few minutes rather than an hour. (Spawned workers inherit these.)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def heartbeat_setting(value: str | None = None) -> tuple[int, int]:
    """``$GAN_STUDY_HEARTBEAT`` ('30,90', or '30' for a grace of 3 intervals) -> (interval, grace)."""
    value = os.environ.get(HEARTBEAT_ENV) if value is None else value
    if not value:
        return DEFAULT_HEARTBEAT
    try:
        parts = [int(p) for p in value.split(",")]
        interval, grace = (parts[0], 3 * parts[0]) if len(parts) == 1 else parts
    except ValueError:
        parts, interval, grace = [], 0, 0
    if not 1 <= len(parts) <= 2 or interval < 1 or grace <= interval:
        raise StoreError(
            f"{HEARTBEAT_ENV}={value!r} is invalid: give INTERVAL[,GRACE] in whole seconds with GRACE > INTERVAL, "
            f"e.g. {HEARTBEAT_ENV}={DEFAULT_HEARTBEAT[0]},{DEFAULT_HEARTBEAT[1]}"
        )
    return interval, grace


@dataclass(frozen=True)
class Stores:
    workdir: Path
    storage_url: str
    tracking_uri: str
    artifact_root: str | None
    """Artifact folder of the embedded store; None where the tracking server decides."""
    heartbeat_interval: int = DEFAULT_HEARTBEAT[0]
    grace_period: int = DEFAULT_HEARTBEAT[1]

    @classmethod
    def resolve(cls, workdir: str | os.PathLike = "gan-study-runs", storage: str | None = None, tracking_uri: str | None = None) -> Stores:
        workdir = Path(workdir).expanduser().resolve()
        storage_url = storage or str(workdir / "optuna.journal")
        artifact_root = None if tracking_uri else (workdir / "mlartifacts").as_uri()
        interval, grace = heartbeat_setting()
        return cls(workdir, storage_url, tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}", artifact_root, interval, grace)

    @property
    def embedded(self) -> bool:
        return "://" not in self.storage_url

    @property
    def proxied(self) -> bool:
        """The storage is an Optuna gRPC proxy (:mod:`study.storage.proxy`)."""
        return self.storage_url.startswith("grpc://")

    @property
    def heartbeats(self) -> bool:
        """A dead worker's trial is told by Optuna's heartbeat (RDB storages, any host); the
        journal and the gRPC proxy have none: by its process id, on its own host."""
        return not self.embedded and not self.proxied

    @property
    def embedded_tracking(self) -> bool:
        """The tracking store is the work folder's own SQLite file."""
        return self.tracking_uri == f"sqlite:///{self.workdir / 'mlflow.db'}" and bool(self.artifact_root)

    @property
    def needs_workdir(self) -> bool:
        return self.embedded or self.tracking_uri.startswith("sqlite:") or bool(self.artifact_root)

    def check(self) -> None:
        """Everything a run needs, checked before anything is written: one line on failure.

        The Optuna storage and the tracking store must answer (within a few seconds), and the
        work folder must be creatable where the embedded stores need it.
        """
        self.check_storage()
        scheme = self.tracking_uri.split("://", 1)[0].split("+", 1)[0] if "://" in self.tracking_uri else ""
        if scheme in ("http", "https"):
            check_server(self.tracking_uri)
        elif scheme in ("postgresql", "mysql"):
            check_database(self.tracking_uri, "MLflow tracking store", "--tracking-uri")
        elif scheme not in ("", "sqlite", "file", "databricks"):
            raise StoreError(
                f"the MLflow tracking URI {mask_url(self.tracking_uri)} is not supported: use http(s)://HOST:PORT "
                "of an MLflow server, a database URL (postgresql://...), or leave --tracking-uri out"
            )
        if self.needs_workdir:
            check_writable(self.workdir)
        self.check_files(writing=True)

    def check_storage(self) -> None:
        """A database or gRPC proxy storage answers (the journal file is checked by check_files)."""
        if self.proxied:
            check_proxy(self.storage_url)
        elif not self.embedded:
            check_database(self.storage_url, "Optuna storage", "--storage")

    def check_files(self, writing: bool) -> None:
        """The embedded stores' files are whole (:func:`study.storage.faults.check_store_files`)."""
        check_store_files(self, writing)

    @property
    def artifact_folder(self) -> Path | None:
        """The embedded store's local artifact folder; None where a server or URL decides."""
        if not (self.artifact_root or "").startswith("file:"):
            return None
        return Path(url2pathname(urlparse(self.artifact_root).path))

    def check_artifacts(self, study_name: str) -> None:
        """The embedded artifact folder, and the study's in it, can be written: a read-only one
        is refused before anything is written (a later write failure stops the run instead)."""
        root = self.artifact_folder
        if root is None:
            return
        for folder in (root, root / study_name):
            problem = writable_problem(folder)
            if problem:
                raise StoreError(f"cannot write the MLflow artifacts in {folder} ({problem}): make it writable "
                                 "(chmod u+w), then run the same command again")

    def prepare(self) -> None:
        """Create the work folder where the embedded stores need it; a clear error if we can't."""
        if not self.needs_workdir:
            return
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            probe = self.workdir / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StoreError(f"cannot write to the work folder {self.workdir} ({exc.strerror}): choose another with --workdir") from exc

    def optuna_storage(self, heartbeat: bool = True, create: bool = True):
        """The Optuna storage: a journal file for a path, Optuna's gRPC proxy for grpc://, an RDB
        storage for another URL.

        ``create=False`` (read-only commands) leaves a database without Optuna's tables as it is.
        """
        import optuna
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if self.embedded:
            try:
                return JournalStorage(JournalFileBackend(self.storage_url))
            except ValueError as exc:  # a record that is not JSON before the last one: Optuna cannot replay it
                raise StoreError(f"the Optuna journal {self.storage_url} is corrupt ({first_line(exc)}): restore it from a "
                                 "backup; gan-study never writes to it") from exc
        if self.proxied:
            return open_proxy(self.storage_url)
        kwargs: dict[str, Any] = {}
        if self.storage_url.startswith("sqlite"):
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        else:  # a server: drop dead pooled connections (server restarts, idle timeouts)
            kwargs["engine_kwargs"] = {"pool_pre_ping": True}
        hb = {"heartbeat_interval": self.heartbeat_interval, "grace_period": self.grace_period} if heartbeat else {}
        try:
            with warnings.catch_warnings():  # heartbeat_interval is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # Workers starting together on an empty database race to create Optuna's
                # tables; the losers find them on a second try.
                return retry(lambda: optuna.storages.RDBStorage(self.storage_url, **hb, **kwargs, skip_table_creation=not create), attempts=4 if create else 1, transient=creation_race)
        except Exception as exc:
            if not create:
                raise StoreError(f"no Optuna studies in {mask_url(self.storage_url)} ({first_line(exc)}): run one with 'gan-study run'") from exc
            raise StoreError(
                f"cannot open the Optuna storage {mask_url(self.storage_url)}: {first_line(exc)}{driver_hint(exc, self.storage_url)}"
            ) from exc

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    @contextlib.contextmanager
    def lock(self, name: str, when: bool = True):
        """An exclusive lock between the processes sharing the work folder (a no-op unless ``when``)."""
        if not when:
            yield
            return
        import fcntl

        with open(self.workdir / f".{name}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield

    def check_tracking(self) -> None:
        """Fail early, with one line, when the tracking store cannot be reached.

        The first call on a new SQLite store creates its tables: processes starting together on
        one work folder take turns, as two schema migrations of one file collide.
        """
        try:
            with self.lock("mlflow-setup", when=self.tracking_uri.startswith("sqlite:")):
                if self.embedded_tracking:  # a new store in seconds less (study.storage.compat)
                    from gan.cache import resolve_cache_dir

                    from .compat import seed_tracking_store

                    seed_tracking_store(self.workdir / "mlflow.db", resolve_cache_dir(), self.artifact_root)
                retry(lambda: self.mlflow().search_experiments(max_results=1), attempts=2)
        except Exception as exc:
            raise StoreError(f"cannot reach the MLflow tracking store {mask_url(self.tracking_uri)}: {first_line(exc)}") from exc

    def experiment_id(self, study_name: str) -> str:
        check_name(study_name)
        client = self.mlflow()
        experiment = client.get_experiment_by_name(study_name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if self.artifact_root:
            location = f"{self.artifact_root}/{study_name}"
            root = self.artifact_folder
            if root is not None:  # the embedded store's folder: artifacts stay in it
                refuse_links(self.workdir, root / study_name, "the MLflow artifact folder")
                inside(root, root / study_name, "the MLflow artifact folder")
        try:
            return client.create_experiment(study_name, artifact_location=location)
        except Exception:  # another worker created it first
            experiment = client.get_experiment_by_name(study_name)
            if experiment is None:
                raise
            return experiment.experiment_id


# Never retried: a bug or bad input raises the same way every time.
PROGRAMMING_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError, NameError, AssertionError,
                      NotImplementedError, ImportError, LookupError, ArithmeticError)
TRANSIENT_TEXT = re.compile(
    r"database is locked|database table is locked|connection refused|connection reset|timed out|timeout expired"
    r"|server closed the connection|could not connect|temporarily unavailable|failed with error code (?:5\d\d|429)"
    r"|too many (?:5\d\d|429) error responses",
    re.IGNORECASE,
)
GRPC_TRANSIENT = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")  # the gRPC proxy restarting or busy
TRANSIENT_MLFLOW_CODES = ("TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED")


def is_transient(exc: BaseException) -> bool:
    """Whether a store call that raised ``exc`` may succeed if made again.

    Transient: connection refused/reset, timeouts, SQLite's 'database is locked', SQLAlchemy's
    OperationalError (the database went away), an MLflow server's HTTP 5xx and 429. A
    programming error (TypeError, KeyError, ValueError, ...) is never transient, also where a
    store wraps it (MLflow's SQL store turns any exception into an MlflowException).
    """
    import sqlite3

    for error in exception_chain(exc):
        if isinstance(error, PROGRAMMING_ERRORS):
            return False
        if isinstance(error, (ConnectionError, TimeoutError)):
            return True
        if isinstance(error, sqlite3.OperationalError):
            return bool(TRANSIENT_TEXT.search(str(error)))
        name = f"{type(error).__module__}.{type(error).__name__}"
        if name.startswith("sqlalchemy.") and type(error).__name__ in ("OperationalError", "DisconnectionError", "TimeoutError"):
            return True
        if name.startswith("grpc.") and callable(getattr(error, "code", None)) and str(error.code()) in GRPC_TRANSIENT:
            return True
        if name.startswith("requests.") and type(error).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout", "ReadTimeout", "RetryError"):
            return True
        if name.startswith("mlflow."):
            code = getattr(error, "error_code", None)
            status = error.get_http_status_code() if hasattr(error, "get_http_status_code") else None
            if code in TRANSIENT_MLFLOW_CODES or (type(error).__name__ == "RestException" and (status == 429 or (status or 0) >= 500)):
                return True
            if TRANSIENT_TEXT.search(str(error)):
                return True
    return False


def retry(fn: Callable[[], T], attempts: int = 5, delay: float = 0.5, transient: Callable[[BaseException], bool] = is_transient) -> T:
    """Call ``fn`` again on transient store errors (see :func:`is_transient`); any other error
    propagates at once."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts - 1 or not transient(exc):
                raise
            log.debug("store call failed (%s), retrying", first_line(exc))
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")


def creation_race(exc: BaseException) -> bool:
    """Workers creating a row or table at once (Optuna's tables, an MLflow experiment tag on a
    tracking server): the loser's INSERT or CREATE fails on what the winner made, and the same
    call made again finds it there."""
    return is_transient(exc) or any(
        type(e).__name__ in ("IntegrityError", "ProgrammingError", "RestException")
        and re.search(r"already exists|duplicate key", str(e), re.IGNORECASE)
        for e in exception_chain(exc)
    )
