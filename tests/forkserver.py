"""The CLI as a real child process, without paying its imports per call.

Each CLI test used to start ``python -m study.cli``, and every such process spent about 4 s of
CPU importing torch, MLflow and Optuna before it did anything: most of the suite's time on 2
cores. A warm server (one per test process) imports them once and forks a child per call. The
child is its own process, in its own session, with its own folder, environment, stdin, stdout,
stderr and exit code; it runs ``study.cli.main`` as ``python -m study.cli`` does. What only a
fresh interpreter shows (an import that prints, ``PYTHON*`` variables, the console script)
is tested with ``cold=True`` (tests.common.gan_study), which starts ``python -m study.cli``.

Protocol, one connection per call on a Unix socket: the client sends a JSON line (argv, cwd,
env) with its stdout and stderr file descriptors attached; the server answers with the
child's pid, then, when the child ends, its exit code.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

__all__ = ["run"]

_REPO = Path(__file__).resolve().parent.parent
# What the children import anyway, loaded once in the server: every module of the packages, and
# what their functions import on first use (MLflow's stores and model flavour, GitPython, PIL).
_PACKAGES = ("gan", "study", "reports")
_WARM = ("torch", "torchvision", "torchvision.utils", "optuna", "sqlalchemy.dialects.sqlite", "alembic.command", "mlflow",
         "mlflow.tracking", "mlflow.pytorch", "mlflow.store.tracking.sqlalchemy_store",
         "mlflow.store.model_registry.sqlalchemy_store", "git", "PIL.Image", "matplotlib.pyplot", "seaborn")


# -- the server (python -m tests.forkserver SOCKET) -----------------------------------------------
def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the CLI process the request describes, run it, exit."""
    os.setsid()  # its own session and process group, as start_new_session: killpg reaches only it
    # Its signal handlers are the server's, which are a fresh interpreter's (SIGPIPE ignored, as
    # Python sets it): nothing to reset.
    devnull = os.open(os.devnull, os.O_RDONLY)
    for target, fd in ((0, devnull), (1, fds[0]), (2, fds[1])):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["gan-study", *request["argv"]]
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    import time

    import study.cli

    study.cli.STARTED = time.monotonic()  # the command's wall time counts from its own start
    study.cli.run()  # as the console script; an uncaught exception prints its traceback, exit 1


def _serve(path: str) -> None:
    import importlib
    import pkgutil

    for name in _WARM:
        importlib.import_module(name)
    for package in _PACKAGES:
        for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            importlib.import_module(module.name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "parent")  # EOF: the test process has ended
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            if key.data == "parent":
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                while not data.endswith(b"\n"):
                    data += conn.recv(1 << 20)
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    _child(json.loads(data), fds)
                for fd in fds:
                    os.close(fd)
                conn.sendall(f"{pid}\n".encode())  # the caller waits for it: no one has gone yet
                selector.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))
            else:  # a child ended
                pid, conn = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                with conn:
                    try:
                        conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                    except OSError:  # the caller gave up on it (its timeout) and has gone
                        pass


# -- the client --------------------------------------------------------------------------------------
_lock = threading.Lock()
_server: tuple[subprocess.Popen, str] | None = None


def _address(env: dict[str, str]) -> str:
    """The server's socket, started on first use with the environment of the first call."""
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            path = os.path.join(tempfile.mkdtemp(prefix="gan-study-forkserver-"), "socket")
            # MLflow reads these when it is imported; the CLI sets them before it imports MLflow.
            proc = subprocess.Popen([sys.executable, "-m", "tests.forkserver", path], cwd=_REPO,
                                    env={**env, "MLFLOW_LOGGING_LEVEL": "WARNING", "MLFLOW_DISABLE_TELEMETRY": "true"},
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the CLI fork server did not start (exit {proc.wait()})")
            _server = (proc, path)
        return _server[1]


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m study.cli *argv`` in ``cwd`` with exactly ``env``, as subprocess.run(capture_output, text)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(_address(env))
            request = json.dumps({"argv": list(argv), "cwd": str(cwd), "env": env}).encode() + b"\n"
            socket.send_fds(conn, [request], [out.fileno(), err.fileno()])
            conn.settimeout(timeout)
            replies = conn.makefile("r")
            pid = int(replies.readline())
            try:
                code = int(replies.readline())
            except TimeoutError:
                os.killpg(pid, signal.SIGKILL)
                raise subprocess.TimeoutExpired(["gan-study", *argv], timeout) from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["gan-study", *argv], code, out.read().decode(), err.read().decode())


if __name__ == "__main__":
    _serve(sys.argv[1])
