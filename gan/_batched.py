"""The batched layers of ``gan.population``: K members' layers of one shape as one layer.

Activations travel in one of two layouts. *Stacked*, (K, B, ...), for linear layers and
``BatchNorm1d``: each linear layer of all K members is one ``baddbmm``. *Grouped*,
(B, K * C, H, W), for convolutions, ``BatchNorm2d`` and self-attention: member k's channels are
the k-th block, so each conv of all K members is one conv with ``groups=K`` and each
``BatchNorm2d`` one over K * C channels. :class:`Net` switches layouts where the layers ask.

Every weight of every member is a block of its network's flat buffer, with the member as the
leading dimension, so ``g_ema`` averages a whole network in one ``lerp_``, and a member's
weights are views the optimizer updates in place.
Layers under spectral norm keep each member's power-iteration vectors and step them as
``torch.nn.utils.parametrizations.spectral_norm`` does: once per forward in training mode,
none in eval mode. ``copy_to_solo(k)`` gives member k's own modules its current state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .models import Dropout, SelfAttention, kept16

__all__ = ["Net"]

_Conv = nn.Conv2d | nn.ConvTranspose2d


def _block(flat: torch.Tensor, start: int, shape: tuple[int, ...]) -> nn.Parameter:
    """A parameter viewing ``flat`` from ``start`` as ``shape``."""
    return nn.Parameter(flat[start:start + torch.Size(shape).numel()].view(shape))


def _raw(layer: nn.Module) -> torch.Tensor:
    """The layer's own weight: under spectral norm, the one before normalising."""
    return layer.parametrizations.weight.original if parametrize.is_parametrized(layer, "weight") else layer.weight


