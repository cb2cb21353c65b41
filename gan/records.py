"""The per-step records of training (losses, D's accuracies and mean outputs): kept on the
device as the steps run, computed and brought to the host once per block, and checked there
for divergence."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig
from .errors import DivergenceError
from .losses import d_output_mean, realness

__all__ = ["RECORD_KEYS", "Records", "StepRecords", "divergence", "step_records"]

RECORD_KEYS = ("g_loss", "d_loss", "d_acc", "d_acc_real", "d_acc_fake", "d_real_mean", "d_fake_mean")


@dataclass(frozen=True)
class Records:
    """A block of per-step records, as the host sees them every ``records_every`` steps."""

    steps: list[int]
    values: dict[str, list[float]]
    images_per_sec: float
    """Real training images consumed per second over this block."""
    seconds: float
    """Training time so far (evaluation callbacks excluded)."""


class StepRecords:
    """The steps of a block not yet read. Per step only references are kept (no extra kernels,
    no host sync); the records of the whole block are computed when it is read."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.losses: list[torch.Tensor] = []  # (K, 2): each member's g_loss and d_loss
        self.outs: list[torch.Tensor] = []  # (K, 2B): D's raw outputs on the last D step's real and fake images

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, losses_g: torch.Tensor, losses_d: torch.Tensor, out: torch.Tensor) -> None:
        self.losses.append(torch.stack([losses_g.detach(), losses_d.detach()], dim=1))
        self.outs.append(out.detach())

    def read(self) -> torch.Tensor:
        """The block's records (steps, K, len(RECORD_KEYS)) on the host: the one host sync per block."""
        block = step_records(self.cfg, torch.stack(self.losses), torch.stack(self.outs)).cpu()
        self.losses.clear()
        self.outs.clear()
        return block


def step_records(cfg: TrainConfig, losses: torch.Tensor, outs: torch.Tensor) -> torch.Tensor:
    """Records (..., len(RECORD_KEYS)) from steps' (g_loss, d_loss) (..., 2) and D's raw outputs
    on the last D step's real then fake images (..., 2B), on the device."""
    B = outs.shape[-1] // 2
    real_out, fake_out = outs[..., :B], outs[..., B:]
    acc_real = (realness(cfg, real_out) > 0).float().mean(-1)
    acc_fake = (realness(cfg, fake_out) < 0).float().mean(-1)
    columns = [losses[..., 0], losses[..., 1], (acc_real + acc_fake) / 2, acc_real, acc_fake,
               d_output_mean(cfg, real_out), d_output_mean(cfg, fake_out)]
    return torch.stack(columns, dim=-1)


def divergence(block: torch.Tensor, first_step: int, bound: float) -> DivergenceError | None:
    """The error for the first step of a records block (steps, len(RECORD_KEYS)) whose loss is
    non-finite or beyond ``bound``; None when every step is fine."""
    losses = block[:, :2]
    bad = (~torch.isfinite(losses) | (losses.abs() > bound)).any(dim=1).nonzero()
    if not len(bad):
        return None
    step, row = first_step + int(bad[0]), block[int(bad[0])]
    return DivergenceError(
        f"training diverged at step {step}: g_loss={row[0].item():.4g}, d_loss={row[1].item():.4g}", step=step
    )
