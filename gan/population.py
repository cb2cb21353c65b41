"""Population training: K GANs of one shape trained in lockstep as one batched model.

Every member's weights are stacked along a leading member dimension, so each linear layer of
all K generators (or discriminators) is one ``baddbmm`` and one optimizer update serves them
all: a step trains K GANs for about the fixed cost (Python, dispatch, autograd) of one.
Members are independent: each has its own initial weights, data order, noise and dropout
masks (all from its seed, drawn exactly as ``train`` draws them), its own hyperparameters
(learning rates, betas and momentum in its optimizer group, dropout rate and label smoothing
as per-member tensors), its own optimizer state and its own divergence check: a diverged
member is frozen (its weights stop changing) and reported, the others go on.

The loop is ``train``'s, step for step; docs/performance.md has the speed-ups measured by
``python -m benchmarks.population``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator, Sequence

import torch
from torch import nn

from .config import FIELDS, TrainConfig
from .data import MNIST, SCALINGS
from .errors import ConfigError
from .losses import d_loss, g_loss
from .models import Dropout, build_models, draw_noise, kept16
from .train import (
    FIXED_NOISE,
    RECORD_KEYS,
    EvalPoint,
    Records,
    TrainResult,
    _check_schedule,
    _eval_steps,
    _optimizer,
    divergence,
    step_records,
)

__all__ = ["MEMBER_FIELDS", "population_support", "train_population"]

MEMBER_FIELDS = ("seed", "lr_g", "lr_d", "beta1", "beta2", "momentum", "d_dropout", "real_label")
"""The fields population members may differ in; they must share every other (shape) field."""


def population_support(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot train in a population (one line naming the fields), or None if it can."""
    unsupported = {
        "arch": cfg.arch != "mlp",
        "g_batchnorm": cfg.g_batchnorm,
        "spectral_norm": cfg.spectral_norm != "none",
        "loss": cfg.loss == "wgan-gp",
        "compile": cfg.compile,
    }
    bad = [f"{name}={getattr(cfg, name)!r}" for name, is_bad in unsupported.items() if is_bad]
    if not bad:
        return None
    return f"population training supports MLPs without batch norm, spectral norm, wgan-gp or compile; got {', '.join(bad)}"


def _check(configs: Sequence[TrainConfig]) -> TrainConfig:
    """The members' shared config (the first); an error naming any field they may not differ in."""
    if not configs:
        raise ConfigError("train_population needs at least one config")
    first = configs[0]
    for i, cfg in enumerate(configs[1:], 1):
        differ = [f for f in FIELDS if f not in MEMBER_FIELDS and getattr(cfg, f) != getattr(first, f)]
        if differ:
            raise ConfigError(
                f"population members may differ only in {', '.join(MEMBER_FIELDS)}; member {i} differs from "
                f"member 0 in {', '.join(differ)}: train them in separate populations"
            )
    why = population_support(first)
    if why:
        raise ConfigError(f"{why}: train these configs one at a time with gan.train")
    return first


class _Linear(nn.Module):
    """K linear layers as one ``baddbmm``: (K, B, in) -> (K, B, out).

    Its weights (K, in, out) and biases (K, 1, out), and their gradients, are dense blocks of
    its network's flat buffers, so backward adds into them in place and one optimizer call per
    member covers all of that member's layers.
    """

    def __init__(self, solo: list[nn.Linear], flat: torch.Tensor, grad: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo  # the members' own layers, which results and callbacks see
        K, n_in, n_out = len(solo), solo[0].in_features, solo[0].out_features
        end_w, end_b = offset + K * n_in * n_out, offset + self.size(solo[0]) * K
        self.weight = nn.Parameter(flat[offset:end_w].view(K, n_in, n_out))
        self.bias = nn.Parameter(flat[end_w:end_b].view(K, 1, n_out))
        self.weight.grad, self.bias.grad = grad[offset:end_w].view(K, n_in, n_out), grad[end_w:end_b].view(K, 1, n_out)
        with torch.no_grad():
            self.weight.copy_(torch.stack([m.weight.t() for m in solo]))
            self.bias.copy_(torch.stack([m.bias for m in solo]).unsqueeze(1))

    @staticmethod
    def size(layer: nn.Linear) -> int:
        """Numbers of one member's layer: weights and biases."""
        return (layer.in_features + 1) * layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)

    @torch.no_grad()
    def copy_to_solo(self) -> None:
        for k, m in enumerate(self.solo):
            m.weight.copy_(self.weight[k].t())
            m.bias.copy_(self.bias[k, 0])


