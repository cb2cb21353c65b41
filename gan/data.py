"""MNIST held as one uint8 tensor on the training device; batches are drawn by index.

No DataLoader and no per-sample transforms: a batch is ``images[idx]`` scaled on the fly (to
[-1, 1], or to the range ``TrainConfig.data_scaling`` names, in the same two in-place ops),
which keeps the data on the GPU, a quarter of float32's size, and the loop free of host work.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

DATA_ENV = "GAN_STUDY_DATA"
DEFAULT_DATA_DIR = "./data"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels in [0, 1], as torchvision's examples use
# The value D sees for a uint8 pixel u is u / divisor - offset, per TrainConfig.data_scaling.
SCALINGS: dict[str, tuple[float, float]] = {
    "signed": (127.5, 1.0),  # [-1, 1]: every metric's convention
    "unit": (255.0, 0.0),  # [0, 1]
    "standardized": (255.0 * MNIST_STD, MNIST_MEAN / MNIST_STD),  # (u / 255 - mean) / std
}
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$GAN_STUDY_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR).expanduser()


@dataclass(frozen=True)
class MNIST:
    """One MNIST split on one device.

    ``images`` is uint8 of shape (N, 28, 28); ``labels`` is int64 of shape (N,).
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Images at ``idx`` as float32 (B, 1, 28, 28) in [-1, 1]."""
        return scale(self.images[idx])

    def to(self, device: str | torch.device) -> MNIST:
        return MNIST(self.images.to(device), self.labels.to(device))


def scale(images_u8: torch.Tensor, scaling: str = "signed") -> torch.Tensor:
    """uint8 (B, 28, 28) -> float32 (B, 1, 28, 28) in ``scaling``'s range ([-1, 1] by default)."""
    divisor, offset = SCALINGS[scaling]
    return images_u8.unsqueeze(1).float().div_(divisor).sub_(offset)


def to_signed(images: torch.Tensor, scaling: str) -> torch.Tensor:
    """Images in ``scaling``'s range -> [-1, 1], the pixels beyond black and white clamped."""
    if scaling == "signed":
        return images
    divisor, offset = SCALINGS[scaling]
    return ((images + offset) * (divisor / 127.5) - 1.0).clamp(-1.0, 1.0)


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    train: bool = True,
    device: str | torch.device = "cpu",
    subset: int | None = None,
    download: bool = True,
) -> MNIST:
    """Load an MNIST split with torchvision's reader.

    Reads ``<data_dir>/MNIST/raw/`` (the four IDX files); when they are missing and
    ``download`` is true, torchvision tries to download them there. ``subset`` keeps the first
    ``subset`` images, which is deterministic (for tests and smoke runs).
    """
    import torchvision  # deferred: torchvision's import is slow and only this reads files

    root = resolve_data_dir(data_dir)
    raw = root / "MNIST" / "raw"
    if subset is not None and subset <= 0:
        raise DataError(f"subset must be > 0, got subset={subset}")
    try:
        ds = torchvision.datasets.MNIST(str(root), train=train, download=False)
    except RuntimeError as missing:
        if not download:
            raise DataError(_missing_message(raw)) from missing
        created = [p for p in (raw, raw.parent, root) if not p.exists()]  # deepest first
        try:
            ds = torchvision.datasets.MNIST(str(root), train=train, download=True)
        except Exception as failed:
            for folder in created:  # no empty folders left behind by a failed download
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise DataError(f"{_missing_message(raw)} (download failed: {_first_line(failed)})") from failed
    except Exception as corrupt:  # torchvision's IDX reader fails on wrong magic / short files
        raise DataError(
            f"MNIST files in {raw} are corrupt ({_first_line(corrupt)}); replace them with the "
            f"official IDX files: {', '.join(RAW_FILES)}"
        ) from corrupt
    images, labels = ds.data, ds.targets
    expected = 60000 if train else 10000
    if images.dtype != torch.uint8 or tuple(images.shape) != (expected, 28, 28) or labels.shape != (expected,):
        raise DataError(
            f"MNIST files in {raw} are corrupt: expected {expected} images of 28x28 uint8, got "
            f"{tuple(images.shape)} {images.dtype}; replace them with the official IDX files"
        )
    if subset is not None:
        images, labels = images[:subset], labels[:subset]
    return MNIST(images.contiguous().to(device), labels.to(device))


def _missing_message(raw: Path) -> str:
    return (
        f"MNIST not found: expected the IDX files {', '.join(RAW_FILES)} in {raw}; "
        f"set --data-dir or {DATA_ENV} to the folder that holds MNIST/raw/"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
