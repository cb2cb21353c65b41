"""Ctrl-C and SIGTERM as a KeyboardInterrupt, but never in the middle of a store's write.

Python raises KeyboardInterrupt between any two bytecodes. Raised inside SQLAlchemy, sqlite3 or
a journal append, it can leave a transaction or a lock open that this same process then waits on
while it marks its trial failed, so the stop hangs instead of ending in seconds. The handler
here looks at the interrupted stack: inside a store library it asks again every 50 ms (SIGALRM)
and raises once the call has returned, or after ``DEFER_SECONDS`` if a store call never returns.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

__all__ = ["DEFER_SECONDS", "STORE_MODULES", "install", "in_store_call", "last_signal"]

# The libraries whose calls write a store (module-name prefixes).
STORE_MODULES = ("sqlalchemy", "sqlite3", "alembic", "psycopg2", "optuna.storages", "mlflow.store", "filelock")
DEFER_SECONDS = 30.0  # a store call that has not returned by then is interrupted after all
_RETRY_SECONDS = 0.05
_received: list[int] = []  # the signals that interrupted this process, in order


def last_signal() -> int | None:
    """The signal behind the latest interrupt (SIGINT, SIGTERM); None where none came."""
    return _received[-1] if _received else None


def in_store_call(frame: FrameType | None) -> bool:
    """Whether ``frame`` or one of its callers runs in a module of ``STORE_MODULES``."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


class _Interrupt:
    def __init__(self) -> None:
        self.deferred_since: float | None = None  # when a pending interrupt was first deferred

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGALRM and self.deferred_since is None:
            return  # not ours to act on: no interrupt is pending
        if signum != signal.SIGALRM:
            _received.append(signum)
        now = time.monotonic()
        if in_store_call(frame) and now - (self.deferred_since or now) < DEFER_SECONDS:
            self.deferred_since = self.deferred_since or now
            signal.setitimer(signal.ITIMER_REAL, _RETRY_SECONDS)
            return
        self.deferred_since = None
        raise KeyboardInterrupt


def install(*signals: signal.Signals) -> None:
    """Make each of ``signals`` raise KeyboardInterrupt outside store calls (main thread only)."""
    handler = _Interrupt()
    for sig in (*signals, signal.SIGALRM):
        signal.signal(sig, handler)