class _Dropout(nn.Module):
    """``gan.models.Dropout`` per member: its own rate and its own random stream.

    Each member's mask comes from 16-bit uniforms drawn from its generator exactly as ``train``
    draws them from the global RNG, so a member's masks are the solo run's masks.
    """

    def __init__(self, rates: list[float], generators: list[torch.Generator]):
        super().__init__()
        self.rates, self.generators = rates, generators
        kept = [kept16(p) for p in rates]
        self.register_buffer("threshold", torch.tensor(kept, dtype=torch.int32).sub(32768).view(-1, 1, 1))
        self.register_buffer("scale", torch.tensor([65536 / k for k in kept]).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        n = x[0].numel()
        words = (n + 3) // 4
        bits = torch.zeros(len(self.rates), words, dtype=torch.int64, device=x.device)
        for k, (p, g) in enumerate(zip(self.rates, self.generators)):
            if p > 0:  # a rate-0 member draws nothing, as train's Dropout does
                bits[k].random_(-(2**63), None, generator=g)
        uniform16 = bits.view(torch.int16)[:, :n].reshape(x.shape)
        return x * (uniform16 < self.threshold).to(x.dtype).mul_(self.scale.to(x.dtype))


class _Net(nn.Sequential):
    """One batched network from the members' ``nn.Sequential``s, layer by layer; ``flat`` and
    ``grad`` hold every weight of every member and their gradients."""

    def __init__(self, solos: list[nn.Sequential], generators: list[torch.Generator]):
        device = next(solos[0].parameters()).device
        P = sum(_Linear.size(m) for m in solos[0] if isinstance(m, nn.Linear))
        flat = torch.empty(len(solos) * P, device=device)
        grad = torch.zeros_like(flat)
        layers: list[nn.Module] = []
        offset = 0
        for parts in zip(*solos):
            first = parts[0]
            if isinstance(first, nn.Linear):
                layers.append(_Linear(list(parts), flat, grad, offset))
                offset += _Linear.size(first) * len(solos)
            elif isinstance(first, Dropout):
                layers.append(_Dropout([m.p for m in parts], generators))
            else:  # activations: shape fields, so the same in every member
                assert isinstance(first, (nn.LeakyReLU, nn.Tanh, nn.Sigmoid)), type(first)
                layers.append(first)
        super().__init__(*layers)
        self.flat, self.grad = flat, grad

    @torch.no_grad()
    def copy_to_solo(self) -> None:
        for layer in self:
            if isinstance(layer, _Linear):
                layer.copy_to_solo()


class _Optimizer:
    """``train``'s optimizer (fused Adam, ...) over every member's slices of a network's weights,
    one parameter group per distinct (learning rate, betas, momentum): repeats of one config
    share one group, so one fused update serves them all."""

    def __init__(self, net: _Net, lrs: list[float], configs: Sequence[TrainConfig]):
        self.members: list[list[nn.Parameter]] = []
        groups: dict[tuple, dict] = {}
        for k, (lr, c) in enumerate(zip(lrs, configs)):
            own = []
            for p in net.parameters():
                leaf = nn.Parameter(p.detach()[k])  # a leaf sharing member k's slice
                leaf.grad = p.grad[k]
                own.append(leaf)
            self.members.append(own)
            hyper = {"betas": (c.beta1, c.beta2)} if c.optimizer == "adam" else {"momentum": c.momentum}
            groups.setdefault((lr, *hyper.values()), {"params": [], "lr": lr, **hyper})["params"] += own
        self.torch = _optimizer(configs[0], list(groups.values()), lrs[0])

    def step(self) -> None:
        self.torch.step()

    def freeze(self, k: int) -> None:
        """Member k's weights stop changing: its slices leave their group."""
        frozen = {id(p) for p in self.members[k]}
        for group in self.torch.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in frozen]


