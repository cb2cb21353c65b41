"""MLP and DCGAN generators and discriminators, with every knob the studies vary.

Generators map z (B, latent_dim) to images (B, 1, 28, 28) in [-1, 1]. Discriminators map
images to one raw score per image (B,): a logit for the BCE losses, a critic value otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .config import TrainConfig

IMAGE_PIXELS = 28 * 28


class SelfAttention(nn.Module):
    """SAGAN self-attention over the positions of a feature map (Zhang et al. 2019)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(1, channels // 8)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        # Starts as the identity so attention is learned in only where it helps.
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.gamma * out.transpose(1, 2).reshape(b, c, h, w)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a mask drawn from 16 random bits per unit on the CPU.

    CPU's ``bernoulli_`` and ``rand_like`` draw one Mersenne-Twister number per unit, serially:
    the masks took 16-28 % of a training step. Here every 64-bit draw gives four 16-bit
    uniforms (compared as int16 against a threshold): the same Bernoulli mask with the keep
    probability rounded to a multiple of 1/65536 (off by less than 8e-6) and scaled by its
    exact inverse, 3x faster to draw (benchmarks.profile_step; docs/performance.md).
    CUDA keeps PyTorch's fused dropout kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return super().forward(x)
        kept = min(65535, max(1, round((1.0 - self.p) * 65536)))  # of 65536 equally likely values
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        uniform16 = bits.view(torch.int16)[: x.numel()].view(x.shape)  # each value in [-32768, 32767]
        return x * (uniform16 < kept - 32768).to(x.dtype).mul_(65536 / kept)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class MLPGenerator(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for hidden in cfg.g_hidden:
            layers.append(nn.Linear(width, hidden))
            if cfg.g_batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(_act())
            width = hidden
        layers += [nn.Linear(width, IMAGE_PIXELS), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = IMAGE_PIXELS
        for hidden in cfg.d_hidden:
            layers += [nn.Linear(width, hidden), _act(), Dropout(cfg.d_dropout)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class DCGANGenerator(nn.Module):
    """Dense to C x 7 x 7, then two stride-2 transposed convs to 28 x 28, tanh."""

    def __init__(self, cfg: TrainConfig, attention: bool):
        super().__init__()
        c, half = cfg.g_channels, max(1, cfg.g_channels // 2)
        self.channels = c
        self.project = nn.Linear(cfg.latent_dim, c * 7 * 7)
        layers: list[nn.Module] = [nn.ConvTranspose2d(c, half, 4, 2, 1)]
        if cfg.g_batchnorm:
            layers.append(nn.BatchNorm2d(half))
        layers.append(_act())
        if attention:  # before the last conv layer, on 14 x 14 maps
            layers.append(SelfAttention(half))
        layers += [nn.ConvTranspose2d(half, 1, 4, 2, 1), nn.Tanh()]
        self.head_norm = nn.BatchNorm1d(c * 7 * 7) if cfg.g_batchnorm else nn.Identity()
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.head_norm(self.project(z)), 0.2)
        return self.net(h.view(-1, self.channels, 7, 7))


class DCGANDiscriminator(nn.Module):
    """Two 3x3 stride-2 convs, LeakyReLU 0.2 and dropout, a linear head."""

    def __init__(self, cfg: TrainConfig, attention: bool):
        super().__init__()
        c1, c2 = cfg.d_channels
        layers: list[nn.Module] = [nn.Conv2d(1, c1, 3, 2, 1), _act(), Dropout(cfg.d_dropout)]
        if attention:  # before the last conv layer, on 14 x 14 maps
            layers.append(SelfAttention(c1))
        layers += [nn.Conv2d(c1, c2, 3, 2, 1), _act(), Dropout(cfg.d_dropout), nn.Flatten()]
        layers.append(nn.Linear(c2 * 7 * 7, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


def _apply_spectral_norm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            setattr(module, name, spectral_norm(child))
        else:
            _apply_spectral_norm(child)


def build_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """Generator and discriminator for ``cfg`` (on the CPU, initialised by the current RNG)."""
    in_g = cfg.spectral_norm in ("g", "both")
    in_d = cfg.spectral_norm in ("d", "both")
    if cfg.arch == "mlp":
        generator, discriminator = MLPGenerator(cfg), MLPDiscriminator(cfg)
    else:
        generator = DCGANGenerator(cfg, attention=cfg.self_attention in ("g", "both"))
        discriminator = DCGANDiscriminator(cfg, attention=cfg.self_attention in ("d", "both"))
    if in_g:
        _apply_spectral_norm(generator)
    if in_d:
        _apply_spectral_norm(discriminator)
    return generator, discriminator
