"""What each member of a training loop draws per step: its real batch, in its own shuffled order
per epoch, and its noise, both from a generator seeded with its seed, on the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import TrainConfig
from .data import MNIST, SCALINGS
from .models import draw_noise

__all__ = ["Draws"]


class Draws:
    """The members' real batches and noise, one row per member still training.

    D's input is one buffer, :attr:`pair`: each member's real batch is written into its first
    half (:attr:`real`) and the loop copies the fakes into its second half (:attr:`fake_slot`),
    so no torch.cat of both is built per step.
    """

    def __init__(self, configs: Sequence[TrainConfig], data: MNIST, image_shape: tuple[int, ...],
                 device: torch.device):
        cfg = configs[0]  # the members share every field used here but the seed
        self.data, self.device, self.noise_kind = data, device, cfg.noise
        self.B, self.latent = cfg.real_batch, cfg.latent_dim
        self.n_batches = len(data) // self.B
        self.divisor, self.offset = SCALINGS[cfg.data_scaling]
        self.rngs = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]
        self.orders: list[torch.Tensor] = []
        self.cursor = self.n_batches  # forces a fresh permutation on the first batch
        self._slots(torch.empty(len(configs), 2 * self.B, *image_shape, device=device))

    def _slots(self, pair: torch.Tensor) -> None:
        self.pair, self.real, self.fake_slot = pair, pair[:, : self.B], pair[:, self.B :]

    def next_real(self) -> torch.Tensor:
        """Each member's next real batch, scaled, written into :attr:`real`."""
        B = self.B
        if self.cursor == self.n_batches:  # a new epoch: each member reshuffles on the device
            self.orders = [torch.randperm(len(self.data), generator=r, device=self.device) for r in self.rngs]
            self.cursor = 0
        idx = torch.cat([o[self.cursor * B : (self.cursor + 1) * B] for o in self.orders])
        self.cursor += 1
        # scale(data.images[idx], cfg.data_scaling), bit for bit, written in place:
        # index_select is much faster than images[idx] on the CPU.
        images = self.data.images.index_select(0, idx).view(self.real.shape)
        return self.real.copy_(images).div_(self.divisor).sub_(self.offset)

    def noise(self) -> torch.Tensor:
        """(K, B, latent): each member's next noise batch."""
        return torch.stack([draw_noise(self.noise_kind, self.B, self.latent, generator=r, device=self.device)
                            for r in self.rngs])

    def keep(self, rows: list[int]) -> None:
        """Only the members in ``rows`` (of this batch, in order) draw on."""
        self.rngs = [self.rngs[i] for i in rows]
        self.orders = [self.orders[i] for i in rows] if self.orders else self.orders
        self._slots(self.pair[rows])
