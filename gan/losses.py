"""GAN losses on raw discriminator outputs, and D's accuracy read from the same outputs.

Label flip swaps the roles of the targets: D learns real -> 0 and fake -> 1 and G pushes its
images toward 0. For hinge and wgan-gp, where there are no targets, it negates the score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TrainConfig


Label = float | torch.Tensor
"""A target: a number, or a population's (K, 1) tensor of each member's value."""


def _targets(cfg: TrainConfig, real_label: Label | None = None) -> tuple[Label, Label, float]:
    """(D's target for real, D's target for fake, G's target for fake)."""
    real, fake, wanted = cfg.real_label if real_label is None else real_label, 0.0, 1.0
    if cfg.label_flip:
        return fake, real, 0.0
    return real, fake, wanted


def _sign(cfg: TrainConfig) -> float:
    return -1.0 if cfg.label_flip else 1.0


def _bce(out: torch.Tensor, target: Label) -> torch.Tensor:
    full = target.expand_as(out) if isinstance(target, torch.Tensor) else torch.full_like(out, target)
    return F.binary_cross_entropy_with_logits(out, full, reduction="none").mean(-1)


# Every loss is a mean over the last dim: a scalar for one GAN's outputs (B,), one loss per
# member for a population's (K, B); ``real_label`` overrides the config's (gan.population).


def d_loss(cfg: TrainConfig, real_out: torch.Tensor, fake_out: torch.Tensor, real_label: Label | None = None) -> torch.Tensor:
    """Discriminator loss (without the gradient penalty)."""
    if cfg.loss in ("ns", "minimax"):
        t_real, t_fake, _ = _targets(cfg, real_label)
        return _bce(real_out, t_real) + _bce(fake_out, t_fake)
    if cfg.loss == "lsgan":
        t_real, t_fake, _ = _targets(cfg, real_label)
        return 0.5 * ((real_out - t_real).pow(2).mean(-1) + (fake_out - t_fake).pow(2).mean(-1))
    s = _sign(cfg)
    if cfg.loss == "hinge":
        return F.relu(1.0 - s * real_out).mean(-1) + F.relu(1.0 + s * fake_out).mean(-1)
    return s * (fake_out.mean(-1) - real_out.mean(-1))  # wgan-gp critic


def g_loss(cfg: TrainConfig, fake_out: torch.Tensor, real_label: Label | None = None) -> torch.Tensor:
    """Generator loss on D's outputs for generated images."""
    if cfg.loss == "ns":
        _, _, wanted = _targets(cfg, real_label)
        return _bce(fake_out, wanted)
    if cfg.loss == "minimax":  # G maximises D's loss on fakes
        _, t_fake, _ = _targets(cfg, real_label)
        return -_bce(fake_out, t_fake)
    if cfg.loss == "lsgan":
        _, _, wanted = _targets(cfg)
        return 0.5 * (fake_out - wanted).pow(2).mean(-1)
    return -_sign(cfg) * fake_out.mean(-1)  # hinge and wgan-gp


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al.): (||grad D(x_hat)|| - 1)^2 on the interpolates
    x_hat = alpha real + (1 - alpha) fake, averaged over the last dim of D's outputs: a scalar
    for one GAN's (B,), one per member for a population's (K, B). ``alpha`` has the outputs'
    shape followed by ones."""
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(scores.dim()).norm(dim=-1) - 1).pow(2).mean(-1)


def realness(cfg: TrainConfig, out: torch.Tensor) -> torch.Tensor:
    """Positive where D calls an image real under the run's target convention."""
    centred = out - 0.5 if cfg.loss == "lsgan" else out
    return -centred if cfg.label_flip else centred


def d_output_mean(cfg: TrainConfig, out: torch.Tensor) -> torch.Tensor:
    """Mean D(x) over the last dim, as the reports plot it: a probability for BCE losses, the raw
    score otherwise."""
    return (torch.sigmoid(out) if cfg.loss in ("ns", "minimax") else out).mean(-1)
