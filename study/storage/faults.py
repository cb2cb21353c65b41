"""Faults of the disk and of the store files (docs/reliability.md).

A write that fails for want of space or permission is a :class:`WriteError`: the trial fails
with it as its reason and the run stops. The embedded stores' files are checked before a
command reads them: a truncated ``mlflow.db`` is refused, and a journal that ends in a torn
record is read without it but never written.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.request import url2pathname

from .errors import StoreError, exception_chain

if TYPE_CHECKING:
    from .tracking import Stores

__all__ = ["WriteError", "check_store_files", "journal_torn", "settled", "sqlite_problem", "write_failure"]

T = TypeVar("T")


class WriteError(StoreError):
    """A file could not be written: the disk is full, a file-size limit (``ulimit -f``) is hit,
    or its folder is read-only. Every later trial would fail alike, so the run stops."""

    exit_code = 1  # a runtime failure: the input was fine


# The errors of a write that fails for want of space or permission, never for its content.
WRITE_ERRNOS = {errno.ENOSPC: "no space left", errno.EFBIG: "file size limit", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


def write_failure(exc: BaseException, what: str | None = None) -> WriteError | None:
    """``exc`` as a :class:`WriteError` naming ``what`` (or the file), when it is a write that
    failed for want of space or permission (also SQLite's 'database or disk is full'); else None."""
    for error in exception_chain(exc):
        if isinstance(error, WriteError):
            return error
        full = "database or disk is full" in str(error)
        if (isinstance(error, OSError) and error.errno in WRITE_ERRNOS) or full:
            code = errno.ENOSPC if full else error.errno
            target = what or (f"the file {error.filename}" if getattr(error, "filename", None) else "a file")
            fix = ("make it writable" if code in (errno.EROFS, errno.EACCES, errno.EPERM)
                   else "raise the file-size limit (ulimit -f)" if code == errno.EFBIG else "free space there")
            return WriteError(f"cannot write {target}: {WRITE_ERRNOS[code]} ({errno.errorcode[code]}); "
                              f"{fix}, then run the same command again")
    return None


JOURNAL_TAIL = 1 << 20  # bytes read from a journal's end: a few records (a spec attribute is ~60 kB)


def settled(path: Path, probe: Callable[[Path], T | None], settle: float = 0.5) -> T | None:
    """``probe(path)``'s problem with a file another process may be writing right now (a
    journal record half appended, an SQLite commit whose header is written before its last
    pages): a problem stands once the file has not changed for ``settle`` seconds."""
    for _ in range(5):
        before = path.stat()
        problem = probe(path)
        if problem is None:
            return None
        time.sleep(settle)
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns):
            return problem
    return None


def journal_torn(path: Path) -> tuple[int, int] | None:
    """(size, end of the last whole record) of an Optuna journal file whose last line is torn
    (no newline, or not JSON), else None."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - JOURNAL_TAIL))
        tail = handle.read()
    if not tail:
        return None
    body = tail[:-1] if tail.endswith(b"\n") else tail
    start = body.rfind(b"\n") + 1
    if tail.endswith(b"\n"):
        try:
            json.loads(body[start:])
            return None
        except ValueError:
            pass
    return size, size - len(tail) + start


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_problem(path: Path) -> str | None:
    """Why the SQLite file ``path`` is not whole, from its 100-byte header (SQLite's own file
    format: page size at 16, page count at 28, valid when the counters at 24 and 92 agree), or None."""
    size = path.stat().st_size
    if size == 0:
        return None  # SQLite's empty database
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return f"not an SQLite database ({size} bytes, no SQLite header)"
    page = int.from_bytes(header[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(header[28:32], "big")
    if size % page:
        return f"truncated or corrupt ({size} bytes, not a whole number of its {page}-byte pages)"
    if header[24:28] == header[92:96] and pages * page > size:
        return f"truncated ({size} bytes, its header says {pages * page})"
    return None


def check_store_files(stores: Stores, writing: bool) -> None:
    """The embedded stores' files are whole, read without writing a byte to them.

    A truncated ``mlflow.db`` is refused. A journal that ends in a torn record (a write
    cut off by a crash or a full disk) is read as Optuna reads it, without that record,
    but never written: Optuna appends its next record to the torn line, and both are lost.
    ``writing``: refuse the torn journal (a run), else only warn (status, report).
    """
    if stores.tracking_uri.startswith("sqlite:///"):
        db = Path(url2pathname(stores.tracking_uri.removeprefix("sqlite:///")))
        problem = settled(db, sqlite_problem) if db.is_file() else None
        if problem:
            raise StoreError(f"the MLflow store {db} is {problem}: restore it from a backup, or move it aside "
                             "and a new one is made (the trials' MLflow runs are then missing); gan-study never writes to it")
    if stores.embedded and Path(stores.storage_url).is_file():
        torn = settled(Path(stores.storage_url), journal_torn)
        if torn:
            size, whole = torn
            text = (f"the Optuna journal {stores.storage_url} ends in a torn record ({size - whole} bytes after its last "
                    f"whole record, left by a crash or a full disk)")
            fix = f"keep a copy, then cut it off with: truncate -s {whole} {stores.storage_url}"
            if writing:
                raise StoreError(f"{text}; Optuna would write its next record onto it and lose both: {fix}")
            print(f"gan-study: warning: {text}, which is not read; 'gan-study run' refuses to write to it: {fix}",
                  file=sys.stderr, flush=True)
