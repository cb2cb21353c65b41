"""Checks before a run writes anything: MNIST's files are whole, the evaluator cache can be
written (training an evaluator takes minutes; failing after them would waste them), and the
workers and their training fit this machine (:mod:`study.spec.limits`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gan.data import resolve_data_dir
from gan.errors import DataError, GanStudyError
from gan.cache import CACHE_ENV, resolve_cache_dir
from gan.evaluator import CACHE_FILE

from ..spec.limits import gpu_jobs_problem, jobs_problem, training_memory_problem
from ..storage.names import inside
from ..storage.store_checks import writable_problem
from ..storage.errors import StoreError

if TYPE_CHECKING:
    import torch

    from ..spec.spec import StudySpec

__all__ = ["LimitError", "check_cache", "check_idx_files", "check_limits"]


class LimitError(GanStudyError):
    """An input asks for more processes or memory than this machine has."""


IDX_FILES = {  # name: (magic, item shape)
    "train-images-idx3-ubyte": (0x0803, (28, 28)),
    "train-labels-idx1-ubyte": (0x0801, ()),
    "t10k-images-idx3-ubyte": (0x0803, (28, 28)),
    "t10k-labels-idx1-ubyte": (0x0801, ()),
}


def check_idx_files(data_dir: str | None) -> None:
    """MNIST's IDX files that are there must be whole: the header's magic, and the size it implies.

    (Missing files are left to the loader, which downloads them where it can.)
    """
    raw = resolve_data_dir(data_dir) / "MNIST" / "raw"
    for name, (magic, shape) in IDX_FILES.items():
        path = raw / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        with open(path, "rb") as handle:
            header = handle.read(4 + 4 * (1 + len(shape)))
        fix = f"replace it with the official IDX file (or delete {raw} to download MNIST again)"
        if len(header) < 4 or int.from_bytes(header[:4], "big") != magic:
            raise DataError(f"MNIST file {path} is not an IDX file of its kind (wrong magic number {header[:4].hex() or 'none'}, expected {magic:08x}): {fix}")
        dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(1 + len(shape))]
        expected = len(header) + (dims[0] if len(dims) == 1 + len(shape) else 0) * (28 * 28 if shape else 1)
        if len(header) < 4 + 4 * (1 + len(shape)) or tuple(dims[1:]) != shape or size != expected:
            raise DataError(f"MNIST file {path} is truncated or corrupt ({size} bytes, its header implies {expected}): {fix}")


def check_cache() -> None:
    """Without a cached evaluator one is trained (minutes): refuse first if it could not be saved."""
    folder = resolve_cache_dir()
    inside(folder, folder / CACHE_FILE, "the evaluator cache file")  # a link planted there must not redirect the write
    if (folder / CACHE_FILE).is_file():
        return  # read when the study starts; a corrupt or stale file is rebuilt, with a warning
    problem = writable_problem(folder)
    if problem:
        raise StoreError(f"cannot write the evaluator cache in {folder} ({problem}): set {CACHE_ENV} to a writable folder")


def check_limits(spec: StudySpec, jobs: int, device: torch.device) -> None:
    """``--jobs`` against this machine's cores and memory (and its GPU, on CUDA), and the spec's
    training memory with that many workers: refused before any store, process or training starts."""
    problem = jobs_problem(jobs)
    if problem is None and device.type == "cuda":
        problem = gpu_jobs_problem(jobs)
    problem = problem or training_memory_problem(spec, jobs, device)
    if problem:
        raise LimitError(problem)
