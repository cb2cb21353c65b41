"""What a run tells the user while it works: the study's finished trials, the training of its
running trials, and a line for every step that takes a while.

- The study's progress counts *finished* trials (complete, pruned, failed), read from the Optuna
  storage, never trials that workers have claimed. Under it: the steps done of the steps planned
  for the running trials (all workers), steps/s and images/s, and an ETA for the invocation.
- Workers report their training through a :class:`Channel`, a shared array the parent creates
  and hands to each worker: a :class:`Meter` adds to its worker's slot from the training's
  records callback (once a records block, never a host sync per step). The storage stays the one
  source of truth about trials; the channel only says how far the running ones have trained.
- On a terminal (stderr), tqdm bars; otherwise plain lines, one every :data:`PROGRESS_SECONDS`
  (``$GAN_STUDY_PROGRESS_SECONDS``), one when a trial finishes, and a last one at the end, with
  no carriage returns. ``--quiet`` prints none of it.
- :func:`step` wraps a step that can take long (dataset checks, the evaluator, real-data
  statistics, registration, report figures and PDF): when it is still running after
  :data:`STEP_NOTICE_SECONDS` it prints a line, and a second when it ends; steps of milliseconds
  stay silent, so a refused input is still one line of error.

All of it goes through the ``gan_study`` and ``gan`` loggers at INFO, which :func:`configure`
(the CLI) sends to stderr; a library caller or a worker process that configures nothing sees none.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["PROGRESS_ENV", "PROGRESS_SECONDS", "STEP_NOTICE_SECONDS", "Channel", "Meter", "PlainBar", "StudyProgress",
           "TrialCounts", "bar", "clock", "configure", "finished_counts", "interval", "is_tty", "step", "took"]

PROGRESS_SECONDS = 30.0
"""Seconds between two plain progress lines when stderr is not a terminal."""
PROGRESS_ENV = "GAN_STUDY_PROGRESS_SECONDS"  # overrides PROGRESS_SECONDS (the tests use 1)
STEP_NOTICE_SECONDS = 1.0
"""A step still running after this long announces itself (and then its end)."""
POLL_SECONDS = 1.0  # how often the parent reads the storage and the channel
RATE_WINDOW_SECONDS = 120.0  # steps/s over about this much recent time
LOGGERS = ("gan_study", "gan")
FIELDS = ("steps", "images", "done", "planned", "trials", "planned_all", "trials_all")
"""A worker's slot: steps and images trained this invocation; steps done and planned, and
trials, of its running cohort; steps planned and trials started this invocation."""

log = logging.getLogger("gan_study.progress")


class _Format(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno == logging.WARNING else "error: " if record.levelno > logging.WARNING else ""
        return f"gan-study: {kind}{record.getMessage()}"


def configure(quiet: bool = False) -> None:
    """Send the ``gan_study`` and ``gan`` loggers to stderr: INFO and up, WARNING and up when ``quiet``."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "gan_study", False)]:
            logger.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler.gan_study = True  # type: ignore[attr-defined]
        handler.setFormatter(_Format())
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING if quiet else logging.INFO)
        logger.propagate = False  # a library's basicConfig on the root logger would print each line twice


def announcing() -> bool:
    return log.isEnabledFor(logging.INFO)


def is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def interval() -> float:
    """Seconds between plain progress lines: ``$GAN_STUDY_PROGRESS_SECONDS``, else :data:`PROGRESS_SECONDS`."""
    try:
        value = float(os.environ.get(PROGRESS_ENV, PROGRESS_SECONDS))
    except ValueError:
        return PROGRESS_SECONDS
    return value if math.isfinite(value) and value > 0 else PROGRESS_SECONDS


def clock(seconds: float | None) -> str:
    """``1:02:03``, ``2:03``, or ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def took(seconds: float) -> str:
    """``4.2 s`` under a minute, else :func:`clock`'s ``2:03``."""
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def _amount(x: float) -> str:
    return f"{x / 1e6:.1f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e4 else f"{x:.0f}" if x >= 100 else f"{x:.1f}"


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    """A line ``what ...`` once the step has run :data:`STEP_NOTICE_SECONDS`, then ``what: done in T``."""
    if not announcing():
        yield
        return
    started, lock, shown = time.monotonic(), threading.Lock(), []

    def notice() -> None:
        with lock:
            if shown is not None:
                shown.append(True)
                log.info("%s ...", what)

    timer = threading.Timer(STEP_NOTICE_SECONDS, notice)
    timer.daemon = True
    timer.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        timer.cancel()
        with lock:
            printed, shown = bool(shown), None
        if printed and ok:
            log.info("%s: done in %s", what, took(time.monotonic() - started))


