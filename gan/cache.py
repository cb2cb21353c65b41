"""The on-disk cache of the evaluator and the real-data statistics: where it is, its keys, and
reads that reject stale or damaged files and writes that are atomic."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .data import MNIST

__all__ = ["CACHE_ENV", "DEFAULT_CACHE_DIR", "data_checksum", "digest", "read_cache", "resolve_cache_dir", "write_cache"]

log = logging.getLogger(__name__)

CACHE_ENV = "GAN_STUDY_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/gan-study"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` if given, else ``$GAN_STUDY_CACHE``, else ``~/.cache/gan-study``."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def data_checksum(split: MNIST) -> str:
    h = hashlib.sha256()
    h.update(split.images.cpu().contiguous().numpy().tobytes())
    h.update(split.labels.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def digest(*parts: Any) -> str:
    """A cache key: the SHA-256 of the parts as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The payload cached at ``path`` under ``key``; None (with a warning) if stale or corrupt."""
    if not path.is_file():
        return None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on damaged files; all mean "rebuild"
        log.warning("cache file %s is corrupt (%s: %s); rebuilding it", path, type(exc).__name__, exc)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
        log.warning("cache file %s is corrupt (unexpected layout); rebuilding it", path)
        return None
    if data.get("key") != key:
        log.warning("cache file %s is stale (other data, code or settings); rebuilding it", path)
        return None
    return data["payload"]


def write_cache(path: Path, key: str, payload: dict[str, Any]) -> None:
    """Save atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        torch.save({"key": key, "payload": payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
