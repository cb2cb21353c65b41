"""Pictures of generated digits, shared by the MLflow artifacts and the reports."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

os.environ.setdefault("MPLBACKEND", "Agg")  # files only, no display


def save_figure(fig, path: str | os.PathLike, dpi: int, **savefig: object) -> None:
    """A matplotlib figure as a 256-colour PNG (:func:`compact_png`), then closed."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, facecolor="white", **savefig)
    plt.close(fig)
    compact_png(buffer, path)


def compact_png(source, path: str | os.PathLike) -> None:
    """The image ``source`` (a path or a binary file) as a 256-colour PNG at ``path``: flat plots
    and grey digits lose nothing visible, and the files (and the report PDFs that embed them)
    are about 2.5x smaller than matplotlib's RGBA PNGs."""
    from PIL import Image

    with Image.open(source) as image:
        flat = image.convert("RGB")
    flat.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, format="PNG", optimize=True)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """A PNG grid of images in [-1, 1]."""
    from torchvision.utils import save_image

    save_image(images.float().cpu(), str(path), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


def as_uint8(images: torch.Tensor):
    """Images in [-1, 1] (n, 1, 28, 28) as a uint8 numpy array (n, 28, 28): what reports store."""
    return ((images.float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).squeeze(1).numpy()


def mosaic(images, ncol: int, pad: int = 2, below: int = 0):
    """uint8 images (n, h, w) tiled ``ncol`` wide on a white background, ``pad`` pixels between
    them and ``below`` more under each row (room for labels)."""
    import numpy as np

    n, h, w = images.shape
    nrow, pitch = max(1, -(-n // ncol)), h + pad + below
    out = np.full((nrow * pitch - pad, ncol * (w + pad) - pad), 255, dtype=np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        out[r * pitch : r * pitch + h, c * (w + pad) : c * (w + pad) + w] = im
    return out


def labelled_samples(images: torch.Tensor, labels: Sequence[int], path: str | os.PathLike, ncol: int = 10,
                     col_titles: Sequence[str] | None = None, row_titles: Sequence[str] | None = None) -> None:
    """Samples with the evaluator's predicted digit under each, as the classic reports show.

    ``col_titles`` go above the first row (e.g. x1, x2, x1-x2, x1+x2), ``row_titles`` left of each row.
    """
    import matplotlib.pyplot as plt

    # One image in one axes, labels as text: a grid of subplots costs seconds per figure.
    pixels = as_uint8(images)
    n, h, w = pixels.shape
    pad, below = 2, 7
    tile = mosaic(pixels, ncol, pad, below)
    inch = 0.9 / (w + pad)  # 0.9 inch per image
    fig = plt.figure(figsize=(tile.shape[1] * inch, tile.shape[0] * inch))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(tile, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, ncol)
        x, top = c * (w + pad) + (w - 1) / 2, r * (h + pad + below)
        ax.text(x, top + h, f"pred {int(labels[i])}", ha="center", va="top", fontsize=8)
        if r == 0 and col_titles and c < len(col_titles):
            ax.text(x, -1, col_titles[c], ha="center", va="bottom", fontsize=9)
        if c == 0 and row_titles and r < len(row_titles):
            ax.text(-2, top + h / 2, row_titles[r], ha="right", va="center", fontsize=8)
    save_figure(fig, path, dpi=110, bbox_inches="tight", pad_inches=0.05)


def class_histogram(counts: Sequence[int], path: str | os.PathLike, title: str = "Predicted digit of generated samples") -> None:
    """Bar chart of predicted classes with the uniform share as a line."""
    import matplotlib.pyplot as plt

    total = sum(counts)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(10), counts, color="#4c72b0")
    ax.axhline(total / 10, color="#c44e52", linestyle="--", label="uniform")
    ax.set_xticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel(f"samples (of {total:,})")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
