"""Population training: K GANs of one shape trained in lockstep as one batched model.

Every member's weights are stacked along a leading member dimension, so each linear layer of
all K generators (or discriminators) is one ``baddbmm``, each conv one conv with ``groups=K``
(``gan._batched``), and one optimizer update serves them all: a step trains K GANs for about
the fixed cost (Python, dispatch, autograd) of one, in fewer, larger kernels.
Members are independent: each has its own initial weights, data order, noise and dropout
masks (all from its seed, drawn exactly as ``train`` draws them), its own hyperparameters
(learning rates, betas and momentum in its optimizer group; dropout rate, label smoothing and
gradient-penalty weight as per-member tensors), its own optimizer state and its own divergence check: a diverged
member leaves the batch (its weights stop changing, its compute ends) and is reported, the
others go on.

The loop is ``train``'s own (``gan.loop.train_members``): ``train`` is its population of one.
docs/performance.md has the speed-ups measured by ``python -m benchmarks.population``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
from torch import nn

from ._batched import Net
from .config import FIELDS, TrainConfig
from .data import MNIST
from .errors import ConfigError
from .losses import gradient_penalty
from .loop import EvalPoint, TrainResult, train_members
from .members import copy_buffers, optimizer, penalty_weights, seeded_models
from .models import IMAGE_PIXELS, DCGANGenerator
from .records import Records

__all__ = ["MEMBER_FIELDS", "batching_pays", "population_support", "populations", "shape_key", "train_population"]

MEMBER_FIELDS = ("seed", "lr_g", "lr_d", "beta1", "beta2", "momentum", "d_dropout", "real_label", "gp_weight")
"""The fields population members may differ in; they must share every other (shape) field."""


def population_support(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot train in a population (one line naming the fields), or None if it can."""
    if cfg.compile:  # a population's batched layers are not the modules compile would trace
        return "population training runs uncompiled; got compile=True"
    return None


def shape_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """The fields population members share, with ``cfg``'s values: configs of equal keys (and
    :func:`population_support`) can train as one population."""
    return tuple((f, getattr(cfg, f)) for f in FIELDS if f not in MEMBER_FIELDS)


def batching_pays(cfg: TrainConfig) -> bool:
    """Whether a population of ``cfg``'s shape trains faster than its members one at a time.
    Not DCGANs on the CPU: there a grouped conv is no faster than one conv per member, and a
    population of 4 ran at x0.94 of solo runs (docs/performance.md)."""
    return not (cfg.arch == "dcgan" and cfg.resolved_device().type == "cpu")


def populations(configs: Sequence[TrainConfig], size: int, *, where_faster: bool = False) -> list[list[int]]:
    """The indices of ``configs`` in populations of up to ``size``: configs of one
    :func:`shape_key` together, in order of first appearance. A config trains alone where it
    cannot train in a population (:func:`population_support`) and, ``where_faster``, where its
    population would be no faster (:func:`batching_pays`)."""
    groups: dict[Any, list[int]] = {}
    for i, cfg in enumerate(configs):
        alone = population_support(cfg) is not None or (where_faster and not batching_pays(cfg))
        groups.setdefault(("alone", i) if alone else shape_key(cfg), []).append(i)
    return [group[first:first + size] for group in groups.values() for first in range(0, len(group), size)]


def _check(configs: Sequence[TrainConfig]) -> None:
    """An error naming any field the members may not differ in, or why they cannot train together."""
    if not configs:
        raise ConfigError("train_population needs at least one config")
    first = shape_key(configs[0])
    for i, cfg in enumerate(configs[1:], 1):
        differ = [f for (f, a), (_, b) in zip(first, shape_key(cfg)) if a != b]
        if differ:
            raise ConfigError(
                f"population members may differ only in {', '.join(MEMBER_FIELDS)}; member {i} differs from "
                f"member 0 in {', '.join(differ)}: train them in separate populations"
            )
    why = population_support(configs[0])
    if why:
        raise ConfigError(f"{why}: train these configs one at a time with gan.train")


def _layers(net: nn.Module) -> list[nn.Module]:
    """A member's G or D as the layers its forward applies, in order (``gan._batched.Net``'s input)."""
    if isinstance(net, DCGANGenerator):  # its dense stem, then its conv stack
        norm = [] if isinstance(net.head_norm, nn.Identity) else [net.head_norm]
        stem = [net.project, *norm, nn.LeakyReLU(net.slope), nn.Unflatten(-1, (net.channels, net.stem, net.stem))]
        return stem + list(net.net)
    return list(net.net)