class _Weighted(nn.Module):
    """K members' linear or conv layers: the weights (K, *member's shape, transposed for linear
    layers), the biases (K, out) and, under spectral norm, each member's vectors."""

    def __init__(self, solo: list[nn.Module], flat: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo  # the members' own layers, which results and callbacks see
        K = len(solo)
        self.weight = _block(flat, offset, (K, *self._own(solo[0]).shape))
        bias = solo[0].bias
        self.bias = None if bias is None else _block(flat, offset + self.weight.numel(), (K, *bias.shape))
        self.norms = [m.parametrizations.weight[0] for m in solo] if parametrize.is_parametrized(solo[0], "weight") else []
        with torch.no_grad():
            self.weight.copy_(torch.stack([self._own(m) for m in solo]))
            if self.bias is not None:
                self.bias.copy_(torch.stack([m.bias for m in solo]))
            if self.norms:
                self.register_buffer("u", torch.stack([n._u for n in self.norms]))  # (K, out)
                self.register_buffer("v", torch.stack([n._v for n in self.norms]))  # (K, in)

    @staticmethod
    def size(layer: nn.Module) -> int:
        """Numbers of one member's layer: weights and biases."""
        return _raw(layer).numel() + (0 if layer.bias is None else layer.bias.numel())

    def _own(self, layer: nn.Module) -> torch.Tensor:
        """A member's weight as this layer stores it: a view of the member's own."""
        return _raw(layer)

    def _matrices(self, W: torch.Tensor) -> torch.Tensor:
        """Each member's weight as the matrix (out, in) spectral norm normalises: (K, out, in)."""
        raise NotImplementedError

    def weights(self) -> torch.Tensor:
        """The weights to apply: each member's over its spectral norm, estimated by power iteration."""
        W = self.weight
        if not self.norms:
            return W
        M = self._matrices(W)
        eps = self.norms[0].eps
        # float32 under bf16 autocast too, as the parametrization's mv and vdot (not autocast) are
        with torch.autocast(W.device.type, enabled=False):
            if self.training:
                with torch.no_grad():
                    self.u = F.normalize(torch.bmm(M, self.v.unsqueeze(-1)).squeeze(-1), dim=-1, eps=eps)  # W v
                    self.v = F.normalize(torch.bmm(self.u.unsqueeze(1), M).squeeze(1), dim=-1, eps=eps)  # W^T u
            sigma = (self.u * torch.bmm(M, self.v.unsqueeze(-1)).squeeze(-1)).sum(-1)  # u . W v, with W's gradient
        return W / sigma.view(-1, *[1] * (W.dim() - 1))

    @torch.no_grad()
    def copy_to_solo(self, k: int) -> None:
        self._own(self.solo[k]).copy_(self.weight[k])
        if self.bias is not None:
            self.solo[k].bias.copy_(self.bias[k])
        if self.norms:
            self.norms[k]._u.copy_(self.u[k])
            self.norms[k]._v.copy_(self.v[k])


class _Linear(_Weighted):
    """K linear layers as one ``baddbmm``, stacked: (K, B, in) -> (K, B, out). The weights are
    stored (K, in, out), as bmm takes them."""

    grouped = False

    def _own(self, layer: nn.Module) -> torch.Tensor:
        return _raw(layer).t()

    def _matrices(self, W: torch.Tensor) -> torch.Tensor:
        return W.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W = self.weights()
        return torch.bmm(x, W) if self.bias is None else torch.baddbmm(self.bias.unsqueeze(1), x, W)


class _Convolution(_Weighted):
    """K ``Conv2d`` or ``ConvTranspose2d`` layers as one with ``groups=K``, grouped."""

    grouped = True

    def __init__(self, solo: list[_Conv], flat: torch.Tensor, offset: int):
        super().__init__(solo, flat, offset)
        first = solo[0]
        self.transposed = isinstance(first, nn.ConvTranspose2d)
        self.stride, self.padding, self.dilation = first.stride, first.padding, first.dilation
        self.output_padding = first.output_padding

    def _matrices(self, W: torch.Tensor) -> torch.Tensor:
        # spectral_norm's dim: a transposed conv's output channels are its weight's second dim
        return (W.transpose(1, 2) if self.transposed else W).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        W = self.weights().flatten(0, 1)  # members' filters one after another: groups=K
        b = None if self.bias is None else self.bias.flatten()
        K = len(self.solo)
        if self.transposed:
            return F.conv_transpose2d(x, W, b, self.stride, self.padding, self.output_padding, K, self.dilation)
        return F.conv2d(x, W, b, self.stride, self.padding, self.dilation, K)


class _BatchNorm(nn.Module):
    """K ``BatchNorm1d`` (stacked) or ``BatchNorm2d`` (grouped) layers: each member normalises
    its own batch with its own affine weights and keeps its own running statistics, as ``train``'s
    layer does: the biased variance normalises, the unbiased one enters the running average."""

    def __init__(self, solo: list[nn.BatchNorm1d | nn.BatchNorm2d], flat: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo
        K, n = len(solo), solo[0].num_features
        self.grouped = isinstance(solo[0], nn.BatchNorm2d)
        self.eps, self.momentum = solo[0].eps, solo[0].momentum
        self.weight = _block(flat, offset, (K, n))
        self.bias = _block(flat, offset + K * n, (K, n))
        with torch.no_grad():
            self.weight.copy_(torch.stack([m.weight for m in solo]))
            self.bias.copy_(torch.stack([m.bias for m in solo]))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            self.register_buffer(name, torch.stack([getattr(m, name) for m in solo]))  # (K, F), (K,)

    @staticmethod
    def size(layer: nn.BatchNorm1d | nn.BatchNorm2d) -> int:
        return 2 * layer.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked += 1
        if self.grouped:  # one BatchNorm2d over every member's channels: (B, K * C, H, W)
            return F.batch_norm(x, self.running_mean.view(-1), self.running_var.view(-1), self.weight.flatten(),
                                self.bias.flatten(), self.training, self.momentum, self.eps)
        if self.training:  # statistics in float32, as batch_norm keeps them under bf16 autocast
            var, mean = torch.var_mean(x.float(), dim=1, correction=0)
            with torch.no_grad():
                n = x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = torch.rsqrt(var.unsqueeze(1) + self.eps) * self.weight.unsqueeze(1)
        return (x - mean.unsqueeze(1)) * scale + self.bias.unsqueeze(1)

    @torch.no_grad()
    def copy_to_solo(self, k: int) -> None:
        own = self.solo[k]
        own.weight.copy_(self.weight[k])
        own.bias.copy_(self.bias[k])
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            getattr(own, name).copy_(getattr(self, name)[k])


class _Attention(nn.Module):
    """K ``SelfAttention`` layers, grouped: their 1x1 convs grouped, attention batched over the
    members, each member's own ``gamma``."""

    grouped = True

    def __init__(self, solo: list[SelfAttention], flat: torch.Tensor, offset: int):
        super().__init__()
        self.solo = solo
        self.convs = nn.ModuleList()
        for name in ("query", "key", "value"):
            parts = [getattr(m, name) for m in solo]
            self.convs.append(_Convolution(parts, flat, offset))
            offset += _Convolution.size(parts[0]) * len(solo)
        self.gamma = _block(flat, offset, (len(solo), 1))
        with torch.no_grad():
            self.gamma.copy_(torch.stack([m.gamma for m in solo]))

    @staticmethod
    def size(layer: SelfAttention) -> int:
        return sum(_Convolution.size(c) for c in (layer.query, layer.key, layer.value)) + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = len(self.solo)
        b, kc, h, w = x.shape
        q, k, v = (conv(x).view(b, K, -1, h * w).transpose(2, 3) for conv in self.convs)  # (B, K, HW, c)
        out = F.scaled_dot_product_attention(q, k, v).transpose(2, 3)  # (B, K, C, HW)
        gamma = self.gamma.view(1, K, 1, 1)
        return (x.view(b, K, -1, h * w) + gamma * out).view(b, kc, h, w)

    @torch.no_grad()
    def copy_to_solo(self, k: int) -> None:
        for conv in self.convs:
            conv.copy_to_solo(k)
        self.solo[k].gamma.copy_(self.gamma[k])


class _Dropout(nn.Module):
    """``gan.models.Dropout`` per member: its own rate and its own random stream.

    Each member's mask comes from 16-bit uniforms drawn from its generator exactly as ``train``
    draws them from the global RNG (over the member's own (B, ...) activations), so a member's
    masks are the solo run's masks, in either layout.
    """

    def __init__(self, rates: list[float], generators: list[torch.Generator], grouped: bool):
        super().__init__()
        self.rates, self.generators, self.grouped = rates, generators, grouped
        kept = [kept16(p) for p in rates]
        self.register_buffer("threshold", torch.tensor(kept, dtype=torch.int32).sub(32768))
        self.register_buffer("scale", torch.tensor([65536 / k for k in kept]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not any(self.rates):
            return x
        K = len(self.rates)
        n = x.numel() // K
        bits = torch.zeros(K, (n + 3) // 4, dtype=torch.int64, device=x.device)
        for k, (p, g) in enumerate(zip(self.rates, self.generators)):
            if p > 0:  # a rate-0 member draws nothing, as train's Dropout does
                bits[k].random_(-(2**63), None, generator=g)
        uniform16 = bits.view(torch.int16)[:, :n]
        mask = (uniform16 < self.threshold.unsqueeze(1)).to(x.dtype).mul_(self.scale.to(x.dtype).unsqueeze(1))
        if self.grouped:  # member k's (B, C, H, W) mask on its channels of (B, K * C, H, W), not copied
            b = x.shape[0]
            return (x.view(b, K, -1) * mask.view(K, b, -1).transpose(0, 1)).view(x.shape)
        return x * mask.view(x.shape)


class _ToGroups(nn.Module):
    """Stacked (K, B, C, H, W) -> grouped (B, K * C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(0, 1).flatten(1, 2)


class _ToStacked(nn.Module):
    """Grouped (B, K * C, H, W) -> stacked (K, B, C, H, W), or (K, B, C * H * W) for a Flatten."""

    def __init__(self, K: int, flatten: bool):
        super().__init__()
        self.K, self.flatten = K, flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(1, (self.K, -1)).transpose(0, 1)
        return x.flatten(2) if self.flatten else x


_BATCHED: tuple[tuple[type[nn.Module], type[nn.Module]], ...] = (
    (nn.Linear, _Linear), ((nn.Conv2d, nn.ConvTranspose2d), _Convolution),
    ((nn.BatchNorm1d, nn.BatchNorm2d), _BatchNorm), (SelfAttention, _Attention),
)


def _batched(layer: nn.Module) -> type[nn.Module] | None:
    """The batched layer for a member's layer with weights (parametrized ones too), else None."""
    for solo, batched in _BATCHED:
        if isinstance(layer, solo):
            return batched
    return None


class Net(nn.Sequential):
    """One batched network from the members' layer lists (each member's layers in the order its
    forward applies them); ``flat`` holds every weight of every member. It takes and returns
    stacked activations."""

    def __init__(self, solos: list[list[nn.Module]], generators: list[torch.Generator]):
        K = len(solos)
        device = next(p.device for m in solos[0] for p in m.parameters())
        P = sum(batched.size(m) for m in solos[0] if (batched := _batched(m)) is not None)
        flat = torch.empty(K * P, device=device)
        layers: list[nn.Module] = []
        offset, grouped = 0, False
        for parts in zip(*solos):
            first = parts[0]
            batched = _batched(first)
            if batched is not None:
                layer = batched(list(parts), flat, offset)
                offset += batched.size(first) * K
            elif isinstance(first, Dropout):
                layer = _Dropout([m.p for m in parts], generators, grouped)
            elif isinstance(first, nn.Flatten):
                assert grouped and first.start_dim == 1, first
                layer = _ToStacked(K, flatten=True)
            else:  # activations and reshapes: shape fields, so the same in every member
                assert isinstance(first, (nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.Unflatten)), type(first)
                layer = first
            wants = getattr(layer, "grouped", grouped)
            if wants != grouped:
                layers.append(_ToGroups() if wants else _ToStacked(K, flatten=False))
            layers.append(layer)
            grouped = wants and not isinstance(layer, _ToStacked)
        if grouped:
            layers.append(_ToStacked(K, flatten=False))
        assert offset == K * P
        super().__init__(*layers)
        self.flat = flat

    def copy_to_solo(self, k: int) -> None:
        """Member k's own modules get its current weights."""
        for layer in self:
            if hasattr(layer, "copy_to_solo"):
                layer.copy_to_solo(k)