class PlainBar:
    """tqdm's ``update``/``close`` as plain lines: at the first update, every :func:`interval`, at the end."""

    def __init__(self, total: int, desc: str, unit: str = "step"):
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.started = self.last = time.monotonic()
        self.printed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.printed or now - self.last >= interval():
            self.print_line(now)

    def print_line(self, now: float, end: bool = False) -> None:
        self.printed, self.last = True, now
        seconds = now - self.started
        rate = self.n / seconds if seconds >= 1 else None  # a first step's rate says nothing
        left = (self.total - self.n) / rate if rate else None
        tail = f" in {took(seconds)}" if end else f", {f'{rate:.1f}' if rate else '?'} {self.unit}s/s, ETA {clock(left)}"
        log.info("%s: %d/%d %ss (%.0f %%)%s", self.desc, self.n, self.total, self.unit, 100 * self.n / max(1, self.total), tail)

    def close(self) -> None:
        if self.n:
            self.print_line(time.monotonic(), end=True)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def bar(total: int, desc: str, unit: str = "step") -> Any:
    """A progress bar for ``total`` units on stderr: tqdm on a terminal, plain lines otherwise, none when not announcing."""
    if not announcing():
        return _NoBar()
    if is_tty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
    return PlainBar(total, desc, unit)


# -- the channel: workers' training, for the parent ------------------------------------------------
class Channel:
    """One slot of :data:`FIELDS` per worker in a shared array (``ctx``'s, for spawned workers)."""

    def __init__(self, slots: int, ctx: Any = None):
        self.slots = slots
        self.array = (ctx or multiprocessing).RawArray("d", slots * len(FIELDS))

    def meter(self, slot: int) -> Meter:
        return Meter(self, slot)

    def totals(self) -> dict[str, float]:
        values = list(self.array)
        width = len(FIELDS)
        return {f: sum(values[s * width + i] for s in range(self.slots)) for i, f in enumerate(FIELDS)}


class Meter:
    """A worker's writes to its slot; without a channel every call does nothing."""

    def __init__(self, channel: Channel | None = None, slot: int = 0):
        self.array = channel.array if channel is not None else None
        self.base = slot * len(FIELDS)

    def add_to(self, field: str, value: float) -> None:
        if self.array is not None:
            self.array[self.base + FIELDS.index(field)] += value

    def set_to(self, field: str, value: float) -> None:
        if self.array is not None:
            self.array[self.base + FIELDS.index(field)] = value

    def begin(self, planned: Sequence[int], trials: int) -> None:
        """A cohort of ``trials`` starts training runs of ``planned`` steps each."""
        self.set_to("done", 0)
        self.set_to("planned", sum(planned))
        self.set_to("trials", trials)
        self.add_to("planned_all", sum(planned))
        self.add_to("trials_all", trials)

    def advance(self, steps: int, images: int) -> None:
        self.add_to("steps", steps)
        self.add_to("images", images)
        self.add_to("done", steps)

    def end(self) -> None:
        for field in ("done", "planned", "trials"):
            self.set_to(field, 0)


# -- the study's progress, in the parent -----------------------------------------------------------
class TrialCounts(collections.namedtuple("TrialCounts", "complete pruned failed retried")):
    """Finished trials that take a slot of the study (and failures whose configuration runs again)."""

    @property
    def finished(self) -> int:
        return self.complete + self.pruned + self.failed

    def text(self) -> str:
        retried = f"; {self.retried} failure{'s' * (self.retried != 1)} retried" if self.retried else ""
        return f"{self.complete} complete, {self.pruned} pruned, {self.failed} failed{retried}"


def finished_counts(trials: Sequence[Any]) -> TrialCounts:
    from optuna.trial import TrialState

    from ..storage.record import TrialRecord
    from .recovery import counts

    complete = pruned = failed = retried = 0
    for t in trials:
        if not t.state.is_finished() or TrialRecord.from_trial(t).surplus:
            continue
        if t.state == TrialState.COMPLETE:
            complete += 1
        elif t.state == TrialState.PRUNED:
            pruned += 1
        elif counts(t):
            failed += 1
        else:
            retried += 1
    return TrialCounts(complete, pruned, failed, retried)


def _braced(head: str, text: str, tail: str) -> str:
    """A tqdm ``bar_format``: ``head`` and ``tail`` are formats, ``text`` is shown as it is."""
    return head + text.replace("{", "{{").replace("}", "}}") + tail.replace("{", "{{").replace("}", "}}")


