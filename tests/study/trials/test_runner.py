"""study.trials.runner: stopping the workers of ``run --jobs N``."""

from __future__ import annotations

import types

from study.trials import runner


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _StuckWorker:
    """A worker that never ends: each join waits out its whole timeout on the clock."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.timeouts: list[float] = []

    def join(self, timeout: float | None = None) -> None:
        assert timeout is not None
        self.timeouts.append(timeout)
        self.clock.now += timeout


def test_stuck_workers_share_one_grace_period(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(monotonic=clock.monotonic))
    workers = [_StuckWorker(clock) for _ in range(4)]
    runner._join_all(workers, 30.0)
    # One period for all: the first waits it out, the others are not given 30 s more each.
    assert clock.now == 30.0
    assert [w.timeouts for w in workers] == [[30.0], [0.0], [0.0], [0.0]]
