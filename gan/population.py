"""Population training: K GANs of one shape trained in lockstep as one batched model.

Every member's weights are stacked along a leading member dimension, so each linear layer of
all K generators (or discriminators) is one ``baddbmm`` and one optimizer update serves them
all: a step trains K GANs for about the fixed cost (Python, dispatch, autograd) of one.
Members are independent: each has its own initial weights, data order, noise and dropout
masks (all from its seed, drawn exactly as ``train`` draws them), its own hyperparameters
(learning rates, betas and momentum in its optimizer group; dropout rate, label smoothing and
gradient-penalty weight as per-member tensors), its own optimizer state and its own divergence check: a diverged
member leaves the batch (its weights stop changing, its compute ends) and is reported, the
others go on.

The loop is ``train``'s own (``gan.train.train_members``): ``train`` is its population of one.
docs/performance.md has the speed-ups measured by ``python -m benchmarks.population``.
"""

from __future__ import annotations

import copy

from collections.abc import Callable, Collection, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .config import FIELDS, TrainConfig
from .data import MNIST
from .errors import ConfigError
from .losses import gradient_penalty
from .models import IMAGE_PIXELS, Dropout, build_models, kept16
from .train import EvalPoint, Records, TrainResult, _optimizer, train_members

__all__ = ["MEMBER_FIELDS", "population_support", "shape_key", "train_population"]

MEMBER_FIELDS = ("seed", "lr_g", "lr_d", "beta1", "beta2", "momentum", "d_dropout", "real_label", "gp_weight")
"""The fields population members may differ in; they must share every other (shape) field."""


def population_support(cfg: TrainConfig) -> str | None:
    """Why ``cfg`` cannot train in a population (one line naming the fields), or None if it can."""
    unsupported = {
        "arch": cfg.arch != "mlp",
        "compile": cfg.compile,
    }
    bad = [f"{name}={getattr(cfg, name)!r}" for name, is_bad in unsupported.items() if is_bad]
    if not bad:
        return None
    return f"population training supports MLPs without compile; got {', '.join(bad)}"


def shape_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """The fields population members share, with ``cfg``'s values: configs of equal keys (and
    :func:`population_support`) can train as one population."""
    return tuple((f, getattr(cfg, f)) for f in FIELDS if f not in MEMBER_FIELDS)


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


def _block(flat: torch.Tensor, grad: torch.Tensor, start: int, end: int, shape: tuple[int, ...]) -> nn.Parameter:
    """A parameter viewing ``flat[start:end]`` as ``shape``, its gradient the same block of ``grad``."""
    param = nn.Parameter(flat[start:end].view(shape))
    param.grad = grad[start:end].view(shape)
    return param


