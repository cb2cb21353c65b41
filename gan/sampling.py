"""Drawing images from a trained generator: batches, interpolations, latent arithmetic."""

from __future__ import annotations

import torch
from torch import nn

from .models import draw_noise


def _latent_dim(generator: nn.Module) -> int:
    first = next(m for m in generator.modules() if isinstance(m, nn.Linear))
    return first.in_features


def _device(generator: nn.Module) -> torch.device:
    return next(generator.parameters()).device


@torch.no_grad()
def generate(generator: nn.Module, n: int, *, seed: int = 0, batch_size: int = 2000) -> torch.Tensor:
    """``n`` images (n, 1, 28, 28) in [-1, 1] on the CPU, from G's noise seeded by ``seed``."""
    device, latent = _device(generator), _latent_dim(generator)
    rng = torch.Generator().manual_seed(seed)
    was_training = generator.training
    generator.eval()
    chunks = []
    for start in range(0, n, batch_size):
        z = draw_noise(generator.noise, min(batch_size, n - start), latent, generator=rng)
        chunks.append(generator(z.to(device)).float().cpu())
    generator.train(was_training)
    return torch.cat(chunks)


@torch.no_grad()
def decode(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """G(z) in eval mode, on the CPU."""
    was_training = generator.training
    generator.eval()
    images = generator(z.to(_device(generator))).float().cpu()
    generator.train(was_training)
    return images


def interpolate(z0: torch.Tensor, z1: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """``steps`` latents on the straight line from z0 to z1, ends included: (steps, latent)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got steps={steps}")
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    return (1 - t) * z0.reshape(1, -1) + t * z1.reshape(1, -1)


def interpolation_rows(generator: nn.Module, rows: int = 5, steps: int = 10, *, seed: int = 0) -> torch.Tensor:
    """``rows`` interpolations between random latent pairs: images (rows * steps, 1, 28, 28)."""
    rng = torch.Generator().manual_seed(seed)
    ends = draw_noise(generator.noise, rows * 2, _latent_dim(generator), generator=rng).view(rows, 2, -1)
    z = torch.cat([interpolate(a, b, steps) for a, b in ends])
    return decode(generator, z)


def latent_arithmetic(generator: nn.Module, z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """G(z1), G(z2), G(z1 - z2) and G(z1 + z2), as the classic reports show them."""
    z = torch.stack([z1, z2, z1 - z2, z1 + z2])
    images = decode(generator, z)
    return dict(zip(("x1", "x2", "x1-x2", "x1+x2"), images))


def arithmetic_rows(generator: nn.Module, rows: int = 4, *, seed: int = 0) -> torch.Tensor:
    """``rows`` of :func:`latent_arithmetic` on random latent pairs: images (rows * 4, 1, 28, 28),
    each row x1, x2, x1 - x2, x1 + x2."""
    rng = torch.Generator().manual_seed(seed)
    ends = draw_noise(generator.noise, rows * 2, _latent_dim(generator), generator=rng).view(rows, 2, -1)
    return torch.cat([torch.stack(list(latent_arithmetic(generator, a, b).values())) for a, b in ends])