class _Optimizer:
    """``train``'s optimizer (fused Adam, ...) over every member's slices of a network's weights,
    one parameter group per distinct (learning rate, betas, momentum): repeats of one config
    share one group, so one fused update serves them all."""

    def __init__(self, net: Net, lrs: list[float], configs: Sequence[TrainConfig]):
        self.batched = list(net.parameters())
        self.members: list[list[nn.Parameter]] = []
        groups: dict[tuple, dict] = {}
        for k, (lr, c) in enumerate(zip(lrs, configs)):
            own = [nn.Parameter(p.detach()[k]) for p in self.batched]  # leaves sharing member k's slices
            self.members.append(own)
            hyper = {"betas": (c.beta1, c.beta2)} if c.optimizer == "adam" else {"momentum": c.momentum}
            groups.setdefault((lr, *hyper.values()), {"params": [], "lr": lr, **hyper})["params"] += own
        self.torch = optimizer(configs[0], list(groups.values()), lrs[0])

    def zero_grad(self) -> None:
        for p in self.batched:  # backward then hands each its gradient, not adding into zeros (5 % faster)
            p.grad = None

    def step(self) -> None:
        for k, own in enumerate(self.members):  # each member's slice of this step's gradients
            for leaf, p in zip(own, self.batched):
                leaf.grad = p.grad[k]
        self.torch.step()

    def carry(self, old: _Optimizer, rows: list[int]) -> None:
        """Go on from ``old``'s state (moments, step counts) of its members ``rows``: this
        optimizer's members, in that order."""
        for leaves, i in zip(self.members, rows, strict=True):
            for leaf, before in zip(leaves, old.members[i], strict=True):
                if before in old.torch.state:  # none before the first step
                    self.torch.state[leaf] = old.torch.state[before]


class _Batched:
    """The members of one shape still training, as one batched G and D built from the members'
    own modules (each as ``train`` builds it), which callbacks and results see."""

    def __init__(self, configs: Sequence[TrainConfig], device: torch.device):
        self.image_shape = (IMAGE_PIXELS,) if configs[0].arch == "mlp" else (1, 28, 28)
        # Each member as train builds it: weights from its seed, then the global RNG's next
        # draws (train's dropout masks) continue in that member's own generator.
        self.configs, self.solo_g, self.solo_d, self.mask_rngs = list(configs), [], [], []
        for c in configs:
            G, D = seeded_models(c, device)
            self.solo_g.append(G)
            self.solo_d.append(D)
            rng = torch.Generator(device=device)
            if device.type == "cpu":
                rng.set_state(torch.get_rng_state())
            else:  # train's CUDA dropout is PyTorch's own kernel, not this stream
                rng.manual_seed(c.seed + 1)
            self.mask_rngs.append(rng)
        # g_ema: each member's average G, batched as G is (its flat weights are the averages).
        self.solo_avg = [copy.deepcopy(G) for G in self.solo_g] if configs[0].g_ema else []
        self.rows: list[int] = []  # the members in the batch, in its order
        self.keep(list(range(len(configs))))

    def keep(self, members: list[int]) -> None:
        # The members leaving take their weights to their own modules; those staying are
        # batched anew from theirs, and their optimizers go on from the state they had.
        if self.rows and self.solo_avg:
            copy_buffers(self.G_avg, self.G)
        for i in range(len(self.rows)):
            self.G.copy_to_solo(i)
            self.critic.copy_to_solo(i)
            if self.solo_avg:
                self.G_avg.copy_to_solo(i)
        configs, rngs = [self.configs[k] for k in members], [self.mask_rngs[k] for k in members]
        G = Net([_layers(self.solo_g[k]) for k in members], rngs).train()
        if self.solo_avg:
            self.G_avg = Net([_layers(self.solo_avg[k]) for k in members], rngs)
        critic = Net([_layers(self.solo_d[k]) for k in members], rngs).train()
        opt_g = _Optimizer(G, [c.lr_g for c in configs], configs)
        opt_d = _Optimizer(critic, [c.lr_d for c in configs], configs)
        if self.rows:
            before = [self.rows.index(k) for k in members]
            opt_g.carry(self.opt_g, before)
            opt_d.carry(self.opt_d, before)
        self.G, self.critic, self.opt_g, self.opt_d = G, critic, opt_g, opt_d
        self.rows = list(members)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x).squeeze(-1)

    def penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        # Each member's interpolation weights come next in its own stream, as train draws them.
        rngs = [self.mask_rngs[k] for k in self.rows]
        alpha = penalty_weights(real.shape[1], len(self.image_shape), rngs, real.device)
        return gradient_penalty(self.discriminate, real, fake, alpha)

    @torch.no_grad()
    def average(self, weight: float) -> None:
        self.G_avg.flat.lerp_(self.G.flat, weight)

    def member(self, k: int) -> tuple[nn.Module, nn.Module]:
        if k in self.rows:  # else its modules got its weights when it left
            self.G.copy_to_solo(self.rows.index(k))
            self.critic.copy_to_solo(self.rows.index(k))
            if self.solo_avg:
                copy_buffers(self.G_avg, self.G)
                self.G_avg.copy_to_solo(self.rows.index(k))
        return (self.solo_avg or self.solo_g)[k], self.solo_d[k]


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
    member only, as a divergence does: it leaves the batch (the others train on without its
    rows) and the exception is its result; any other exception ends the whole population, as it
    ends ``train``. Training ends early when no member is left.
    """
    _check(configs)
    return train_members(configs, data, _Batched, on_records=on_records, records_every=records_every,
                         on_eval=on_eval, eval_every=eval_every, eval_at=eval_at, stop_on=stop_on)
