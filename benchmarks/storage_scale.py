"""Storage scale: how long claiming and finishing a trial takes with 2-64 workers per store kind.

    python -m benchmarks.storage_scale                                  # the full table (about 10 min)
    python -m benchmarks.storage_scale --kinds journal --workers 2 --seconds 3   # the test's version

Store kinds: ``journal`` (Optuna's journal file + MLflow's SQLite file in one work folder,
gan-study's default), ``postgres`` (Optuna's RDB storage on PostgreSQL + an MLflow server on
PostgreSQL), ``grpc`` (Optuna's gRPC storage proxy in front of that PostgreSQL; the same MLflow
server). PostgreSQL, the MLflow server and the proxy are started here on free local ports.

For each kind and worker count, N worker processes run no-op trials on one fresh study for
``--seconds`` (at most ``--max-trials`` each), through gan-study's own store code (``Stores``,
its journal lock, ``reconcile``, ``record``, ``study.storage.runs``), timing per trial:

- claim: what a gan-study worker does from one trial to the next until its trial is RUNNING
  with its record: ``reconcile`` (under the journal lock on the journal), ``get_trials``,
  ``ask``, a suggested value, the worker record, the heartbeat (RDB) and the claim check's
  ``get_trials``;
- open: the trial's MLflow run (created with its tags, then its parameters);
- finish: the metrics, ``study.tell`` and the MLflow run's end (state tag, ``set_terminated``).

A cell *breaks down* when any trial errs, a worker hangs past the deadline, or the p95 of claim
or finish exceeds ``BREAKDOWN_SECONDS``. Workers are forked from this process, which has
imported optuna and mlflow but not torch: 64 spawned interpreters would spend a minute of both
cores importing them. The parent opens no store itself (setup and checks run in forked
children too), so no child inherits a connection. Exit 1 when a check fails (a trial claimed
twice, a count that does not add up).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from study.storage import record
from study.storage.compat import heartbeat
from study.trials.recovery import reconcile, worker_identity
from study.storage.runs import RunEnd, end_run, log_metrics, run_name, start_run
from study.storage.tracking import Stores, mlflow_settings
from mlflow.entities import Param

from .servers import MlflowServer, PostgresServer, free_port, pg_bindir

__all__ = ["BREAKDOWN_SECONDS", "Cell", "KINDS", "main", "measure"]

KINDS = ("journal", "postgres", "grpc")
BREAKDOWN_SECONDS = 1.0
# Bounds for a starved machine (tests under nice -n 19 beside other work take minutes to import)
READY_SECONDS = 300  # the longest the workers may take to open their stores
HANG_SECONDS = 60  # past the deadline: a worker still running then is killed and counted as hung
MAX_ERRORS = 20  # per worker: a store that fails every call is not hammered further
ctx = mp.get_context("fork")


@dataclass
class Cell:
    """One kind at one worker count: every trial's latencies, and what went wrong."""

    kind: str
    workers: int
    seconds: float
    """From the start signal until the last worker stopped (the deadline is checked between trials)."""
    load: float
    """The 1-minute load average at the cell's end."""
    claim: list[float]
    open: list[float]
    finish: list[float]
    numbers: list[int]
    errors: list[str]
    hung: int
    problems: list[str]

    @property
    def breaks(self) -> bool:
        return bool(self.errors or self.hung or self.problems) or max(p95(self.claim), p95(self.finish)) > BREAKDOWN_SECONDS

    def row(self) -> list[str]:
        done = len(self.finish)
        ms = lambda xs, q: f"{1000 * quantile(xs, q):.0f}" if xs else "-"  # noqa: E731
        why = "; ".join(sorted(set(self.errors)))[:60] or ("hung" if self.hung else "")
        return [self.kind, str(self.workers), str(done), f"{done / self.seconds:.1f}", ms(self.claim, 0.5), ms(self.claim, 0.95),
                ms(self.open, 0.5), ms(self.finish, 0.5), ms(self.finish, 0.95), str(len(self.errors) + self.hung),
                f"{self.load:.1f}", "BREAKS" if self.breaks else "ok", why]


HEADER = ["stores", "workers", "trials", "trials/s", "claim p50 ms", "claim p95 ms", "open p50 ms", "finish p50 ms",
          "finish p95 ms", "errors", "load", "verdict", "first errors"]


def quantile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p95(xs: list[float]) -> float:
    return quantile(xs, 0.95) if xs else 0.0


