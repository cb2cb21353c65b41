"""tracking.retry, the name rule's path checks, and where the tracking URI comes from."""

from __future__ import annotations

import socket
import sqlite3

import pytest

from study.storage.names import UnsafePathError, check_name, inside, refuse_links
from study.storage.tracking import Stores, creation_race, is_transient, retry


class Calls:
    """``fn`` for retry(): raises what ``failures`` produce (one per call), then returns 'ok'."""

    def __init__(self, *failures):
        self.failures = list(failures)
        self.count = 0

    def __call__(self):
        self.count += 1
        if self.failures:
            self.failures.pop(0)()
        return "ok"


def database_is_locked(tmp_path):
    """Raise SQLite's own 'database is locked': another connection holds the write lock."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")

    def fail():
        try:
            sqlite3.connect(path, timeout=0).execute("INSERT INTO t VALUES (1)")
        finally:
            holder.execute("COMMIT")

    return fail


def connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_locked_database_is_retried(tmp_path):
    fn = Calls(database_is_locked(tmp_path))
    assert retry(fn, delay=0) == "ok" and fn.count == 2


def test_connection_refused_is_retried():
    fn = Calls(connection_refused, connection_refused)
    assert retry(fn, delay=0) == "ok" and fn.count == 3


def test_sqlalchemy_operational_error_is_retried(tmp_path):
    import sqlalchemy

    def unreachable():
        sqlalchemy.create_engine(f"sqlite:///{tmp_path}/missing/folder/x.db").connect()

    fn = Calls(unreachable)
    assert retry(fn, delay=0) == "ok" and fn.count == 2


def test_mlflow_server_errors_5xx_and_429_are_retried():
    from mlflow.exceptions import MlflowException, RestException

    def unavailable():
        raise RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "busy"})

    def too_many():
        raise MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 429 != 200")

    fn = Calls(unavailable, too_many)
    assert retry(fn, delay=0) == "ok" and fn.count == 3


def test_retry_gives_up_after_its_attempts(tmp_path):
    fn = Calls(*[connection_refused] * 5)
    with pytest.raises(ConnectionRefusedError):
        retry(fn, attempts=3, delay=0)
    assert fn.count == 3


@pytest.mark.parametrize(
    "error",
    [lambda: {}["missing"], lambda: None + 1, lambda: int("x"), lambda: object().missing, lambda: [][1]],
    ids=["KeyError", "TypeError", "ValueError", "AttributeError", "IndexError"],
)
def test_a_programming_error_propagates_at_once(error):
    fn = Calls(error)
    with pytest.raises((KeyError, TypeError, ValueError, AttributeError, IndexError)):
        retry(fn, delay=0)
    assert fn.count == 1


def test_a_programming_error_wrapped_by_mlflow_propagates_at_once():
    """MLflow's SQL store wraps any exception as an MlflowException (INTERNAL_ERROR, HTTP 500)."""
    from mlflow.exceptions import MlflowException

    def wrapped():
        try:
            {}["run_id"]
        except KeyError as exc:
            raise MlflowException(str(exc)) from exc

    fn = Calls(wrapped)
    with pytest.raises(MlflowException):
        retry(fn, delay=0)
    assert fn.count == 1


def test_a_write_race_on_a_tracking_server_is_made_again_and_only_with_creation_race():
    """Workers setting one experiment tag at once on a PostgreSQL-backed server: the loser gets
    HTTP 400 with the database's duplicate-key error, and the same call made again succeeds."""
    from mlflow.exceptions import RestException

    def lost():
        raise RestException({"error_code": "BAD_REQUEST", "message": "(psycopg.errors.UniqueViolation) duplicate key value "
                             'violates unique constraint "experiment_tag_pk"'})

    fn = Calls(lost)
    assert retry(fn, delay=0, transient=creation_race) == "ok" and fn.count == 2
    fn = Calls(lost)
    with pytest.raises(RestException):  # only where the caller says a second write finds the first
        retry(fn, delay=0)
    assert fn.count == 1


def test_other_sqlite_errors_are_not_transient(tmp_path):
    try:
        sqlite3.connect(tmp_path / "x.db").execute("SELECT * FROM no_such_table")
    except sqlite3.OperationalError as exc:
        assert not is_transient(exc)


@pytest.mark.parametrize("name", ["tiny", "quick-2", "a.b_c", "x" * 100])
def test_good_names_pass(name):
    assert check_name(name) == name


def test_inside_and_refuse_links(tmp_path):
    root = tmp_path / "root"
    (root / "reports").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    assert inside(root, root / "reports" / "x", "it") == (root / "reports" / "x").resolve()
    with pytest.raises(UnsafePathError, match="outside"):
        inside(root / "reports", root / "reports" / ".." / ".." / "esc", "the report folder")
    (root / "reports" / "link").symlink_to(tmp_path / "other")
    with pytest.raises(UnsafePathError, match="passes through the symlink"):
        refuse_links(root, root / "reports" / "link" / "x", "the report folder")
    (tmp_path / "mine").symlink_to(tmp_path / "other")  # the user's own link, outside the work folder
    refuse_links(root, tmp_path / "mine" / "x", "the report folder")


def test_experiment_artifacts_stay_in_the_work_folder(tmp_path):
    stores = Stores.resolve(tmp_path / "wd")
    stores.prepare()
    (tmp_path / "elsewhere").mkdir()
    (stores.workdir / "mlartifacts").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError, match="passes through the symlink"):
        stores.experiment_id("tiny")


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "sqlite:///{workdir}/mlflow.db"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///m.db"}, "sqlite:///m.db"),
        ({"MLFLOW_TRACKING_URI": "sqlite:///m.db", "GAN_STUDY_TRACKING_URI": "sqlite:///g.db"}, "sqlite:///g.db"),
        ({"GAN_STUDY_TRACKING_URI": "sqlite:///g.db"}, "sqlite:///g.db"),
    ],
)
def test_tracking_uri_precedence(monkeypatch, tmp_path, env, expected):
    from study.cli import _stores, build_parser

    for key in ("MLFLOW_TRACKING_URI", "GAN_STUDY_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = build_parser().parse_args(["status", "tiny", "--workdir", str(tmp_path)])
    assert _stores(args).tracking_uri == expected.format(workdir=tmp_path.resolve())
    args = build_parser().parse_args(["status", "tiny", "--workdir", str(tmp_path), "--tracking-uri", "sqlite:///o.db"])
    assert _stores(args).tracking_uri == "sqlite:///o.db"
