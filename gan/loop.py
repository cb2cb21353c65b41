"""The training loop of Goodfellow et al. (2014), Algorithm 1, for one GAN (``train``) or K of
one shape in lockstep (``gan.population``): the same loop over K members (``gan.members``).

Per-step records stay on the device and reach the host once every ``records_every`` steps
(``gan.records``), so the hot loop has no host sync. docs/performance.md explains each speed
choice with its measured gain (``python -m benchmarks.throughput``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import TrainConfig
from .data import MNIST
from .draws import Draws
from .errors import ConfigError
from .losses import d_loss, g_loss
from .members import Members, Solo
from .models import draw_noise
from .records import Records, StepRecords, divergence

__all__ = ["FIXED_NOISE", "EvalPoint", "TrainResult", "train", "train_members"]

FIXED_NOISE = 64  # images in every evaluation grid


@dataclass(frozen=True)
class EvalPoint:
    """What an evaluation callback sees; G and D are in eval mode, gradients off."""

    step: int
    generator: nn.Module
    discriminator: nn.Module
    fixed_noise: torch.Tensor
    config: TrainConfig
    seconds: float


@dataclass
class TrainResult:
    config: TrainConfig
    generator: nn.Module
    discriminator: nn.Module
    device: torch.device
    steps: int
    seconds: float
    """Training time, evaluation callbacks excluded."""
    eval_seconds: float
    images_per_sec: float
    fixed_noise: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)


def train(
    cfg: TrainConfig,
    data: MNIST,
    *,
    on_records: Callable[[Records], None] | None = None,
    records_every: int = 50,
    on_eval: Callable[[EvalPoint], None] | None = None,
    eval_every: int | None = None,
    eval_at: Collection[int] = (),
) -> TrainResult:
    """Train one GAN on ``data``; see :class:`TrainConfig` for every knob.

    ``on_records`` gets the per-step records every ``records_every`` steps (and at the end);
    ``on_eval`` is called at step 0 (the untrained models, before any update), every
    ``eval_every`` steps, and at the extra steps ``eval_at``, all before the last step (the
    caller evaluates the result itself). A non-finite loss, or one beyond ``cfg.loss_bound``, raises
    :class:`DivergenceError` with the first bad step.
    """
    (result,) = train_members(
        [cfg], data, Solo,
        on_records=None if on_records is None else lambda _, records: on_records(records),
        records_every=records_every,
        on_eval=None if on_eval is None else lambda _, point: on_eval(point),
        eval_every=eval_every, eval_at=eval_at,
    )
    if isinstance(result, BaseException):
        raise result
    return result


def train_members(
    configs: Sequence[TrainConfig],
    data: MNIST,
    build: Callable[[Sequence[TrainConfig], torch.device], Members],
    *,
    on_records: Callable[[int, Records], None] | None = None,
    records_every: int = 50,
    on_eval: Callable[[int, EvalPoint], None] | None = None,
    eval_every: int | None = None,
    eval_at: Collection[int] = (),
    stop_on: tuple[type[BaseException], ...] = (),
) -> list[TrainResult | BaseException]:
    """The training loop, for the members ``build(configs, device)`` makes: ``train`` and
    ``train_population`` in one. Per member, its result or the exception that stopped it (its
    :class:`DivergenceError`, or one of ``stop_on`` from its callback); the configs share every
    shape field, so ``configs[0]`` stands for all of them in those."""
    _check_schedule(records_every, eval_every)
    loop = _Loop(configs, data, build, on_records, records_every, on_eval, stop_on)
    return loop.run(_eval_steps(loop.total, on_eval, eval_every, eval_at))


class _Loop:
    """One training run of K members: their state, one method per part of a step."""

    def __init__(self, configs: Sequence[TrainConfig], data: MNIST,
                 build: Callable[[Sequence[TrainConfig], torch.device], Members],
                 on_records: Callable[[int, Records], None] | None, records_every: int,
                 on_eval: Callable[[int, EvalPoint], None] | None, stop_on: tuple[type[BaseException], ...]):
        cfg = self.cfg = configs[0]
        self.configs, self.device = configs, cfg.resolved_device()
        self.B = cfg.real_batch  # real images per D update, and as many fakes
        if len(data) < self.B:
            raise ConfigError(f"batch_size={cfg.batch_size} takes {self.B} real images, more than the {len(data)} training images")
        data = data.to(self.device)
        self.total = cfg.total_steps(len(data))
        self.on_records, self.records_every, self.on_eval, self.stop_on = on_records, records_every, on_eval, stop_on

        self.nets = build(configs, self.device)
        self.draws = Draws(configs, data, self.nets.image_shape, self.device)
        self.fixed_noise = [
            draw_noise(c.noise, FIXED_NOISE, cfg.latent_dim, generator=torch.Generator().manual_seed(c.seed)).to(self.device)
            for c in configs
        ]
        # One row per member in the batch, in its order (self.rows); a stopped member leaves it.
        self.rows = list(range(len(configs)))
        self.real_label = torch.tensor([float(c.real_label) for c in configs], device=self.device).unsqueeze(1)  # (K, 1)
        self.gp_weight = torch.tensor([c.gp_weight for c in configs], device=self.device)
        self.each = torch.ones(len(configs), device=self.device)  # d(total loss)/d(member's loss): members share no weights
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
        self.bound = float("inf") if cfg.loss_bound is None else cfg.loss_bound

        self.records = StepRecords(cfg)
        self.history: list[dict[str, list[float]]] = [{key: [] for key in self.records.names} for _ in configs]
        self.errors: list[BaseException | None] = [None] * len(configs)
        self.block_start, self.train_seconds, self.eval_seconds = time.perf_counter(), 0.0, 0.0

    def run(self, evals: set[int]) -> list[TrainResult | BaseException]:
        """Goodfellow et al. (2014), Algorithm 1, for K members at once::

            for number of training iterations do
                for k steps do
                    Sample minibatch of m noise samples {z(1), ..., z(m)} from noise prior pg(z).
                    Sample minibatch of m examples {x(1), ..., x(m)} from data generating distribution pdata(x).
                    Update the discriminator by ascending its stochastic gradient:
                        grad_thetad 1/m sum_i [log D(x(i)) + log(1 - D(G(z(i))))].
                end for
                Sample minibatch of m noise samples {z(1), ..., z(m)} from noise prior pg(z).
                Update the generator by descending its stochastic gradient:
                    grad_thetag 1/m sum_i log(1 - D(G(z(i)))).
            end for

        with k = ``d_steps``, the generator's update repeated ``g_steps`` times, and the loss
        ``cfg.loss`` (``ns``, the paper's recommended non-saturating G loss, by default). Each
        iteration then records its losses, evaluates at the steps ``evals``, and, at the next
        iteration's start, drops the members that stopped.
        """
        if 0 in evals:
            self.evaluate(0)
        for step in range(1, self.total + 1):
            if not self.drop_stopped():
                break
            fake, losses_d, out = self.update_d()
            losses_g = self.update_g(fake, step)
            self.records.add(losses_g, losses_d, out)
            if len(self.records) == self.records_every or step == self.total or step in evals:
                self.read_records(step)
            if step in evals:
                self.evaluate(step)
        return self.results()

    def update_d(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(1) Push D(x) toward "real" and D(G(z)) toward "fake", ``d_steps`` times; D's loss
        sees G's images detached. Only the last D step builds G's graph: its fakes are reused by
        the first G step. That step's fakes, D's losses (K,) and raw outputs (K, 2B)."""
        cfg, nets, draws, B = self.cfg, self.nets, self.draws, self.B
        for i in range(cfg.d_steps):
            real = draws.next_real()
            with torch.set_grad_enabled(i == cfg.d_steps - 1), self.autocast:
                fake = nets.generate(draws.noise())
            draws.fake_slot.copy_(fake.detach())
            with self.autocast:
                out = nets.discriminate(draws.pair).float()  # (K, 2B): real images, then fakes
                losses = d_loss(cfg, out[:, :B], out[:, B:], self.real_label)  # (K,)
            if cfg.loss == "wgan-gp":  # double backward, full precision
                losses = losses + self.gp_weight * nets.penalty(real, draws.fake_slot)
            nets.opt_d.zero_grad()
            losses.backward(self.each)
            nets.opt_d.step()
        return fake, losses, out

    def update_g(self, fake: torch.Tensor, step: int) -> torch.Tensor:
        """(2) Push D(G(z)) toward "real", ``g_steps`` times, the first on D's last ``fake``;
        D's weights get no gradients. Then G's average (``g_ema``) follows. G's losses (K,)."""
        cfg, nets = self.cfg, self.nets
        nets.critic.requires_grad_(False)
        for i in range(cfg.g_steps):
            if i > 0:
                with self.autocast:
                    fake = nets.generate(self.draws.noise())
            with self.autocast:
                losses = g_loss(cfg, nets.discriminate(fake).float(), self.real_label)
            nets.opt_g.zero_grad()
            losses.backward(self.each)
            nets.opt_g.step()
        nets.critic.requires_grad_(True)
        if cfg.g_ema:  # warmed up: early on the average follows G closely
            nets.average(1 - min(cfg.g_ema, (1 + step) / (10 + step)))
        return losses

    def read_records(self, step: int) -> None:
        """The block of records ending at ``step`` reaches the host: each member's is checked
        for divergence, kept in its history and handed to ``on_records``."""
        filled = len(self.records)
        block = self.records.read()
        elapsed = time.perf_counter() - self.block_start
        self.train_seconds += elapsed
        first = step - filled + 1
        for row, member in enumerate(self.rows):
            mine = block[:, row]
            diverged = divergence(mine, self.records.names, first, self.bound)
            if diverged is not None:
                self.errors[member] = diverged  # it leaves the batch before the next step
                continue
            values = {key: mine[:, i].tolist() for i, key in enumerate(self.records.names)}
            for key, v in values.items():
                self.history[member][key].extend(v)
            if self.on_records is not None:
                rate = filled * self.B * self.cfg.d_steps / max(elapsed, 1e-9)  # per member
                with self.stopping(member):
                    self.on_records(member, Records(list(range(first, step + 1)), values, rate, self.train_seconds))
        self.block_start = time.perf_counter()

    def evaluate(self, step: int) -> None:
        """``on_eval`` for every member still training, its G and D in eval mode (training time paused)."""
        eval_start = time.perf_counter()
        for member in self.rows:
            if self.errors[member] is not None:
                continue
            G, D = self.nets.member(member)
            G.eval()
            D.eval()
            with torch.no_grad(), self.stopping(member):
                self.on_eval(member, EvalPoint(step, G, D, self.fixed_noise[member], self.configs[member], self.train_seconds))
            G.train()
            D.train()
        self.eval_seconds += time.perf_counter() - eval_start
        self.block_start = time.perf_counter()

    @contextlib.contextmanager
    def stopping(self, member: int) -> Iterator[None]:
        """An exception of ``stop_on`` from ``member``'s callback stops that member only."""
        try:
            yield
        except self.stop_on as exc:
            self.errors[member] = exc  # it leaves the batch before the next step; the others go on

    def drop_stopped(self) -> bool:
        """The stopped members leave the batch, and their rows with them; False when none is left."""
        keep = [i for i, member in enumerate(self.rows) if self.errors[member] is None]
        if len(keep) == len(self.rows):
            return True
        if not keep:
            return False
        assert not len(self.records), "members stop only where a block ends"
        self.rows = [self.rows[i] for i in keep]
        self.nets.keep(self.rows)
        self.draws.keep(keep)
        self.real_label, self.gp_weight, self.each = self.real_label[keep], self.gp_weight[keep], self.each[keep]
        return True

    def results(self) -> list[TrainResult | BaseException]:
        results: list[TrainResult | BaseException] = []
        for member, c in enumerate(self.configs):
            G, D = self.nets.member(member)
            G.eval()
            D.eval()
            results.append(self.errors[member] or TrainResult(
                config=c, generator=G, discriminator=D, device=self.device, steps=self.total,
                seconds=self.train_seconds, eval_seconds=self.eval_seconds,
                images_per_sec=self.total * self.B * self.cfg.d_steps / max(self.train_seconds, 1e-9),
                fixed_noise=self.fixed_noise[member], history=self.history[member],
            ))
        return results


def _check_schedule(records_every: int, eval_every: int | None) -> None:
    if records_every < 1:
        raise ConfigError(f"records_every must be >= 1, got records_every={records_every}")
    if eval_every is not None and eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got eval_every={eval_every}")


def _eval_steps(total: int, on_eval: Callable | None, eval_every: int | None, eval_at: Collection[int]) -> set[int]:
    """Steps that pause training for ``on_eval``: step 0 gives every curve of scores a start."""
    if on_eval is None or (eval_every is None and not eval_at):
        return set()
    evals = {0, *(s for s in eval_at if 0 < s < total)}
    if eval_every is not None:
        evals.update(range(eval_every, total, eval_every))
    return evals