class _Linear(nn.Module):
    """K linear layers as one ``baddbmm``: (K, B, in) -> (K, B, out).

    Its weights (K, in, out) and biases (K, 1, out; none where batch norm follows), and their
    gradients, are dense blocks of its network's flat buffers, so backward adds into them in
    place and one optimizer call per member covers all of that member's layers. Layers under
    spectral norm keep each member's power-iteration vectors and step them as
    ``torch.nn.utils.parametrizations.spectral_norm`` does: once per forward in training mode,
    none in eval mode.
    """

    def __init__(self, solo: list[nn.Linear], flat: torch.Tensor, grad: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo  # the members' own layers, which results and callbacks see
        K, n_in, n_out = len(solo), solo[0].in_features, solo[0].out_features
        end_w, end_b = offset + K * n_in * n_out, offset + self.size(solo[0]) * K
        self.weight = _block(flat, grad, offset, end_w, (K, n_in, n_out))
        self.bias = _block(flat, grad, end_w, end_b, (K, 1, n_out)) if solo[0].bias is not None else None
        self.norms = [m.parametrizations.weight[0] for m in solo] if parametrize.is_parametrized(solo[0], "weight") else []
        with torch.no_grad():
            self.weight.copy_(torch.stack([self._raw(m).t() for m in solo]))
            if self.bias is not None:
                self.bias.copy_(torch.stack([m.bias for m in solo]).unsqueeze(1))
            if self.norms:
                self.register_buffer("u", torch.stack([n._u for n in self.norms]))  # (K, out)
                self.register_buffer("v", torch.stack([n._v for n in self.norms]))  # (K, in)

    @staticmethod
    def _raw(layer: nn.Linear) -> torch.Tensor:
        """The layer's own weight (out, in): under spectral norm, the one before normalising."""
        return layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") else layer.weight

    @staticmethod
    def size(layer: nn.Linear) -> int:
        """Numbers of one member's layer: weights and biases."""
        return (layer.in_features + (layer.bias is not None)) * layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W = self.normalized() if self.norms else self.weight
        return torch.bmm(x, W) if self.bias is None else torch.baddbmm(self.bias, x, W)

    def normalized(self) -> torch.Tensor:
        """Each member's weight over its spectral norm, estimated by power iteration."""
        W = self.weight  # (K, in, out): each member's (out, in) matrix, transposed
        eps = self.norms[0].eps
        if self.training:
            with torch.no_grad():
                self.u = F.normalize(torch.bmm(self.v.unsqueeze(1), W).squeeze(1), dim=-1, eps=eps)  # W v
                self.v = F.normalize(torch.bmm(W, self.u.unsqueeze(-1)).squeeze(-1), dim=-1, eps=eps)  # W^T u
        sigma = (self.u * torch.bmm(self.v.unsqueeze(1), W).squeeze(1)).sum(-1)  # u . W v, with W's gradient
        return W / sigma.view(-1, 1, 1)

    @torch.no_grad()
    def copy_to_solo(self, k: int) -> None:
        self._raw(self.solo[k]).copy_(self.weight[k].t())
        if self.bias is not None:
            self.solo[k].bias.copy_(self.bias[k, 0])
        if self.norms:
            self.norms[k]._u.copy_(self.u[k])
            self.norms[k]._v.copy_(self.v[k])


class _BatchNorm(nn.Module):
    """K ``BatchNorm1d`` layers over (K, B, F): each member normalises its own batch with its own
    affine weights (blocks of the network's flat buffers, as _Linear's) and keeps its own running
    statistics, as ``train``'s layer does: the biased variance normalises, the unbiased one
    enters the running average, in every training forward."""

    def __init__(self, solo: list[nn.BatchNorm1d], flat: torch.Tensor, grad: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo
        K, n = len(solo), solo[0].num_features
        self.eps, self.momentum = solo[0].eps, solo[0].momentum
        end_w, end_b = offset + K * n, offset + 2 * K * n
        self.weight = _block(flat, grad, offset, end_w, (K, 1, n))
        self.bias = _block(flat, grad, end_w, end_b, (K, 1, n))
        with torch.no_grad():
            self.weight.copy_(torch.stack([m.weight for m in solo]).unsqueeze(1))
            self.bias.copy_(torch.stack([m.bias for m in solo]).unsqueeze(1))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(m, name) for m in solo]))  # (K, F), (K,)

    @staticmethod
    def size(layer: nn.BatchNorm1d) -> int:
        return 2 * layer.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x, dim=1, correction=0)
            with torch.no_grad():
                n = x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps) * self.weight + self.bias

    @torch.no_grad()
    def copy_to_solo(self, k: int) -> None:
        own = self.solo[k]
        own.weight.copy_(self.weight[k, 0])
        own.bias.copy_(self.bias[k, 0])
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            getattr(own, name).copy_(getattr(self, name)[k])


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


def _batched(layer: nn.Module) -> type[_Linear] | type[_BatchNorm] | None:
    """The batched layer for a member's layer with weights (parametrized ones too), else None."""
    for solo, batched in ((nn.Linear, _Linear), (nn.BatchNorm1d, _BatchNorm)):
        if isinstance(layer, solo):
            return batched
    return None


