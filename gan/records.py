"""The per-step records of training, one per registered curve (``gan.metrics``, kind 'curve':
losses, D's accuracies and mean outputs): kept on the device as the steps run, computed and
brought to the host once per block, and checked there for divergence."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import TrainConfig
from .errors import DivergenceError
from .metrics import StepOutputs, metrics_of

__all__ = ["Records", "StepRecords", "divergence"]


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
        self.curves = metrics_of("curve")  # the records' columns, fixed for the run
        self.names = [m.name for m in self.curves]
        self.losses: list[torch.Tensor] = []  # (K, 2): each member's g_loss and d_loss
        self.outs: list[torch.Tensor] = []  # (K, 2B): D's raw outputs on the last D step's real and fake images

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, losses_g: torch.Tensor, losses_d: torch.Tensor, out: torch.Tensor) -> None:
        self.losses.append(torch.stack([losses_g.detach(), losses_d.detach()], dim=1))
        self.outs.append(out.detach())

    def read(self) -> torch.Tensor:
        """The block's records (steps, K, len(names)) on the host: the one host sync per block."""
        losses, outs = torch.stack(self.losses), torch.stack(self.outs)
        B = outs.shape[-1] // 2
        step = StepOutputs(self.cfg, losses[..., 0], losses[..., 1], outs[..., :B], outs[..., B:])
        block = torch.stack([m.compute(step) for m in self.curves], dim=-1).cpu()
        self.losses.clear()
        self.outs.clear()
        return block


def divergence(block: torch.Tensor, names: list[str], first_step: int, bound: float) -> DivergenceError | None:
    """The error for the first step of a records block (steps, len(names)) whose loss is
    non-finite or beyond ``bound``; None when every step is fine."""
    losses = block[:, [names.index("g_loss"), names.index("d_loss")]]
    bad = (~torch.isfinite(losses) | (losses.abs() > bound)).any(dim=1).nonzero()
    if not len(bad):
        return None
    step, (g, d) = first_step + int(bad[0]), losses[int(bad[0])].tolist()
    return DivergenceError(f"training diverged at step {step}: g_loss={g:.4g}, d_loss={d:.4g}", step=step)
