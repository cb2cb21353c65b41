"""What the CLI-driven tests share: a tiny spec, the CLI as a real subprocess, the stores it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml

from tests import forkserver

TINY = {
    "name": "tiny",
    "objective": "fd",
    "sampler": {"name": "random", "seed": 0},
    "trials": 2,
    "budget": {"steps": 60},
    "evaluation": {"every": 30, "samples": 500, "final_samples": 500},
    "fixed": {"batch_size": 64},
    "space": {"lr_g": {"low": 1.0e-4, "high": 1.0e-3, "log": True}},
}
REPO = Path(__file__).resolve().parent.parent
# One torch thread per process: on 2 shared cores, two threads per process spin against the
# other processes and make tiny trials several times slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def gan_study(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600,
              cold: bool = False) -> subprocess.CompletedProcess:
    """``gan-study *args`` as a child process: forked from a warm interpreter (tests.forkserver),
    or, with ``cold`` or a ``PYTHON*`` variable in ``env``, a fresh ``python -m study.cli``."""
    env = {**os.environ, **ONE_THREAD, **(env or {})}
    if not cold and not any(k.startswith("PYTHON") and v != os.environ.get(k) for k, v in env.items()):
        return forkserver.run(list(args), cwd, env, timeout)
    return subprocess.run([sys.executable, "-m", "study.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def write_spec(folder: Path, name: str = "tiny", **changes) -> Path:
    """TINY with ``changes`` as a YAML file; a change to None drops the key."""
    path = folder / f"{name}.yaml"
    data = {**TINY, "name": name, **changes}
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


def journal_study(workdir: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(workdir / "optuna.journal"))))


def mlflow_runs(workdir: Path, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)
