"""Whether a store can be used, checked before anything is written: a database or an MLflow
server answers within ``CHECK_TIMEOUT``, a work folder can be created and written. Each failure
is a :class:`StoreError` of one line that names the store and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError, first_line, mask_url

__all__ = ["CHECK_TIMEOUT", "RDB_SCHEMES", "check_database", "check_server", "check_writable", "driver_hint", "writable_problem"]

CHECK_TIMEOUT = 5  # seconds to wait for a database or tracking server before giving up
RDB_SCHEMES = ("postgresql", "mysql", "sqlite")


def check_database(url: str, what: str, option: str) -> None:
    """Connect to a database URL once (no tables created): a one-line error if it fails."""
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in RDB_SCHEMES:
        raise StoreError(
            f"the {what} URL {mask_url(url)} is not supported: use postgresql://USER:PASSWORD@HOST:PORT/DB, "
            f"mysql://..., sqlite:///FILE{', grpc://HOST:PORT (an Optuna gRPC proxy)' if option == '--storage' else ''}, "
            f"or leave {option} out for the embedded store"
        )
    if scheme == "sqlite":
        return
    import sqlalchemy

    connect_args = {"connect_timeout": CHECK_TIMEOUT} if scheme in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        raise StoreError(
            f"cannot reach the {what} {mask_url(url)}: {first_line(exc)}{driver_hint(exc, url)}; "
            f"check that the server runs and the URL given by {option} is right"
        ) from exc


def check_server(uri: str) -> None:
    """GET <uri>/health of an MLflow server, with a short timeout."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=CHECK_TIMEOUT) as response:
            response.read()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise StoreError(
            f"cannot reach the MLflow tracking server {mask_url(uri)}: {first_line(reason) if isinstance(reason, BaseException) else mask_url(str(reason))}; "
            "start it (mlflow server ...) or fix --tracking-uri"
        ) from exc


def writable_problem(folder: Path) -> str | None:
    """Why ``folder`` could not be created or written (checked without creating it), or None."""
    path = folder
    while not path.exists():
        if path.is_symlink() or path.parent == path:  # a dangling link, or nothing exists at all
            return f"{path} does not exist"
        path = path.parent
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def check_writable(workdir: Path) -> None:
    """The work folder exists as a writable folder, or can be created."""
    problem = writable_problem(workdir)
    if problem:
        raise StoreError(f"cannot write to the work folder {workdir} ({problem}): choose another with --workdir")


def driver_hint(exc: BaseException, url: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "Failed to import DB access module" in text or isinstance(exc, ImportError):
        if "psycopg2" in text:
            return " (the PostgreSQL driver is missing: pip install psycopg2-binary, or write the URL as postgresql+psycopg://... to use psycopg 3)"
        if url.startswith("postgresql"):
            return " (the PostgreSQL driver is missing: pip install 'psycopg[binary]')"
        return " (the database driver is missing: install the one SQLAlchemy names for this URL)"
    return ""
