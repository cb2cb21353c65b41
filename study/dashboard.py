"""``gan-study dashboard``: optuna-dashboard on a study's Optuna storage (the ``[dashboard]`` extra)."""

from __future__ import annotations

import errno

from gan.errors import GanStudyError

from .tracking import Stores, mask_url

__all__ = ["DashboardMissing", "serve_dashboard"]

EXTRA_HINT = "pip install 'gan-study[dashboard]' (or: pip install 'optuna-dashboard>=0.21')"


class DashboardMissing(GanStudyError):
    """The optional optuna-dashboard package is not installed (or cannot be imported)."""


def _run_server():
    try:
        from optuna_dashboard import run_server
    except ImportError as exc:
        raise DashboardMissing(f"optuna-dashboard is not installed ({exc}): {EXTRA_HINT}") from exc
    return run_server


def serve_dashboard(stores: Stores, names: list[str], host: str, port: int) -> None:
    """Serve the dashboard until Ctrl-C; every study in ``names`` must exist (checked first)."""
    from .status import open_existing_study

    run_server = _run_server()  # a missing extra fails before the stores are opened
    studies = [open_existing_study(stores, name) for name in names]
    storage = stores.optuna_storage(heartbeat=False, create=False)
    base = f"http://{host}:{port}"
    print(f"Optuna dashboard on {base} (storage {mask_url(stores.storage_url)}); Ctrl-C stops it")
    for study in studies:
        print(f"  {study.study_name}: {base}/dashboard/studies/{storage.get_study_id_from_name(study.study_name)}", flush=True)
    try:
        run_server(storage, host=host, port=port)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise GanStudyError(f"cannot serve on {host}:{port} ({exc.strerror}): choose another --port or --host") from exc
        raise
