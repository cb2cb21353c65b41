"""study.trials.interrupt: a signal raises KeyboardInterrupt, but not inside a store library's call."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from study.trials import interrupt

# A function whose frame belongs to a store module (by its globals' __name__), as SQLAlchemy's do.
_STORE_CODE = """
import os, time
def write(signum, seconds, done):
    os.kill(os.getpid(), signum)  # the signal arrives in the middle of the "write"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    done.append(True)
"""


def _store_function(module: str = "sqlalchemy.engine.fake"):
    namespace = {"__name__": module}
    exec(_STORE_CODE, namespace)
    return namespace["write"]


@pytest.fixture
def handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR2, signal.SIGALRM)}
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_in_store_call_looks_at_the_callers():
    assert not interrupt.in_store_call(sys._getframe())
    seen = []
    namespace = {"__name__": "optuna.storages._rdb.fake", "seen": seen, "sys": sys}
    exec("def store():\n    seen.append(sys._getframe())\n", namespace)
    inner = {"__name__": "study.storage.tracking", "store": namespace["store"]}
    exec("def call():\n    store()\n", inner)
    inner["call"]()
    assert interrupt.in_store_call(seen[0])  # the store frame itself
    assert interrupt.in_store_call(seen[0].f_back) is False  # its caller, outside the store


def test_the_interrupt_waits_for_the_store_call_to_return(handlers):
    interrupt.install(signal.SIGUSR2)
    done: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        _store_function()(signal.SIGUSR2, 0.3, done)
        time.sleep(5)  # interrupted here, within the 50 ms re-check, after the call returned
    assert done == [True]


def test_outside_a_store_call_the_interrupt_is_immediate(handlers):
    interrupt.install(signal.SIGUSR2)
    done: list[bool] = []
    with pytest.raises(KeyboardInterrupt):
        _store_function("study.trials.training")(signal.SIGUSR2, 2.0, done)
    assert done == []


def test_a_store_call_that_never_returns_is_interrupted_after_the_bound(handlers, monkeypatch):
    monkeypatch.setattr(interrupt, "DEFER_SECONDS", 0.2)
    interrupt.install(signal.SIGUSR2)
    done: list[bool] = []
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _store_function()(signal.SIGUSR2, 10.0, done)
    assert done == [] and 0.2 <= time.monotonic() - started < 10.0