def in_child(fn: Callable[..., Any], *args: Any, timeout: float = READY_SECONDS) -> Any:
    """``fn(*args)`` in a forked process, its JSON result back: this process keeps no store open."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    proc = ctx.Process(target=lambda: out.write_text(json.dumps(fn(*args))))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
    try:
        if proc.exitcode != 0:
            raise RuntimeError(f"{fn.__name__} failed in its process (exit code {proc.exitcode})")
        return json.loads(out.read_text())
    finally:
        out.unlink()


def open_stores(stores: Stores, storage_url: str | None) -> Any:
    """The Optuna storage a worker uses: gan-study's own, or Optuna's gRPC proxy for grpc://."""
    if storage_url and storage_url.startswith("grpc://"):
        host, port = storage_url[len("grpc://"):].rsplit(":", 1)
        with warnings.catch_warnings():  # the proxy is "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    return stores.optuna_storage()


def setup(stores: Stores, storage_url: str | None, name: str) -> str:
    """Create the study and its MLflow experiment, as a run's first worker does."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    stores.prepare()
    stores.check_tracking()
    optuna.create_study(study_name=name, storage=open_stores(stores, storage_url), load_if_exists=True)
    return stores.experiment_id(name)


def worker(stores: Stores, storage_url: str | None, name: str, experiment: str, index: int, ready: Any, go: Any,
           seconds: float, max_trials: int, out: Path) -> None:
    """Run no-op trials until the deadline; write every trial's timings to ``out``."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # study.ask on a heartbeat storage warns once per trial; gan-study's optimize() does not
    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
    storage = open_stores(stores, storage_url)
    study = optuna.load_study(study_name=name, storage=storage)
    client = stores.mlflow()
    tags = {"gan_study.study": name, "gan_study.role": "trial"}
    trials: list[dict[str, Any]] = []
    errors: list[str] = []
    ready.put(index)
    go.wait(READY_SECONDS)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(trials) < max_trials and len(errors) < MAX_ERRORS:
        trial = None
        try:
            t0 = time.perf_counter()
            with stores.lock("reconcile", when=stores.embedded):
                reconcile(study, storage, stores)
            study.get_trials(deepcopy=False)
            trial = study.ask()
            x = trial.suggest_float("x", 0.0, 1.0)
            record.write(trial, worker=worker_identity())
            with heartbeat(storage, trial):  # Optuna's first beat (RDB only; a no-op elsewhere)
                study.get_trials(deepcopy=False)
            t1 = time.perf_counter()
            run_id = start_run(client, experiment, run_name(trial.number, trial.params), {**tags, "gan_study.trial": str(trial.number)})
            client.log_batch(run_id, params=[Param("x", str(x))])
            t2 = time.perf_counter()
            log_metrics(client, run_id, {"fd": x}, step=0)
            study.tell(trial, x)
            end_run(client, run_id, RunEnd.COMPLETE)
            t3 = time.perf_counter()
            trials.append({"number": trial.number, "claim": t1 - t0, "open": t2 - t1, "finish": t3 - t2})
        except Exception as exc:  # measured, not fatal: the row says what broke
            errors.append(f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:120]}")
            if trial is not None:
                try:
                    study.tell(trial, state=TrialState.FAIL)
                except Exception:  # the store is what failed; the error is already counted
                    pass
    out.write_text(json.dumps({"trials": trials, "errors": errors, "torch": "torch" in sys.modules}))


