"""``gan-study dashboard``: optuna-dashboard on a study's Optuna storage (the ``[dashboard]`` extra)."""

from __future__ import annotations

import errno
import signal
import socket
import threading
import wsgiref.simple_server
from typing import Any

from gan.errors import GanStudyError

from ..storage.errors import mask_url
from ..storage.tracking import Stores

__all__ = ["DashboardMissing", "serve_dashboard"]

EXTRA_HINT = "pip install 'gan-study[dashboard]' (or: pip install 'optuna-dashboard>=0.21')"


class DashboardMissing(GanStudyError):
    """The optional optuna-dashboard package is not installed (or cannot be imported)."""


def _wsgi_app():
    try:
        from optuna_dashboard import wsgi
    except ImportError as exc:
        raise DashboardMissing(f"optuna-dashboard is not installed ({exc}): {EXTRA_HINT}") from exc
    return wsgi


def serve_dashboard(stores: Stores, names: list[str], host: str, port: int) -> None:
    """Serve the dashboard until Ctrl-C or SIGTERM; every study in ``names`` must exist (checked first)."""
    from .status import open_existing_study

    wsgi = _wsgi_app()  # a missing extra fails before the stores are opened
    studies = [open_existing_study(stores, name) for name in names]
    storage = stores.optuna_storage(heartbeat=False, create=False)
    try:
        server = _make_server(host, port, wsgi(storage))
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise GanStudyError(f"cannot serve on {host}:{port} ({exc.strerror}): choose another --port or --host") from exc
        raise
    base = f"http://{host}:{port}"
    print(f"Optuna dashboard on {base} (storage {mask_url(stores.storage_url)}); Ctrl-C stops it")
    for study in studies:
        print(f"  {study.study_name}: {base}/dashboard/studies/{storage.get_study_id_from_name(study.study_name)}", flush=True)
    # wsgiref's handler swallows any exception raised while it serves a request, KeyboardInterrupt
    # included, so a Ctrl-C or SIGTERM that lands mid-request (optuna-dashboard's run_server) was
    # ignored. The signals ask the serving loop to stop instead; the request in flight completes.
    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()


def _make_server(host: str, port: int, app: Any) -> wsgiref.simple_server.WSGIServer:
    class Server(wsgiref.simple_server.WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return wsgiref.simple_server.make_server(host, port, app, server_class=Server)
