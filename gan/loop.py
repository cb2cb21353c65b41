"""The training loop: d_steps D updates, then g_steps G updates, per iteration, for one GAN
(``train``) or K of one shape in lockstep (``gan.population``): the same loop over K members.

Per-step records stay on the device and reach the host once every ``records_every`` steps,
so the hot loop has no host sync. docs/performance.md explains each speed choice with its
measured gain (``python -m benchmarks.throughput``).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .config import TrainConfig
from .data import MNIST, SCALINGS
from .errors import ConfigError, DivergenceError
from .losses import d_loss, d_output_mean, g_loss, gradient_penalty, realness
from .models import build_models, draw_noise

RECORD_KEYS = ("g_loss", "d_loss", "d_acc", "d_acc_real", "d_acc_fake", "d_real_mean", "d_fake_mean")
FIXED_NOISE = 64  # images in every evaluation grid


@dataclass(frozen=True)
class Records:
    """A block of per-step records, as the host sees them every ``records_every`` steps."""

    steps: list[int]
    values: dict[str, list[float]]
    images_per_sec: float
    """Real training images consumed per second over this block."""
    seconds: float
    """Training time so far (evaluation callbacks excluded)."""


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


def _optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    # fused: one kernel per optimizer step for all parameters (CPU and CUDA), about 3x faster
    # than foreach on CPU; RMSprop has no fused kernel, foreach is its fast path on CUDA.
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), fused=True)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=cfg.momentum, foreach=True)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, fused=True)


class Members(Protocol):
    """K GANs as the loop trains them: one batched G and D over a leading member dimension.

    ``train`` has one member (:class:`_Solo`, the config's own modules); ``gan.population``
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


class _Solo:
    """One GAN as a population of one: the config's own modules (compiled when asked) and optimizers."""

    image_shape = (1, 28, 28)

    def __init__(self, configs: Sequence[TrainConfig], device: torch.device):
        (cfg,) = configs
        torch.manual_seed(cfg.seed)  # weights and dropout masks
        G, D = build_models(cfg)
        self.G, self.D, self.critic = G.to(device).train(), D.to(device).train(), D
        # D is shown G's images in the data's range (G.raw); callbacks get G itself, whose
        # forward maps them to [-1, 1] for scoring.
        self.g_run, self.d_run = (torch.compile(G.raw), torch.compile(D)) if cfg.compile else (G.raw, D)
        self.opt_g = _optimizer(cfg, G.parameters(), cfg.lr_g)
        self.opt_d = _optimizer(cfg, D.parameters(), cfg.lr_d)
        self.G_avg = copy.deepcopy(G) if cfg.g_ema else None

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.g_run(z[0]).unsqueeze(0)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.d_run(x[0]).unsqueeze(0)

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        alpha = torch.rand(real.shape[1], 1, 1, 1, device=real.device)  # from the global RNG, as dropout's masks
        return gradient_penalty(self.D, real[0], fake[0], alpha).unsqueeze(0)  # double backward: uncompiled D

    def keep(self, members: list[int]) -> None:
        raise AssertionError("a population of one ends when its member stops")

    @torch.no_grad()
    def average(self, weight: float) -> None:
        for avg, now in zip(self.G_avg.parameters(), self.G.parameters(), strict=True):
            avg.lerp_(now, weight)

    @torch.no_grad()
    def member(self, k: int) -> tuple[nn.Module, nn.Module]:
        if self.G_avg is None:
            return self.G, self.D
        for avg, now in zip(self.G_avg.buffers(), self.G.buffers(), strict=True):
            avg.copy_(now)  # batch-norm statistics and spectral-norm vectors are G's own
        return self.G_avg, self.D


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
        [cfg], data, _Solo,
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
    cfg, K = configs[0], len(configs)
    device = cfg.resolved_device()
    B, latent = cfg.real_batch, cfg.latent_dim  # real images per D update, and as many fakes
    if len(data) < B:
        raise ConfigError(f"batch_size={cfg.batch_size} takes {B} real images, more than the {len(data)} training images")
    data = data.to(device)
    n_batches = len(data) // B
    total = cfg.total_steps(len(data))

    nets = build(configs, device)
    rngs = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]  # noise and batch order
    fixed_noise = [
        draw_noise(c.noise, FIXED_NOISE, latent, generator=torch.Generator().manual_seed(c.seed)).to(device)
        for c in configs
    ]
    real_label = torch.tensor([float(c.real_label) for c in configs], device=device).unsqueeze(1)  # (K, 1)
    gp_weight = torch.tensor([c.gp_weight for c in configs], device=device)
    each = torch.ones(K, device=device)  # d(total loss)/d(member's loss): members share no weights
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    bound = float("inf") if cfg.loss_bound is None else cfg.loss_bound

    # D's input is one buffer: each member's real batch is written into its first half and the
    # fakes are copied into its second half, so no torch.cat of both is built per step.
    pair = torch.empty(K, 2 * B, *nets.image_shape, device=device)
    real, fake_slot = pair[:, :B], pair[:, B:]
    divisor, offset = SCALINGS[cfg.data_scaling]
    orders: list[torch.Tensor] = []
    cursor = n_batches  # forces a fresh permutation on the first batch

    def next_real() -> torch.Tensor:
        nonlocal orders, cursor
        if cursor == n_batches:  # a new epoch: each member reshuffles on the device
            orders, cursor = [torch.randperm(len(data), generator=r, device=device) for r in rngs], 0
        idx = torch.cat([o[cursor * B : (cursor + 1) * B] for o in orders])
        cursor += 1
        # scale(data.images[idx], cfg.data_scaling), bit for bit, written in place:
        # index_select is much faster than images[idx] on the CPU.
        images = data.images.index_select(0, idx).view(real.shape)
        return real.copy_(images).div_(divisor).sub_(offset)

    def noise() -> torch.Tensor:
        return torch.stack([draw_noise(cfg.noise, B, latent, generator=r, device=device) for r in rngs])

    # Per step only references are kept (no extra kernels); the records are computed for a
    # whole block at once when it reaches the host.
    step_losses: list[torch.Tensor] = []  # (K, 2): each member's g_loss and d_loss
    step_outs: list[torch.Tensor] = []  # (K, 2B): D's raw outputs on the last D step's real and fake images
    history: list[dict[str, list[float]]] = [{key: [] for key in RECORD_KEYS} for _ in configs]
    errors: list[BaseException | None] = [None] * K
    rows = list(range(K))  # the members in the batch, in its order; a stopped one leaves it
    block_start, train_seconds, eval_seconds = time.perf_counter(), 0.0, 0.0
    evals = _eval_steps(total, on_eval, eval_every, eval_at)

    def live() -> list[int]:
        return [k for k in range(K) if errors[k] is None]

    def stop(k: int, why: BaseException) -> None:
        errors[k] = why  # it leaves the batch before the next step; the others go on

    def shrink() -> None:
        """The stopped members leave the batch, and their rows with them."""
        nonlocal rows, rngs, orders, real_label, gp_weight, each, pair, real, fake_slot
        assert not step_losses, "members stop only where a block ends"
        keep = [i for i, k in enumerate(rows) if errors[k] is None]
        rows = [rows[i] for i in keep]
        nets.keep(rows)
        rngs, orders = [rngs[i] for i in keep], [orders[i] for i in keep] if orders else orders
        real_label, gp_weight, each, pair = real_label[keep], gp_weight[keep], each[keep], pair[keep]
        real, fake_slot = pair[:, :B], pair[:, B:]

    @contextlib.contextmanager
    def stopping(k: int) -> Iterator[None]:
        try:
            yield
        except stop_on as exc:
            stop(k, exc)

    def flush(step: int) -> None:
        nonlocal block_start, train_seconds
        filled = len(step_losses)
        if filled == 0:
            return
        block = step_records(cfg, torch.stack(step_losses), torch.stack(step_outs)).cpu()  # the one host sync per block
        step_losses.clear()
        step_outs.clear()
        elapsed = time.perf_counter() - block_start
        train_seconds += elapsed
        first = step - filled + 1
        for row, k in enumerate(rows):
            mine = block[:, row]
            diverged = divergence(mine, first, bound)
            if diverged is not None:
                stop(k, diverged)
                continue
            values = {key: mine[:, i].tolist() for i, key in enumerate(RECORD_KEYS)}
            for key, v in values.items():
                history[k][key].extend(v)
            if on_records is not None:
                rate = filled * B * cfg.d_steps / max(elapsed, 1e-9)  # per member
                with stopping(k):
                    on_records(k, Records(list(range(first, step + 1)), values, rate, train_seconds))
        block_start = time.perf_counter()

    def evaluate(step: int) -> None:
        nonlocal eval_seconds, block_start
        eval_start = time.perf_counter()
        for k in live():
            G, D = nets.member(k)
            G.eval()
            D.eval()
            with torch.no_grad(), stopping(k):
                on_eval(k, EvalPoint(step, G, D, fixed_noise[k], configs[k], train_seconds))
            G.train()
            D.train()
        eval_seconds += time.perf_counter() - eval_start
        block_start = time.perf_counter()

    if 0 in evals:
        evaluate(0)
    for step in range(1, total + 1):
        if len(live()) < len(rows):
            if not live():
                break
            shrink()
        # (1) Update D: push D(x) toward "real" and D(G(z)) toward "fake", d_steps times.
        #     Only the last D step builds G's graph: its fakes are reused by the first G step.
        for k in range(cfg.d_steps):
            next_real()
            keep_graph = k == cfg.d_steps - 1
            with torch.set_grad_enabled(keep_graph), autocast:
                fake = nets.generate(noise())
            fake_slot.copy_(fake.detach())
            with autocast:
                out = nets.discriminate(pair).float()  # (K, 2B): real images, then fakes
                losses_d = d_loss(cfg, out[:, :B], out[:, B:], real_label)  # (K,)
            if cfg.loss == "wgan-gp":  # double backward, full precision
                losses_d = losses_d + gp_weight * nets.penalty(real, fake_slot)
            nets.opt_d.zero_grad()
            losses_d.backward(each)
            nets.opt_d.step()

        # (2) Update G: push D(G(z)) toward "real", g_steps times; D's weights get no grads.
        nets.critic.requires_grad_(False)
        for k in range(cfg.g_steps):
            if k > 0:
                with autocast:
                    fake = nets.generate(noise())
            with autocast:
                losses_g = g_loss(cfg, nets.discriminate(fake).float(), real_label)
            nets.opt_g.zero_grad()
            losses_g.backward(each)
            nets.opt_g.step()
        nets.critic.requires_grad_(True)
        if cfg.g_ema:  # warmed up: early on the average follows G closely
            nets.average(1 - min(cfg.g_ema, (1 + step) / (10 + step)))

        step_losses.append(torch.stack([losses_g.detach(), losses_d.detach()], dim=1))
        step_outs.append(out.detach())
        at_eval = step in evals
        if len(step_losses) == records_every or step == total or at_eval:
            flush(step)
        if at_eval:
            evaluate(step)

    results: list[TrainResult | BaseException] = []
    for k, c in enumerate(configs):
        G, D = nets.member(k)
        G.eval()
        D.eval()
        results.append(errors[k] or TrainResult(
            config=c, generator=G, discriminator=D, device=device, steps=total,
            seconds=train_seconds, eval_seconds=eval_seconds,
            images_per_sec=total * B * cfg.d_steps / max(train_seconds, 1e-9),
            fixed_noise=fixed_noise[k], history=history[k],
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