class StudyProgress:
    """The study's bars (terminal) or lines (otherwise) for one invocation; :meth:`poll` redraws."""

    def __init__(self, study: Any, target: int, channel: Channel, *, quiet: bool = False, tty: bool | None = None):
        self.study, self.target, self.channel = study, target, channel
        self.quiet = quiet or not announcing()
        self.tty = is_tty() if tty is None else tty
        self.started = time.monotonic()
        self.samples: collections.deque[tuple[float, float, float]] = collections.deque()
        self.last_line, self.last_finished = -math.inf, None
        self.lock = threading.Lock()
        self.bars: list[Any] = []
        if not self.quiet and self.tty:
            from tqdm import tqdm

            plain = "{desc}: {percentage:3.0f}%|{bar}|"  # until the first poll says more
            self.bars = [tqdm(total=target, desc=f"study {study.study_name}", file=sys.stderr, bar_format=plain),
                         tqdm(total=1, desc="training", file=sys.stderr, bar_format=plain)]

    def state(self) -> dict[str, Any]:
        """What the storage and the channel say now, and the rate and ETA that follow."""
        counts = finished_counts(self.study.get_trials(deepcopy=False))
        c = self.channel.totals()
        now = time.monotonic()
        self.samples.append((now, c["steps"], c["images"]))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_SECONDS:
            self.samples.popleft()
        (t0, s0, i0), (t1, s1, i1) = self.samples[0], self.samples[-1]
        rate = (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None
        images = (i1 - i0) / (t1 - t0) if rate else None
        per_trial = c["planned_all"] / c["trials_all"] if c["trials_all"] else None
        unstarted = max(0, self.target - counts.finished - int(c["trials"]))
        left = None
        if rate and (per_trial is not None or not unstarted):
            left = (c["planned"] - c["done"] + unstarted * (per_trial or 0)) / rate
        return {"counts": counts, "done": int(c["done"]), "planned": int(c["planned"]), "running": int(c["trials"]), "started": int(c["trials_all"]),
                "rate": rate, "images": images, "eta": left, "elapsed": now - self.started}

    def training_text(self, s: dict[str, Any]) -> str:
        if not s["running"]:
            if s["counts"].finished >= self.target:
                return "training: done"
            if s["started"]:
                return "training: no trial running"
            return "training: the workers are starting" if self.channel.slots > 1 else "training: the first trial is starting"
        rate = f"{s['rate']:.1f} steps/s, {_amount(s['images'])} images/s" if s["rate"] else "measuring the rate"
        trials = f"{s['running']} running trial{'s' * (s['running'] != 1)}"
        return f"training: {s['done']}/{s['planned']} steps of the {trials}, {rate}"

    def line(self, s: dict[str, Any], end: bool = False) -> str:
        counts = s["counts"]
        head = f"study {self.study.study_name}: {min(counts.finished, self.target)}/{self.target} trials finished ({counts.text()})"
        if end:
            return f"{head} in {clock(s['elapsed'])}"
        return f"{head}; {self.training_text(s)}; ETA {clock(s['eta'])}, elapsed {clock(s['elapsed'])}"

    def poll(self, end: bool = False) -> None:
        if self.quiet:
            return
        with self.lock:
            try:
                s = self.state()
            except Exception as exc:  # noqa: BLE001 - a store hiccup skips one redraw, never ends the run
                log.debug("progress: cannot read the study (%s)", exc)
                return
            if self.bars:
                trials, training = self.bars
                trials.n = min(s["counts"].finished, self.target)
                trials.bar_format = _braced("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} trials finished (", s["counts"].text(), ")")
                training.total = max(1, s["planned"])
                training.n = training.total if s["counts"].finished >= self.target else min(s["done"], training.total)
                text = self.training_text(s).removeprefix("training: ")
                training.bar_format = _braced("{desc}: {percentage:3.0f}%|{bar}| ", text, f"; ETA {clock(s['eta'])}")
                for b in self.bars:
                    b.refresh()
                return
            now = time.monotonic()
            changed = s["counts"].finished != self.last_finished
            if end or changed or now - self.last_line >= interval():
                log.info("%s", self.line(s, end))
                self.last_line, self.last_finished = now, s["counts"].finished

    def close(self) -> None:
        """The last state: a last line (or the bars at their end)."""
        try:
            self.poll(end=True)
        finally:
            for b in self.bars:
                b.close()

    @contextlib.contextmanager
    def polling(self) -> Iterator[None]:
        """Poll from a thread while the body runs (one worker, in this process)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(POLL_SECONDS):
                self.poll()

        thread = threading.Thread(target=loop, name="gan-study-progress", daemon=True)
        self.poll()
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)

