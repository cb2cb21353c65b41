"""What scores a worker's runs, loaded once per worker: MNIST, the evaluator and its real-data
statistics; and the score of a trained generator and discriminator."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch

import gan
from gan import metrics as gm
from gan.cache import resolve_cache_dir
from gan.evaluator import load_evaluator
from gan.losses import realness
from gan.sampling import generate

from ..storage.errors import StoreError
from .training import EVAL_SEED

__all__ = ["Evaluation", "load_evaluation"]


@dataclass
class Evaluation:
    """The evaluator, its real statistics and the data: loaded once per worker."""

    data: gan.MNIST
    evaluator: Any
    real: Any
    device: torch.device

    @classmethod
    def load(cls, data_dir: str | None, device: torch.device, source: str = "pinned") -> Evaluation:
        from .progress import bar, step

        with step("loading MNIST's training split"):
            data = gan.load_mnist(data_dir, device=device)
        with step("loading the pinned evaluator") if source == "pinned" else contextlib.nullcontext():  # retraining: its own lines and bar
            evaluator = load_evaluator(data_dir, device="cpu", source=source, progress=bar if source == "retrained" else False)
        with step("real-data statistics of the MNIST test split (cached after the first run)"):
            real = gm.real_stats(evaluator, data_dir)
        return cls(data, evaluator, real, device)

    def score(self, generator, discriminator, cfg: gan.TrainConfig, n: int) -> tuple[dict[str, Any], torch.Tensor]:
        images = generate(generator, n, seed=EVAL_SEED)
        values = gm.score(images, self.evaluator, self.real)
        with torch.no_grad():
            out = torch.cat([discriminator(chunk.to(self.device)).float().cpu() for chunk in images.split(2000)])
        values["d_acc_generated"] = float((realness(cfg, out) < 0).float().mean())
        return values, images


def load_evaluation(data_dir: str | None, device: torch.device, source: str = "pinned") -> Evaluation:
    """The evaluator (``source``: see ``gan.load_evaluator``) and real statistics, or a one-line
    error when their cache cannot be written."""
    try:
        return Evaluation.load(data_dir, device, source)
    except OSError as exc:
        raise StoreError(
            f"cannot read or write the evaluator cache in {resolve_cache_dir()} ({exc.strerror or exc}): "
            "set GAN_STUDY_CACHE to a writable folder"
        ) from exc
