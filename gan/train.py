"""The training loop: d_steps D updates, then g_steps G updates, per iteration.

Per-step records stay on the device and reach the host once every ``records_every`` steps,
so the hot loop has no host sync. docs/performance.md explains each speed choice with its
measured gain (``python -m benchmarks.throughput``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

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
    _check_schedule(records_every, eval_every)
    device = cfg.resolved_device()
    B, latent = cfg.real_batch, cfg.latent_dim  # real images per D update, and as many fakes
    if len(data) < B:
        raise ConfigError(f"batch_size={cfg.batch_size} takes {B} real images, more than the {len(data)} training images")
    data = data.to(device)
    n_batches = len(data) // B
    total = cfg.total_steps(len(data))

    torch.manual_seed(cfg.seed)  # weights and dropout masks
    G, D = build_models(cfg)
    G.to(device).train()
    D.to(device).train()
    rng = torch.Generator(device=device).manual_seed(cfg.seed)  # noise and batch order
    fixed_noise = draw_noise(cfg.noise, FIXED_NOISE, latent, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    opt_g = _optimizer(cfg, G.parameters(), cfg.lr_g)
    opt_d = _optimizer(cfg, D.parameters(), cfg.lr_d)
    # D is shown G's images in the data's range (G.raw); callbacks get G itself, whose forward
    # maps them to [-1, 1] for scoring.
    G_run, D_run = (torch.compile(G.raw), torch.compile(D)) if cfg.compile else (G.raw, D)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    bound = float("inf") if cfg.loss_bound is None else cfg.loss_bound

    # D's input is one buffer: the real batch is written into its first half and the fakes are
    # copied into its second half, so no torch.cat of both is built per step.
    pair = torch.empty(2 * B, 1, *data.images.shape[1:], device=device)
    real, fake_slot = pair[:B], pair[B:]
    divisor, offset = SCALINGS[cfg.data_scaling]
    order = torch.empty(0, dtype=torch.long, device=device)
    cursor = n_batches  # forces a fresh permutation on the first batch

    def next_real() -> torch.Tensor:
        nonlocal order, cursor
        if cursor == n_batches:  # a new epoch: reshuffle on the device
            order, cursor = torch.randperm(len(data), generator=rng, device=device), 0
        idx = order[cursor * B : (cursor + 1) * B]
        cursor += 1
        # scale(data.images[idx], cfg.data_scaling), bit for bit, written in place:
        # index_select is much faster than images[idx] on the CPU.
        rows = data.images.index_select(0, idx).unsqueeze(1)
        return real.copy_(rows).div_(divisor).sub_(offset)

    def noise() -> torch.Tensor:
        return draw_noise(cfg.noise, B, latent, generator=rng, device=device)

    # Per step only references are kept (no extra kernels); the records are computed for a
    # whole block at once when it reaches the host.
    step_losses: list[torch.Tensor] = []  # (g_loss, d_loss) of each step
    step_outs: list[torch.Tensor] = []  # D's raw outputs on the last D step's real and fake images
    history: dict[str, list[float]] = {k: [] for k in RECORD_KEYS}
    block_start, train_seconds, eval_seconds = time.perf_counter(), 0.0, 0.0
    evals = _eval_steps(total, on_eval, eval_every, eval_at)

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
        error = divergence(block, first, bound)
        if error is not None:
            raise error
        values = {k: block[:, i].tolist() for i, k in enumerate(RECORD_KEYS)}
        for k, v in values.items():
            history[k].extend(v)
        if on_records is not None:
            rate = filled * B * cfg.d_steps / max(elapsed, 1e-9)
            on_records(Records(list(range(first, step + 1)), values, rate, train_seconds))
        block_start = time.perf_counter()

    def evaluate(step: int) -> None:
        nonlocal eval_seconds, block_start
        eval_start = time.perf_counter()
        G.eval()
        D.eval()
        with torch.no_grad():
            on_eval(EvalPoint(step, G, D, fixed_noise, cfg, train_seconds))
        G.train()
        D.train()
        eval_seconds += time.perf_counter() - eval_start
        block_start = time.perf_counter()

    if 0 in evals:
        evaluate(0)
    for step in range(1, total + 1):
        # (1) Update D: push D(x) toward "real" and D(G(z)) toward "fake", d_steps times.
        #     Only the last D step builds G's graph: its fakes are reused by the first G step.
        for k in range(cfg.d_steps):
            next_real()
            keep_graph = k == cfg.d_steps - 1
            with torch.set_grad_enabled(keep_graph), autocast:
                fake = G_run(noise())
            fake_slot.copy_(fake.detach())
            with autocast:
                out = D_run(pair).float()  # real images, then fakes
                real_out, fake_out = out[:B], out[B:]
                loss_d = d_loss(cfg, real_out, fake_out)
            if cfg.loss == "wgan-gp":  # double backward: uncompiled D, full precision
                loss_d = loss_d + cfg.gp_weight * gradient_penalty(D, real, fake_slot)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

        # (2) Update G: push D(G(z)) toward "real", g_steps times; D's weights get no grads.
        D.requires_grad_(False)
        for k in range(cfg.g_steps):
            if k > 0:
                with autocast:
                    fake = G_run(noise())
            with autocast:
                loss_g = g_loss(cfg, D_run(fake).float())
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        D.requires_grad_(True)

        step_losses.append(torch.stack([loss_g.detach(), loss_d.detach()]))
        step_outs.append(out.detach())
        at_eval = step in evals
        if len(step_losses) == records_every or step == total or at_eval:
            flush(step)
        if at_eval:
            evaluate(step)

    G.eval()
    D.eval()
    return TrainResult(
        config=cfg,
        generator=G,
        discriminator=D,
        device=device,
        steps=total,
        seconds=train_seconds,
        eval_seconds=eval_seconds,
        images_per_sec=total * B * cfg.d_steps / max(train_seconds, 1e-9),
        fixed_noise=fixed_noise,
        history=history,
    )


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
