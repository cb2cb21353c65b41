"""Checkpoints of a trained GAN: both networks' weights with the config and provenance.

Files hold only tensors and plain values so they load with ``weights_only=True``.
"""

from __future__ import annotations

import io
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig
from .errors import CheckpointError, ConfigError
from .models import build_models

FORMAT = "gan-study-checkpoint/1"


def environment(device: torch.device | str | None = None) -> dict[str, str]:
    """Library versions and the device: recorded with every saved result."""
    import torchvision

    from . import __version__

    info = {
        "gan_study": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "platform": platform.platform(),
    }
    if device is not None:
        device = torch.device(device)
        info["device"] = str(device)
        if device.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(device)
            info["cuda"] = str(torch.version.cuda)
    return info


@dataclass
class Checkpoint:
    config: TrainConfig
    generator: nn.Module
    discriminator: nn.Module
    meta: dict[str, Any]


def save_checkpoint(
    path: str | os.PathLike,
    config: TrainConfig,
    generator: nn.Module,
    discriminator: nn.Module,
    **meta: Any,
) -> Path:
    """Write both networks, the config and provenance to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(generator.parameters()).device
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "generator": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
        "discriminator": {k: v.detach().cpu() for k, v in discriminator.state_dict().items()},
        "environment": environment(device),
        "meta": meta,
    }
    tmp = path.with_name(path.name + ".tmp")
    # Serialized in memory, written by Python: a full disk is then an OSError (ENOSPC, EFBIG)
    # that names the cause, where torch's own file writer raises "unexpected pos 704 vs 598".
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    try:
        tmp.write_bytes(buffer.getbuffer())
    except OSError:
        tmp.unlink(missing_ok=True)  # no half-written file left on a full disk
        raise
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the networks saved by :func:`save_checkpoint`, in eval mode on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a gan-study checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gan-study checkpoint (expected format {FORMAT})")
    try:
        config = TrainConfig.from_dict(payload["config"])
        generator, discriminator = build_models(config)
        generator.load_state_dict(_fold_norm_biases(generator, payload["generator"]))
        discriminator.load_state_dict(payload["discriminator"])
    except (ConfigError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"checkpoint {path} does not match its config: {exc}") from exc
    meta = {"environment": payload.get("environment", {}), **payload.get("meta", {})}
    return Checkpoint(config, generator.to(device).eval(), discriminator.to(device).eval(), meta)


def _fold_norm_biases(generator: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` for ``generator``, from a checkpoint saved when the layers batch norm follows had
    biases: each such bias b moves into the norm's running mean (eval mode computes
    ``(Wx + b - mean) / ...``, the same as ``(Wx - (mean - b)) / ...``)."""
    state = dict(state)
    modules = list(generator.named_modules())
    for i, (name, layer) in enumerate(modules):
        key = f"{name}.bias"
        if getattr(layer, "bias", False) is None and key in state:
            norm = next(n for n, m in modules[i + 1:] if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)))
            state[f"{norm}.running_mean"] = state[f"{norm}.running_mean"] - state.pop(key)
    return state
