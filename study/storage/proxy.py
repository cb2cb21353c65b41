"""Optuna's gRPC storage proxy as a study's storage: ``--storage grpc://HOST:PORT``.

One proxy process (:data:`PROXY_COMMAND`) holds the database connection for every worker and
caches the trials, where each worker on an RDB storage holds its own connection and reads every
trial from the database (docs/reliability.md, "Storage scale"). The proxy's protocol has no
heartbeat, so a dead worker's trial is found as on the journal: by its process id, by a worker
on the same host (:func:`study.trials.recovery.may_take_over`).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from .store_checks import CHECK_TIMEOUT
from .errors import StoreError

__all__ = ["PROXY_COMMAND", "check_proxy", "open_proxy", "proxy_address"]

PROXY_COMMAND = ("python -c \"import optuna; optuna.storages.run_grpc_proxy_server("
                 "optuna.storages.get_storage('postgresql://USER:PASSWORD@HOST/DB'), host='0.0.0.0', port=13000)\"")
_ADDRESS = re.compile(r"grpc://(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})/?")


def proxy_address(url: str) -> tuple[str, int]:
    """``grpc://HOST:PORT`` -> (HOST, PORT); one line naming the form otherwise."""
    match = _ADDRESS.fullmatch(url)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise StoreError(f"the Optuna storage URL {url!r} is not a gRPC proxy address: write grpc://HOST:PORT, "
                         "e.g. grpc://10.0.0.5:13000")
    return match["host"].strip("[]"), int(match["port"])


def open_proxy(url: str) -> Any:
    """Optuna's ``GrpcStorageProxy`` for ``url`` (connects lazily, on the first call)."""
    host, port = proxy_address(url)
    import optuna

    try:
        with warnings.catch_warnings():  # the proxy is "experimental" since Optuna 4.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.GrpcStorageProxy(host=host, port=port)
    except ImportError as exc:  # Optuna imports grpc on first use
        raise StoreError(f"--storage {url} needs the gRPC client: pip install 'gan-study[grpc]' "
                         "(or pip install 'grpcio>=1.68.1')") from exc


def check_proxy(url: str) -> None:
    """The proxy answers within a few seconds, or one line that says how to start it."""
    proxy = open_proxy(url)
    try:
        proxy.wait_server_ready(timeout=CHECK_TIMEOUT)
    except ConnectionError as exc:
        raise StoreError(f"cannot reach the Optuna gRPC proxy at {url} within {CHECK_TIMEOUT} s: start it where "
                         f"the database is reachable ({PROXY_COMMAND}) or fix --storage") from exc
    finally:
        proxy.close()
