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


def labelled_samples(images: torch.Tensor, labels: Sequence[int], path: str | os.PathLike, ncol: int = 10,
                     col_titles: Sequence[str] | None = None, row_titles: Sequence[str] | None = None) -> None:
    """Samples with the evaluator's predicted digit under each, as the classic reports show.

    ``col_titles`` go above the first row (e.g. x1, x2, x1-x2, x1+x2), ``row_titles`` left of each row.
    """
    import matplotlib.pyplot as plt

    n = len(images)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 0.9 + (0.6 if row_titles else 0), nrow * 1.1 + (0.25 if col_titles else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        if i < n:
            ax.imshow(images[i].squeeze(0).float().cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.text(0.5, -0.06, f"pred {int(labels[i])}", transform=ax.transAxes, ha="center", va="top", fontsize=8)
        if col_titles and i < ncol and i < len(col_titles):
            ax.set_title(col_titles[i], fontsize=9)
        if row_titles and i % ncol == 0 and i // ncol < len(row_titles):
            ax.set_ylabel(row_titles[i // ncol], fontsize=8, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


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
