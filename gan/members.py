"""The GANs one training loop updates, behind one interface (:class:`Members`): one GAN
(:class:`Solo`, ``gan.train``) or K of one shape batched (``gan.population``), and the pieces
both build them from, each written once: the seeded models, the optimizer, the gradient
penalty's interpolation weights and the averaged G's buffers.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn

from .config import TrainConfig
from .losses import gradient_penalty
from .models import build_models

__all__ = ["Members", "Solo", "copy_buffers", "optimizer", "penalty_weights", "seeded_models"]


def optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    """``cfg``'s optimizer over ``params`` (tensors or parameter groups) at learning rate ``lr``."""
    # fused: one kernel per optimizer step for all parameters (CPU and CUDA), about 3x faster
    # than foreach on CPU; RMSprop has no fused kernel, foreach is its fast path on CUDA.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, foreach=True)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, fused=True)


def seeded_models(cfg: TrainConfig, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """G and D with their initial weights from ``cfg.seed``, on ``device``. The global RNG is
    seeded here, so its next draws (dropout's masks in ``gan.train``) follow from the seed too."""
    torch.manual_seed(cfg.seed)
    G, D = build_models(cfg)
    return G.to(device), D.to(device)


@torch.no_grad()
def copy_buffers(average: nn.Module, G: nn.Module) -> None:
    """The averaged G takes G's own buffers: batch-norm statistics and spectral-norm vectors
    are G's, not averages."""
    for avg, now in zip(average.buffers(), G.buffers(), strict=True):
        avg.copy_(now)


def penalty_weights(n: int, image_dims: int, generators: Sequence[torch.Generator | None],
                    device: torch.device) -> torch.Tensor:
    """WGAN-GP's interpolation weights (K, n, 1, ...) between n real and n fake images, one row
    per member from its own stream (None: the global RNG, as dropout's masks in ``gan.train``)."""
    shape = (n, *[1] * image_dims)
    return torch.stack([torch.rand(shape, generator=g, device=device) for g in generators])


class Members(Protocol):
    """K GANs as the loop trains them: one batched G and D over a leading member dimension.

    ``train`` has one member (:class:`Solo`, the config's own modules); ``gan.population``
    batches K of one shape. Optimizers need only ``zero_grad()`` and ``step()``.
    """

    image_shape: tuple[int, ...]
    """One image as G draws it and D reads it."""
    critic: nn.Module
    """D's parameters' owner (frozen during G's update)."""
    opt_g: Any
    opt_d: Any

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """(K, B, latent) noise -> (K, B, *image_shape) images in the data's range."""

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """(K, N, *image_shape) images -> (K, N) raw outputs."""

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP's gradient penalty (K,) on (K, B, *image_shape) real and fake images."""

    def keep(self, members: list[int]) -> None:
        """Only ``members`` (indices into the configs, in order) train on: the others stopped."""

    def average(self, weight: float) -> None:
        """Move the average of G's weights (``g_ema``) ``weight`` of the way to the current ones."""

    def member(self, k: int) -> tuple[nn.Module, nn.Module]:
        """Member k's own G (its average under ``g_ema``) and D with their current weights, as
        callbacks and results see them."""


class Solo:
    """One GAN as a population of one: the config's own modules (compiled when asked) and optimizers."""

    image_shape = (1, 28, 28)

    def __init__(self, configs: Sequence[TrainConfig], device: torch.device):
        (cfg,) = configs
        G, D = seeded_models(cfg, device)
        self.G, self.D, self.critic = G.train(), D.train(), D
        # D is shown G's images in the data's range (G.raw); callbacks get G itself, whose
        # forward maps them to [-1, 1] for scoring.
        self.g_run, self.d_run = (torch.compile(G.raw), torch.compile(D)) if cfg.compile else (G.raw, D)
        self.opt_g = optimizer(cfg, G.parameters(), cfg.lr_g)
        self.opt_d = optimizer(cfg, D.parameters(), cfg.lr_d)
        self.G_avg = copy.deepcopy(G) if cfg.g_ema else None

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.g_run(z[0]).unsqueeze(0)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.d_run(x[0]).unsqueeze(0)

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = penalty_weights(real.shape[1], len(self.image_shape), [None], real.device)[0]
        return gradient_penalty(self.D, real[0], fake[0], alpha).unsqueeze(0)  # double backward: uncompiled D

    def keep(self, members: list[int]) -> None:
        raise AssertionError("a population of one ends when its member stops")

    @torch.no_grad()
    def average(self, weight: float) -> None:
        for avg, now in zip(self.G_avg.parameters(), self.G.parameters(), strict=True):
            avg.lerp_(now, weight)

    def member(self, k: int) -> tuple[nn.Module, nn.Module]:
        if self.G_avg is None:
            return self.G, self.D
        copy_buffers(self.G_avg, self.G)
        return self.G_avg, self.D
