"""Pictures of generated digits, shared by the MLflow artifacts and the reports."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

os.environ.setdefault("MPLBACKEND", "Agg")  # files only, no display


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8) -> None:
    """A PNG grid of images in [-1, 1]."""
    from torchvision.utils import save_image

    save_image(images.float().cpu(), str(path), nrow=nrow, normalize=True, value_range=(-1, 1), pad_value=1.0)


def labelled_samples(images: torch.Tensor, labels: Sequence[int], path: str | os.PathLike, ncol: int = 10) -> None:
    """Samples with the evaluator's predicted digit under each, as the classic reports show."""
    import matplotlib.pyplot as plt

    n = len(images)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * 0.9, nrow * 1.1))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].squeeze(0).float().cpu().numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.text(0.5, -0.06, f"pred {int(labels[i])}", transform=ax.transAxes, ha="center", va="top", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    fig.savefig(path, dpi=110)
    plt.close(fig)