def check(stores: Stores, storage_url: str | None, name: str) -> dict[str, Any]:
    """What the study holds after a cell: trial numbers per state."""
    study = optuna.load_study(study_name=name, storage=open_stores(stores, storage_url))
    states: dict[str, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        states.setdefault(t.state.name, []).append(t.number)
    return states


def measure(kind: str, n: int, stores: Stores, storage_url: str | None, seconds: float, max_trials: int, folder: Path) -> Cell:
    """One cell: ``n`` workers on a fresh study of ``kind``; counts checked against the storage."""
    name = f"scale-{kind}-{n}"
    experiment = in_child(setup, stores, storage_url, name)
    ready, go = ctx.Queue(), ctx.Event()
    outs = [folder / f"{name}-{i}.json" for i in range(n)]
    procs = [ctx.Process(target=worker, args=(stores, storage_url, name, experiment, i, ready, go, seconds, max_trials, outs[i]))
             for i in range(n)]
    for p in procs:
        p.start()
    opened = 0
    try:
        while opened < n:
            ready.get(timeout=READY_SECONDS)
            opened += 1
    except Exception:  # queue.Empty: some workers never opened their stores; the others run anyway
        pass
    go.set()
    started = time.monotonic()
    end = started + seconds + HANG_SECONDS
    for p in procs:
        p.join(max(0.1, end - time.monotonic()))
    for p in procs:  # a killed (or crashed) worker writes no results: counted as hung
        if p.is_alive():
            p.kill()
            p.join()
    wall = time.monotonic() - started
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    trials = [t for r in results for t in r["trials"]]
    cell = Cell(kind, n, wall, os.getloadavg()[0], [t["claim"] for t in trials], [t["open"] for t in trials], [t["finish"] for t in trials],
                [t["number"] for t in trials], [e for r in results for e in r["errors"]], n - len(results), [])
    states = in_child(check, stores, storage_url, name)
    if len(set(cell.numbers)) != len(cell.numbers):
        cell.problems.append("a trial number was claimed by two workers")
    if sorted(cell.numbers) != sorted(states.get("COMPLETE", [])):
        cell.problems.append(f"{len(cell.numbers)} trials timed but {len(states.get('COMPLETE', []))} COMPLETE in the storage")
    if any(r["torch"] for r in results):
        cell.problems.append("a worker imported torch")
    if not all(math.isfinite(x) and x > 0 for x in cell.claim + cell.open + cell.finish):
        cell.problems.append("a latency is not positive and finite")
    return cell


def table(cells: list[Cell]) -> str:
    rows = [HEADER] + [c.row() for c in cells]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(v.rjust(w) if 0 < i < 11 else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def start_proxy(url: str, log: Path) -> tuple[subprocess.Popen, str]:
    """Optuna's gRPC proxy on the RDB ``url`` (its default thread pool), on a free port."""
    port = free_port()
    code = ("import optuna; optuna.storages.run_grpc_proxy_server("
            f"optuna.storages.get_storage({url!r}), host='127.0.0.1', port={port})")
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    # Polled by TCP, not by a gRPC client: a gRPC channel in this process hangs the forked workers.
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"grpc://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the gRPC proxy did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.5)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storage_scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated: {', '.join(KINDS)}")
    p.add_argument("--workers", default="2,8,32,64", help="comma-separated worker counts")
    p.add_argument("--seconds", type=float, default=15.0, help="how long the workers run trials, per cell")
    p.add_argument("--max-trials", type=int, default=500, help="most trials per worker and cell")
    p.add_argument("--json", help="also write every cell's figures to this file")
    args = p.parse_args(argv)
    args.kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in args.kinds if k not in KINDS]
    if bad:
        p.error(f"unknown --kinds {','.join(bad)}: choose from {', '.join(KINDS)}")
    try:
        args.workers = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers {args.workers!r} is not a list of whole numbers: e.g. --workers 2,8")
    if not args.workers or min(args.workers) < 1 or max(args.workers) > 128:
        p.error(f"--workers {args.workers}: give counts from 1 to 128")
    if not 0 < args.seconds <= 300:
        p.error(f"--seconds {args.seconds}: give 0 < seconds <= 300")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mlflow_settings()  # the CLI's: no telemetry thread racing the store calls, no "View run" lines
    print(f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at start): with more workers than cores the "
          "figures measure contention for the cores as much as the stores.", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="gan-study-scale-"))
    cells: list[Cell] = []
    pg = mlflow = proxy = None
    try:
        if any(k != "journal" for k in args.kinds):
            bindir = pg_bindir()
            if bindir is None:
                print("storage_scale: PostgreSQL binaries not found (apt-get install -y postgresql)", file=sys.stderr)
                return 2
            pg = PostgresServer(bindir).setup()
            mlflow = MlflowServer(f"{pg.url}/mlflow", folder / "artifacts", folder / "mlflow.log").start()
        for kind in args.kinds:
            storage_url = None
            if kind == "grpc":
                proxy, storage_url = start_proxy(f"{pg.url}/optuna", folder / "proxy.log")
            for n in args.workers:
                workdir = folder / f"{kind}-{n}"
                stores = (Stores.resolve(workdir) if kind == "journal" else
                          Stores.resolve(workdir, f"{pg.url}/optuna", mlflow.uri))
                cell = measure(kind, n, stores, storage_url, args.seconds, args.max_trials, folder)
                cells.append(cell)
                print(table([cell]).splitlines()[-1], flush=True)
    finally:
        if proxy is not None:
            proxy.kill()
            proxy.wait()
        if mlflow is not None:
            mlflow.stop()
        if pg is not None:
            pg.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{table(cells)}\n\nBREAKS: an error, a hung worker, or p95 of claim or finish over {BREAKDOWN_SECONDS:g} s.")
    problems = [f"{c.kind} x{c.workers}: {p}" for c in cells for p in c.problems]
    for p in problems:
        print(f"storage_scale: check failed: {p}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps([{**vars(c), "breaks": c.breaks} for c in cells], indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