def train_population(
    configs: Sequence[TrainConfig],
    data: MNIST,
    *,
    on_records: Callable[[int, Records], None] | None = None,
    records_every: int = 50,
    on_eval: Callable[[int, EvalPoint], None] | None = None,
    eval_every: int | None = None,
    eval_at: Collection[int] = (),
    stop_on: tuple[type[BaseException], ...] = (),
) -> list[TrainResult | BaseException]:
    """Train one GAN per config in lockstep; each result is what ``train(configs[k], data)``
    would give (within float rounding), or the :class:`DivergenceError` that stopped member k.

    Configs may differ only in :data:`MEMBER_FIELDS`. Callbacks get the member's index first;
    their :class:`EvalPoint` holds that member's own G and D, as ``train``'s does. An exception
    of a type in ``stop_on`` raised by member k's callback (a pruner's verdict, say) stops that
    member only, as a divergence does: it is frozen and the exception is its result; any
    other exception ends the whole population, as it ends ``train``. Training ends early when
    no member is left.
    """
    _check_schedule(records_every, eval_every)
    cfg = _check(configs)
    K, device = len(configs), cfg.resolved_device()
    B, latent = cfg.real_batch, cfg.latent_dim
    if len(data) < B:
        raise ConfigError(f"batch_size={cfg.batch_size} takes {B} real images, more than the {len(data)} training images")
    data = data.to(device)
    n_batches = len(data) // B
    total = cfg.total_steps(len(data))

    # Each member as train builds it: weights from its seed, then the global RNG's next draws
    # (train's dropout masks) continue in that member's own generator.
    solo_g, solo_d, mask_rngs = [], [], []
    for c in configs:
        torch.manual_seed(c.seed)
        G, D = build_models(c)
        solo_g.append(G.to(device))
        solo_d.append(D.to(device))
        rng = torch.Generator(device=device)
        if device.type == "cpu":
            rng.set_state(torch.get_rng_state())
        else:  # train's CUDA dropout is PyTorch's own kernel, not this stream
            rng.manual_seed(c.seed + 1)
        mask_rngs.append(rng)
    G = _Net([g.net for g in solo_g], mask_rngs).train()
    D = _Net([d.net for d in solo_d], mask_rngs).train()
    rngs = [torch.Generator(device=device).manual_seed(c.seed) for c in configs]  # noise and batch order
    fixed_noise = [
        draw_noise(c.noise, FIXED_NOISE, latent, generator=torch.Generator().manual_seed(c.seed)).to(device)
        for c in configs
    ]
    opt_g = _Optimizer(G, [c.lr_g for c in configs], configs)
    opt_d = _Optimizer(D, [c.lr_d for c in configs], configs)
    real_label = torch.tensor([float(c.real_label) for c in configs], device=device).unsqueeze(1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    bound = float("inf") if cfg.loss_bound is None else cfg.loss_bound

    pair = torch.empty(K, 2 * B, data.images[0].numel(), device=device)  # real, then fakes
    real, fake_slot = pair[:, :B], pair[:, B:]
    divisor, offset = SCALINGS[cfg.data_scaling]
    orders: list[torch.Tensor] = []
    cursor = n_batches

    def next_real() -> torch.Tensor:
        nonlocal orders, cursor
        if cursor == n_batches:
            orders, cursor = [torch.randperm(len(data), generator=r, device=device) for r in rngs], 0
        idx = torch.stack([o[cursor * B : (cursor + 1) * B] for o in orders]).flatten()
        cursor += 1
        rows = data.images.index_select(0, idx).view(K, B, -1)
        return real.copy_(rows).div_(divisor).sub_(offset)

    def noise() -> torch.Tensor:
        return torch.stack([draw_noise(cfg.noise, B, latent, generator=r, device=device) for r in rngs])

    step_losses: list[torch.Tensor] = []  # (K, 2) per step
    step_outs: list[torch.Tensor] = []  # (K, 2B) per step
    history: list[dict[str, list[float]]] = [{k: [] for k in RECORD_KEYS} for _ in configs]
    errors: list[BaseException | None] = [None] * K
    block_start, train_seconds, eval_seconds = time.perf_counter(), 0.0, 0.0
    evals = _eval_steps(total, on_eval, eval_every, eval_at)

    def live() -> list[int]:
        return [k for k in range(K) if errors[k] is None]

    def stop(k: int, why: BaseException) -> None:
        errors[k] = why  # frozen: its weights stop changing, the others go on
        opt_g.freeze(k)
        opt_d.freeze(k)

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
        block = step_records(cfg, torch.stack(step_losses), torch.stack(step_outs)).cpu()  # one host sync
        step_losses.clear()
        step_outs.clear()
        elapsed = time.perf_counter() - block_start
        train_seconds += elapsed
        first = step - filled + 1
        for k in live():
            rows = block[:, k]
            diverged = divergence(rows, first, bound)
            if diverged is not None:
                stop(k, diverged)
                continue
            values = {key: rows[:, i].tolist() for i, key in enumerate(RECORD_KEYS)}
            for key, v in values.items():
                history[k][key].extend(v)
            if on_records is not None:
                rate = filled * B * cfg.d_steps / max(elapsed, 1e-9)  # per member
                with stopping(k):
                    on_records(k, Records(list(range(first, step + 1)), values, rate, train_seconds))
        block_start = time.perf_counter()

    def sync_solo() -> None:
        G.copy_to_solo()
        D.copy_to_solo()

    def evaluate(step: int) -> None:
        nonlocal eval_seconds, block_start
        eval_start = time.perf_counter()
        sync_solo()
        for k in live():
            solo_g[k].eval()
            solo_d[k].eval()
            with torch.no_grad(), stopping(k):
                on_eval(k, EvalPoint(step, solo_g[k], solo_d[k], fixed_noise[k], configs[k], train_seconds))
        eval_seconds += time.perf_counter() - eval_start
        block_start = time.perf_counter()

    if 0 in evals:
        evaluate(0)
    for step in range(1, total + 1):
        if not live():
            break
        # (1) Update each D: its D(x) toward "real", D(G(z)) toward "fake", d_steps times.
        for k in range(cfg.d_steps):
            next_real()
            keep_graph = k == cfg.d_steps - 1
            with torch.set_grad_enabled(keep_graph), autocast:
                fake = G(noise())  # (K, B, pixels), in the data's range
            fake_slot.copy_(fake.detach())
            with autocast:
                out = D(pair).squeeze(-1).float()  # (K, 2B)
                losses_d = d_loss(cfg, out[:, :B], out[:, B:], real_label)  # (K,)
            D.grad.zero_()  # backward adds into it
            losses_d.sum().backward()  # members share no weights: each gets its own gradient
            opt_d.step()

        # (2) Update each G: D(G(z)) toward "real", g_steps times; D's weights get no grads.
        D.requires_grad_(False)
        for k in range(cfg.g_steps):
            if k > 0:
                with autocast:
                    fake = G(noise())
            with autocast:
                losses_g = g_loss(cfg, D(fake).squeeze(-1).float(), real_label)
            G.grad.zero_()
            losses_g.sum().backward()
            opt_g.step()
        D.requires_grad_(True)

        step_losses.append(torch.stack([losses_g.detach(), losses_d.detach()], dim=1))
        step_outs.append(out.detach())
        at_eval = step in evals
        if len(step_losses) == records_every or step == total or at_eval:
            flush(step)
        if at_eval:
            evaluate(step)

    sync_solo()
    results: list[TrainResult | BaseException] = []
    for k, c in enumerate(configs):
        solo_g[k].eval()
        solo_d[k].eval()
        results.append(errors[k] or TrainResult(
            config=c, generator=solo_g[k], discriminator=solo_d[k], device=device, steps=total,
            seconds=train_seconds, eval_seconds=eval_seconds,
            images_per_sec=total * B * cfg.d_steps / max(train_seconds, 1e-9),
            fixed_noise=fixed_noise[k], history=history[k],
        ))
    return results
