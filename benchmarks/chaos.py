"""Chaos soak: many workers on one study while faults keep coming, then a check that nothing
was lost or done twice.

    python -m benchmarks.chaos                      # local stores (journal + SQLite), 8 workers
    python -m benchmarks.chaos --stores postgres    # PostgreSQL + an MLflow server, started here
    python -m benchmarks.chaos --workers 4 --trials 16 --faults 5 --kinds search   # the CI version

Each kind (a random search with repeats, a grid) is one study of ``--trials`` short MLP trials
run by ``--workers`` ``gan-study worker`` processes. Every 10-20 s (seeded) one fault: kill -9
of a worker, SIGTERM of one, SIGSTOP of one past the heartbeat grace and then SIGCONT, and with
PostgreSQL also a restart of the MLflow server or of PostgreSQL (immediate stop: a crash).
Killed workers are started again while the study is unfinished. At the end: every trial
COMPLETE, or FAIL with its configuration retried exactly once; each grid point complete exactly
once; nothing RUNNING or WAITING; every MLflow trial run terminal and in its trial's state; no
orphan runs; the report builds; ``status`` agrees with the storage. Every loop is bounded in
time and count; exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from study.storage.record import Tag, TrialRecord
from study.storage.tracking import Stores

from .servers import MlflowServer, PostgresServer, pg_bindir

HEARTBEAT = (2, 20)  # seconds: interval, grace (PostgreSQL); a SIGSTOP lasts grace + 5 s
SPACES = {  # the grid: 12 learning rates x 5 label values = 60 points
    "search": {"lr_g": {"low": 1.0e-4, "high": 2.0e-3, "log": True}, "real_label": {"low": 0.8, "high": 1.0}},
    "grid": {"lr_g": [round(1e-4 * 1.3**i, 7) for i in range(12)], "real_label": [1.0, 0.95, 0.9, 0.85, 0.8]},
}


@dataclass
class Soak:
    kind: str
    name: str
    trials: int
    faults: collections.Counter = field(default_factory=collections.Counter)
    restarts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    figures: dict[str, int] = field(default_factory=dict)


def grid_space(trials: int) -> dict[str, list[float]]:
    """The grid for about ``trials`` points: 5 label values x trials/5 learning rates."""
    grid = SPACES["grid"]
    return {"lr_g": grid["lr_g"][: max(1, trials // 5)], "real_label": grid["real_label"]}


def write_spec(folder: Path, name: str, kind: str, trials: int, steps: int) -> Path:
    spec = {"name": name, "objective": "fd", "budget": {"steps": steps},
            "evaluation": {"every": steps, "samples": 300, "final_samples": 300}, "fixed": {"batch_size": 64},
            "space": SPACES[kind]}
    if kind == "grid":
        spec.update(sampler="grid", space=grid_space(trials))
    else:
        spec.update(sampler={"name": "random", "seed": 0}, trials=trials, repeats=2)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


class Workers:
    """The worker processes of one study: started, faulted, started again."""

    def __init__(self, spec: Path, cwd: Path, env: dict[str, str], n: int):
        self.spec, self.cwd, self.env = spec, cwd, env
        self.procs: list[subprocess.Popen] = [self.start() for _ in range(n)]
        self.stopped: dict[int, float] = {}  # index -> when to SIGCONT

    def start(self) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "study.cli", "worker", str(self.spec), "--quiet"], cwd=self.cwd,
                                env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.poll() is None and i not in self.stopped]

    def signal(self, i: int, sig: signal.Signals) -> None:
        try:
            os.killpg(self.procs[i].pid, sig)  # the worker's own children too
        except ProcessLookupError:
            pass

    def tend(self, now: float) -> int:
        """SIGCONT the paused workers whose time is up; start again the ones a signal ended. Restarts."""
        for i, until in list(self.stopped.items()):
            if now >= until:
                self.signal(i, signal.SIGCONT)
                del self.stopped[i]
        restarted = 0
        for i, p in enumerate(self.procs):
            if p.poll() is not None and p.returncode != 0:  # killed, stopped by SIGTERM (130) or failed
                self.procs[i] = self.start()
                restarted += 1
        return restarted

    def done(self) -> bool:
        return all(p.poll() == 0 for p in self.procs)

    def kill_all(self) -> None:
        for i, p in enumerate(self.procs):
            if p.poll() is None:
                self.signal(i, signal.SIGCONT)
                self.signal(i, signal.SIGKILL)
                p.wait(timeout=60)


def soak(kind: str, name: str, args: argparse.Namespace, folder: Path, env: dict[str, str], servers: tuple | None,
         rng: random.Random) -> Soak:
    spec = write_spec(folder, name, kind, args.trials, args.steps)
    result = Soak(kind, name, args.trials)
    workers = Workers(spec, folder, env, args.workers)
    kinds = ["kill-9", "sigterm", "sigstop"] + (["restart-mlflow", "restart-postgres"] if servers else [])
    start = time.monotonic()
    deadline, next_fault = start + 60 * args.max_minutes, start + rng.uniform(*args.every)
    try:
        while not workers.done():
            now = time.monotonic()
            if now > deadline:
                result.problems.append(f"not finished in {args.max_minutes} min")
                break
            if now >= next_fault and sum(result.faults.values()) < args.faults and workers.alive():
                fault = rng.choice(kinds)
                victim = rng.choice(workers.alive())
                if fault == "kill-9":
                    workers.signal(victim, signal.SIGKILL)
                elif fault == "sigterm":
                    workers.signal(victim, signal.SIGTERM)
                elif fault == "sigstop":
                    workers.signal(victim, signal.SIGSTOP)
                    workers.stopped[victim] = now + HEARTBEAT[1] + 5
                elif fault == "restart-mlflow":
                    servers[1].stop(signal.SIGKILL)
                    servers[1].start()
                else:
                    servers[0].stop()
                    servers[0].start()
                result.faults[fault] += 1
                print(f"  {now - start:6.0f} s  {fault}" + ("" if fault.startswith("restart") else f" worker {victim}"), flush=True)
                next_fault = time.monotonic() + rng.uniform(*args.every)
            result.restarts += workers.tend(time.monotonic())
            time.sleep(0.5)
    finally:
        workers.kill_all()
    result.seconds = time.monotonic() - start
    return result


def check(result: Soak, stores: Stores, folder: Path, env: dict[str, str]) -> None:
    """What must hold after any fault schedule; problems go to ``result.problems``."""
    import optuna
    from optuna.trial import TrialState

    name = result.name
    study = optuna.load_study(study_name=name, storage=stores.optuna_storage(heartbeat=False))
    trials = study.get_trials(deepcopy=False)
    records = {t.number: TrialRecord.from_trial(t) for t in trials}
    for state in (TrialState.RUNNING, TrialState.WAITING):
        left = [t.number for t in trials if t.state == state]
        if left:
            result.problems.append(f"trials left {state.name}: {left}")
    # a second retry of one failure gives itself up as surplus before training (study.trials.slots.claim): not a duplicate
    retries = collections.Counter(r.retry_of for r in records.values() if r.retry_of is not None and not r.surplus)
    surplus = sum(1 for r in records.values() if r.surplus)
    failed = [t for t in trials if t.state == TrialState.FAIL and t.params and records[t.number].retry_of is None and not records[t.number].surplus]
    lost = [t.number for t in failed if retries[t.number] == 0]
    twice = [t.number for t in failed if retries[t.number] > 1]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if result.kind == "grid":
        per_point = collections.Counter(tuple(sorted(t.params.items())) for t in complete)
        points = math.prod(len(values) for values in grid_space(result.trials).values())
        lost += [f"point {p}" for p in range(points - len(per_point))]
        twice += [f"point {p} x{n}" for p, n in per_point.items() if n > 1]
    elif len(complete) + sum(1 for t in trials if t.state == TrialState.FAIL and records[t.number].retry_of is not None) < result.trials:
        lost.append(f"{result.trials - len(complete)} of {result.trials} trials not complete")
    result.problems += [f"lost: {x}" for x in lost] + [f"done twice: {x}" for x in twice]

    client = stores.mlflow()
    experiment = client.get_experiment_by_name(name)
    runs = {r.info.run_id: r for r in client.search_runs([experiment.experiment_id], max_results=10000)}
    referenced = set()
    for t in trials:
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id is None:
            continue
        referenced.add(run_id)
        run = runs.get(run_id)
        if run is None:
            result.problems.append(f"trial {t.number}: its MLflow run {run_id} is missing")
        elif run.info.status in ("RUNNING", "SCHEDULED"):
            result.problems.append(f"trial {t.number}: MLflow run still {run.info.status}")
        elif run.data.tags.get(Tag.TRIAL_STATE, t.state.name) != t.state.name:
            result.problems.append(f"trial {t.number}: {t.state.name} in Optuna, {run.data.tags[Tag.TRIAL_STATE]} in MLflow")
    orphans = [r.info.run_name for r in runs.values() if r.data.tags.get(Tag.ROLE) == "trial" and r.info.run_id not in referenced]
    running = [r.info.run_name for r in runs.values() if r.info.status == "RUNNING"]
    result.problems += [f"orphan MLflow run {n}" for n in orphans] + [f"MLflow run left RUNNING: {n}" for n in running]

    status = subprocess.run([sys.executable, "-m", "study.cli", "status", name, "--json"], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    if status.returncode:
        result.problems.append(f"status failed: {status.stderr.strip()[-300:]}")
    else:
        states = collections.Counter(row["state"] for row in json.loads(status.stdout)["trials"])
        if states != collections.Counter(t.state.name for t in trials):
            result.problems.append(f"status says {dict(states)}, the storage {dict(collections.Counter(t.state.name for t in trials))}")
    report = subprocess.run([sys.executable, "-m", "study.cli", "report", name, "--format", "md"], cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    if report.returncode:
        result.problems.append(f"report failed: {report.stderr.strip()[-300:]}")
    final = sum(1 for t in trials if t.state == TrialState.FAIL and records[t.number].retry_of is not None)
    result.figures = {"trials": len(trials), "complete": len(complete), "retries": sum(retries.values()),
                      "retries failed (final: one retry per trial)": final, "surplus (given up before training)": surplus,
                      "lost": len(lost), "duplicated": len(twice), "mlflow runs": len(runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--stores", choices=("local", "postgres"), default="local")
    p.add_argument("--kinds", default="search,grid", help="comma-separated: search, grid")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--trials", type=int, default=60, help="per study (the grid: 5 labels x trials/5 learning rates)")
    p.add_argument("--steps", type=int, default=20, help="training steps per trial")
    p.add_argument("--faults", type=int, default=20, help="most faults per study")
    p.add_argument("--every", type=float, nargs=2, default=(10.0, 20.0), metavar=("LO", "HI"), help="seconds between faults")
    p.add_argument("--max-minutes", type=float, default=30, help="per study")
    p.add_argument("--baseline", action="store_true", help="also run each study without faults, for the wall-time ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the work folder (it is kept anyway when a check fails)")
    args = p.parse_args(argv)
    if not 1 <= args.workers <= 64 or not 1 <= args.trials <= 1000 or not 0 <= args.faults <= 1000:
        p.error("--workers 1-64, --trials 1-1000, --faults 0-1000")
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="gan-study-chaos-"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GAN_STUDY_HEARTBEAT": ",".join(map(str, HEARTBEAT))}
    servers = None
    if args.stores == "postgres":
        bindir = pg_bindir()
        if bindir is None:
            p.error("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
        pg = PostgresServer(bindir).setup()
        mlflow = MlflowServer(f"{pg.url}/mlflow", folder / "artifacts", folder / "mlflow-server.log").start()
        servers = (pg, mlflow)
        env.update(GAN_STUDY_STORAGE=f"{pg.url}/optuna", GAN_STUDY_TRACKING_URI=mlflow.uri)
    stores = Stores.resolve(folder / "gan-study-runs", env.get("GAN_STUDY_STORAGE"), env.get("GAN_STUDY_TRACKING_URI"))
    failed = False
    try:
        for kind in [k.strip() for k in args.kinds.split(",") if k.strip()]:
            print(f"{kind}: {args.workers} workers, {args.trials} trials, up to {args.faults} faults ({args.stores} stores; {folder})", flush=True)
            result = soak(kind, f"chaos-{kind}", args, folder, env, servers, rng)
            check(result, stores, folder, env)
            line = ", ".join(f"{k} {v}" for k, v in result.figures.items())
            print(f"{kind}: {sum(result.faults.values())} faults ({', '.join(f'{k} {v}' for k, v in sorted(result.faults.items()))}), "
                  f"{result.restarts} worker restarts; {line}; wall {result.seconds:.0f} s", flush=True)
            if args.baseline:
                calm = argparse.Namespace(**{**vars(args), "faults": 0})
                base = soak(kind, f"calm-{kind}", calm, folder, env, None, rng)  # same stores, a study of its own
                print(f"{kind}: fault-free wall {base.seconds:.0f} s; with faults {result.seconds / max(base.seconds, 1):.2f}x", flush=True)
            for problem in result.problems:
                print(f"  PROBLEM {problem}", flush=True)
            failed |= bool(result.problems)
    finally:
        if servers:
            servers[1].stop()
            servers[0].close()
    if not failed and not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
