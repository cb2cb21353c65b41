"""MLP and DCGAN generators and discriminators, with every knob the studies vary.

Generators map z (B, latent_dim) to images (B, 1, 28, 28): ``raw`` in the training data's range
(``TrainConfig.data_scaling``), ``forward`` in [-1, 1]. Discriminators map images in the data's
range to one raw score per image (B,): a logit for the BCE losses, a critic value otherwise.

A layer that batch norm follows has no bias: the norm subtracts it, so its gradient is float
rounding alone, which Adam would scale up to lr-sized steps of random sign (a walk that eval
mode's running mean lags behind, different on every CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .config import TrainConfig
from .data import to_signed

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


def kept16(p: float) -> int:
    """How many of the 65536 values of a 16-bit uniform keep a unit at dropout rate ``p``: the
    keep probability rounded to a multiple of 1/65536 (65536 when nothing is dropped)."""
    return 65536 if p == 0 else min(65535, max(1, round((1.0 - p) * 65536)))


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
        kept = kept16(self.p)
        bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        uniform16 = bits.view(torch.int16)[: x.numel()].view(x.shape)  # each value in [-32768, 32767]
        return x * (uniform16 < kept - 32768).to(x.dtype).mul_(65536 / kept)


def _act(slope: float) -> nn.Module:
    # In place saves a copy per layer; PyTorch's in-place backward needs a positive slope.
    return nn.LeakyReLU(slope, inplace=slope > 0)


def draw_noise(kind: str, n: int, dim: int, *, generator: torch.Generator, device=None) -> torch.Tensor:
    """``n`` latent vectors from ``TrainConfig.noise``'s distribution: normal, or uniform on [0, 1)."""
    draw = torch.rand if kind == "uniform" else torch.randn
    return draw(n, dim, generator=generator, device=device)


def _g_output(cfg: TrainConfig) -> list[nn.Module]:
    """G's output activation, after a LeakyReLU where ``g_output_leaky`` asks for one."""
    act = nn.Sigmoid() if cfg.g_output == "sigmoid" else nn.Tanh()
    return [_act(cfg.g_slope), act] if cfg.g_output_leaky else [act]


def _d_dropout(cfg: TrainConfig, layer: int) -> list[nn.Module]:
    return [Dropout(cfg.d_dropout)] if cfg.d_dropout_after(layer) else []


def _d_output(cfg: TrainConfig, width: int) -> list[nn.Module]:
    """D's output layer: one unit, a LeakyReLU where ``d_output_leaky`` asks, then any dropout."""
    leaky = [_act(cfg.d_slope)] if cfg.d_output_leaky else []
    return [nn.Linear(width, 1), *leaky, *_d_dropout(cfg, cfg.d_layers)]


class Generator(nn.Module):
    """What both generators share: the noise they take and the range they draw in.

    Training shows D ``raw`` images, in the data's range. ``forward`` maps them to [-1, 1]: the
    one place that does, so sampling, metrics, plots, evaluation callbacks and loaded
    checkpoints see every preset's images alike.
    """

    # Class-level defaults: a generator pickled before these knobs existed (an MLflow registry
    # model) unpickles without them and still samples as it was trained.
    noise, data_scaling = "normal", "signed"

    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.noise, self.data_scaling = cfg.noise, cfg.data_scaling

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, 28, 28) in the data's range: what D is shown."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return to_signed(self.raw(z), self.data_scaling)


class MLPGenerator(Generator):
    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        layers: list[nn.Module] = []
        width = cfg.latent_dim
        for hidden in cfg.g_hidden:
            layers.append(nn.Linear(width, hidden, bias=not cfg.g_batchnorm))
            if cfg.g_batchnorm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(_act(cfg.g_slope))
            width = hidden
        layers += [nn.Linear(width, IMAGE_PIXELS), *_g_output(cfg)]
        self.net = nn.Sequential(*layers)

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, 1, 28, 28)


class MLPDiscriminator(nn.Module):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        layers: list[nn.Module] = []
        width = IMAGE_PIXELS
        for layer, hidden in enumerate(cfg.d_hidden, 1):
            layers += [nn.Linear(width, hidden), _act(cfg.d_slope), *_d_dropout(cfg, layer)]
            width = hidden
        layers += _d_output(cfg, width)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1)).squeeze(1)


class DCGANGenerator(Generator):
    """Dense to C x S x S (S = g_stem), stride-2 transposed convs up to 28 x 28, the output activation.

    S = 7: two transposed convs, the second outputs the image. S = 14: one, to 28 x 28, then a
    7x7 conv with one filter outputs it.
    """

    stem, slope = 7, 0.2  # defaults for generators pickled before g_stem and g_slope (see Generator)

    def __init__(self, cfg: TrainConfig, attention: bool):
        super().__init__(cfg)
        c, half = cfg.g_channels, max(1, cfg.g_channels // 2)
        self.channels, self.stem, self.slope = c, cfg.g_stem, cfg.g_slope
        self.project = nn.Linear(cfg.latent_dim, c * self.stem**2, bias=not cfg.g_batchnorm)
        layers: list[nn.Module] = [nn.ConvTranspose2d(c, half, 4, 2, 1, bias=not cfg.g_batchnorm)]
        if cfg.g_batchnorm:
            layers.append(nn.BatchNorm2d(half))
        layers.append(_act(cfg.g_slope))
        if attention:  # before the last conv layer, on 14 x 14 maps (28 x 28 from a 14 x 14 stem)
            layers.append(SelfAttention(half))
        last = nn.ConvTranspose2d(half, 1, 4, 2, 1) if self.stem == 7 else nn.Conv2d(half, 1, 7, padding=3)
        layers += [last, *_g_output(cfg)]
        self.head_norm = nn.BatchNorm1d(c * self.stem**2) if cfg.g_batchnorm else nn.Identity()
        self.net = nn.Sequential(*layers)

    def raw(self, z: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.head_norm(self.project(z)), self.slope)
        return self.net(h.view(-1, self.channels, self.stem, self.stem))


class DCGANDiscriminator(nn.Module):
    """Two 3x3 stride-2 convs with LeakyReLU and (by default) dropout, a linear head."""

    def __init__(self, cfg: TrainConfig, attention: bool):
        super().__init__()
        c1, c2 = cfg.d_channels
        layers: list[nn.Module] = [nn.Conv2d(1, c1, 3, 2, 1), _act(cfg.d_slope), *_d_dropout(cfg, 1)]
        if attention:  # before the last conv layer, on 14 x 14 maps
            layers.append(SelfAttention(c1))
        layers += [nn.Conv2d(c1, c2, 3, 2, 1), _act(cfg.d_slope), *_d_dropout(cfg, 2), nn.Flatten()]
        layers += _d_output(cfg, c2 * 7 * 7)
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
