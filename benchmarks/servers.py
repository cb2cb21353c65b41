"""Throwaway servers for the multi-worker tests and the chaos soak: PostgreSQL (initdb in a
temporary folder, as the user postgres when run as root) and ``mlflow server`` on it. Each
can be stopped and started again on the same port and data, as a crash and restart would."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["MlflowServer", "PostgresServer", "ServerError", "free_port", "pg_bindir"]


class ServerError(RuntimeError):
    """A server could not be set up or started (its log's tail in the message)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's newest versioned folder, else pg_ctl's on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


class PostgresServer:
    """PostgreSQL on 127.0.0.1 with databases 'optuna' and 'mlflow' (trust auth); ``url`` is the base."""

    def __init__(self, bindir: Path):
        self.bindir, self.root, self.port = bindir, Path(tempfile.mkdtemp(prefix="gan-study-pg-")), free_port()
        self.as_owner: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise ServerError("running as root needs the user 'postgres' to run PostgreSQL (the Debian package creates it)") from exc
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.data = self.root / "data"
        self.url = f"postgresql://gan:secret@127.0.0.1:{self.port}"

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self.as_owner, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise ServerError(f"{tool} failed: {done.stderr or done.stdout}")

    def setup(self) -> PostgresServer:
        self._pg("initdb", "-D", str(self.data), "-U", "gan", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start()
        for db in ("optuna", "mlflow"):
            self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "gan", db)
        return self

    def start(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "-o",
                 f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c max_connections=200", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate``: as a crash (no checkpoint; recovery on the next start)."""
        subprocess.run([*self.as_owner, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=60)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class MlflowServer:
    """``mlflow server`` on a backend store URI, proxying artifacts to a local folder; ``uri`` is its address."""

    def __init__(self, backend: str, artifacts: Path, log: Path):
        self.backend, self.artifacts, self.log_path, self.port = backend, artifacts, log, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend, "--host", "127.0.0.1",
                 "--port", str(self.port), "--artifacts-destination", str(self.artifacts), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # no GenAI job-runner processes
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.uri}/health", timeout=5).read()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise ServerError(f"the MLflow server did not start: {self.log_path.read_text()[-3000:]}") from None
                time.sleep(1)

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