class _Net(nn.Sequential):
    """One batched network from the members' ``nn.Sequential``s, layer by layer; ``flat`` and
    ``grad`` hold every weight of every member and their gradients."""

    def __init__(self, solos: list[nn.Sequential], generators: list[torch.Generator]):
        device = next(solos[0].parameters()).device
        P = sum(batched.size(m) for m in solos[0] if (batched := _batched(m)) is not None)
        flat = torch.empty(len(solos) * P, device=device)
        grad = torch.zeros_like(flat)
        layers: list[nn.Module] = []
        offset = 0
        for parts in zip(*solos):
            first = parts[0]
            batched = _batched(first)
            if batched is not None:
                layers.append(batched(list(parts), flat, grad, offset))
                offset += batched.size(first) * len(solos)
            elif isinstance(first, Dropout):
                layers.append(_Dropout([m.p for m in parts], generators))
            else:  # activations: shape fields, so the same in every member
                assert isinstance(first, (nn.LeakyReLU, nn.Tanh, nn.Sigmoid)), type(first)
                layers.append(first)
        super().__init__(*layers)
        self.flat, self.grad = flat, grad

    def copy_to_solo(self, k: int) -> None:
        """Member k's own modules get its current weights."""
        for layer in self:
            if isinstance(layer, (_Linear, _BatchNorm)):
                layer.copy_to_solo(k)


class _Optimizer:
    """``train``'s optimizer (fused Adam, ...) over every member's slices of a network's weights,
    one parameter group per distinct (learning rate, betas, momentum): repeats of one config
    share one group, so one fused update serves them all."""

    def __init__(self, net: _Net, lrs: list[float], configs: Sequence[TrainConfig]):
        self.grad = net.grad
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

    def zero_grad(self) -> None:
        self.grad.zero_()  # in place: the layers' gradients are views of it, and backward adds into them

    def step(self) -> None:
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

    image_shape = (IMAGE_PIXELS,)

    def __init__(self, configs: Sequence[TrainConfig], device: torch.device):
        # Each member as train builds it: weights from its seed, then the global RNG's next
        # draws (train's dropout masks) continue in that member's own generator.
        self.configs, self.solo_g, self.solo_d, self.mask_rngs = list(configs), [], [], []
        for c in configs:
            torch.manual_seed(c.seed)
            G, D = build_models(c)
            self.solo_g.append(G.to(device))
            self.solo_d.append(D.to(device))
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
            self._sync_avg()
        for i in range(len(self.rows)):
            self.G.copy_to_solo(i)
            self.critic.copy_to_solo(i)
            if self.solo_avg:
                self.G_avg.copy_to_solo(i)
        configs, rngs = [self.configs[k] for k in members], [self.mask_rngs[k] for k in members]
        G = _Net([self.solo_g[k].net for k in members], rngs).train()
        if self.solo_avg:
            self.G_avg = _Net([self.solo_avg[k].net for k in members], rngs)
        critic = _Net([self.solo_d[k].net for k in members], rngs).train()
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
        alpha = torch.stack([torch.rand(real.shape[1], 1, generator=self.mask_rngs[k], device=real.device) for k in self.rows])
        return gradient_penalty(self.discriminate, real, fake, alpha)

    @torch.no_grad()
    def average(self, weight: float) -> None:
        self.G_avg.flat.lerp_(self.G.flat, weight)

    @torch.no_grad()
    def _sync_avg(self) -> None:
        for avg, now in zip(self.G_avg.buffers(), self.G.buffers(), strict=True):
            avg.copy_(now)  # spectral-norm vectors are G's own, as train's average has them

    def member(self, k: int) -> tuple[nn.Module, nn.Module]:
        if k in self.rows:  # else its modules got its weights when it left
            self.G.copy_to_solo(self.rows.index(k))
            self.critic.copy_to_solo(self.rows.index(k))
            if self.solo_avg:
                self._sync_avg()
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
