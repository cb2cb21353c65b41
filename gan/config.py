"""The one training configuration: every knob of a GAN training run, with its default.

Defaults reproduce the classic MLP GAN of the MNIST reports (G 100-256-512-784, D 784-256-100-1,
LeakyReLU 0.2, Adam 2e-4 with betas (0.5, 0.999)). A ``preset`` (gan/presets.py) supplies other
values for the fields a config is not given: one classic report's model each.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch

from .data import SCALINGS
from .errors import ConfigError
from .presets import PRESETS

Arch = Literal["mlp", "dcgan"]
Placement = Literal["none", "d", "g", "both"]
Loss = Literal["ns", "minimax", "hinge", "lsgan", "wgan-gp"]
Optimizer = Literal["adam", "rmsprop", "sgd"]
Preset = Literal["default", "classic-mlp", "classic-dcgan"]

# The choices of the typed fields, read from their Literal: one list to edit.
ARCHS: tuple[Arch, ...] = get_args(Arch)
PLACEMENTS: tuple[Placement, ...] = get_args(Placement)
LOSSES: tuple[Loss, ...] = get_args(Loss)
OPTIMIZERS: tuple[Optimizer, ...] = get_args(Optimizer)
BUDGET_UNITS = ("steps", "epochs")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")
G_OUTPUTS = ("tanh", "sigmoid")
DATA_SCALINGS = tuple(SCALINGS)
NOISES = ("normal", "uniform")
BATCH_COUNTS = ("real", "total")
G_STEMS = (7, 14)
# Losses whose D output is read against targets, so label smoothing and flipping apply.
TARGET_LOSSES = ("ns", "minimax", "lsgan")
# The classic reports use dropout 0.3 in the MLP D and 0.4 in the DCGAN D.
DEFAULT_DROPOUT = {"mlp": 0.3, "dcgan": 0.4}


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Everything that decides what one GAN training run does.

    Built from keyword arguments: the fields given win, the others take the ``preset``'s value,
    else their default below.
    """

    preset: Preset = "default"
    """Named set of values for the fields not given (gan/presets.py, docs/presets.md): ``default``
    (every field at its default), ``classic-mlp`` (report 004) or ``classic-dcgan`` (report 002)."""
    arch: Arch = "mlp"
    """Model family: ``mlp`` (fully connected) or ``dcgan`` (convolutional)."""
    latent_dim: int = 100
    """Size of the noise vector z fed to the generator."""
    g_hidden: tuple[int, ...] = (256, 512)
    """MLP generator hidden widths (z -> ... -> 784)."""
    d_hidden: tuple[int, ...] = (256, 100)
    """MLP discriminator hidden widths (784 -> ... -> 1)."""
    g_channels: int = 128
    """DCGAN generator feature maps of its dense stem (g_channels x g_stem x g_stem)."""
    g_stem: int = 7
    """DCGAN generator stem side: 7 (two stride-2 transposed convs, the second outputs the image)
    or 14 (one to 28 x 28 with g_channels / 2 maps, then a 7x7 conv with one filter outputs it)."""
    d_channels: tuple[int, int] = (64, 128)
    """DCGAN discriminator filters of its two 3x3 stride-2 convolutions."""
    g_slope: float = 0.2
    """Negative slope of every LeakyReLU in G, in [0, 1] (0 is a ReLU)."""
    d_slope: float = 0.2
    """Negative slope of every LeakyReLU in D, in [0, 1]."""
    g_output: Literal["tanh", "sigmoid"] = "tanh"
    """G's output activation: tanh ([-1, 1]) or sigmoid ([0, 1], needs data_scaling='unit')."""
    g_output_leaky: bool = False
    """A LeakyReLU (g_slope) between G's last layer and its output activation."""
    data_scaling: Literal["signed", "unit", "standardized"] = "signed"
    """The range D sees real pixels in: signed [-1, 1], unit [0, 1], or standardized with the MNIST
    mean 0.1307 and std 0.3081 (about [-0.42, 2.82]). Samples, metrics, plots and checkpoints
    see G's images mapped back to [-1, 1] whatever this is (gan.models.Generator)."""
    noise: Literal["normal", "uniform"] = "normal"
    """Distribution of z: standard normal, or uniform on [0, 1)."""
    d_dropout: float | None = None
    """Dropout rate in D; None picks the arch default (mlp 0.3, dcgan 0.4)."""
    d_dropout_layers: tuple[int, ...] | None = None
    """D layers followed by dropout, numbered from 1: the hidden layers (d_hidden's, or the two
    DCGAN convs), then the output layer; None: every hidden layer; [] none."""
    d_output_leaky: bool = False
    """A LeakyReLU (d_slope) on D's output unit, before the loss reads it."""
    spectral_norm: Placement = "none"
    """Where spectral normalisation wraps the weight layers: none, d, g or both."""
    self_attention: Placement = "none"
    """Where a SAGAN self-attention block sits before the last conv layer (dcgan only)."""
    g_batchnorm: bool = False
    """Batch norm after each hidden layer of G; the layers it follows have no bias (it would cancel)."""
    loss: Loss = "ns"
    """ns (non-saturating BCE), minimax, hinge, lsgan or wgan-gp."""
    gp_weight: float = 10.0
    """Gradient-penalty weight (wgan-gp only)."""
    real_label: float = 1.0
    """Target for real images in D's loss; 0.9 is one-sided label smoothing (ns, minimax, lsgan)."""
    label_flip: bool = False
    """Swap the real and fake targets (D learns real=0, fake=1; G follows the swapped convention)."""
    optimizer: Optimizer = "adam"
    """adam, rmsprop or sgd, for both networks."""
    lr_g: float = 2e-4
    """Generator learning rate."""
    lr_d: float = 2e-4
    """Discriminator learning rate."""
    beta1: float = 0.5
    """Adam beta1."""
    beta2: float = 0.999
    """Adam beta2."""
    momentum: float = 0.0
    """Momentum for sgd and rmsprop."""
    g_ema: float = 0.0
    """Decay of an exponential moving average of G's weights, in [0, 1) (0: off; 0.999 is
    common). With it, evaluations, samples and the result's generator are the average, which
    smooths away the jitter of G's last updates. The decay at step t is
    min(g_ema, (1 + t) / (10 + t)), so the average follows G closely early on."""
    batch_size: int = 100
    """Images per batch: see ``batch_counts``."""
    batch_counts: Literal["real", "total"] = "real"
    """What batch_size counts: ``real`` (each D update sees batch_size real and batch_size
    generated images) or ``total`` (batch_size / 2 of each; an epoch is still one pass over
    the real images)."""
    d_steps: int = 1
    """Discriminator updates per iteration."""
    g_steps: int = 1
    """Generator updates per iteration."""
    budget: float = 2000
    """Training length, counted in ``budget_unit``."""
    budget_unit: Literal["steps", "epochs"] = "steps"
    """``steps`` counts iterations (d_steps D updates + g_steps G updates); ``epochs`` counts
    loader passes as the classic reports' loops do: an epoch is ``n_train // batch_size``
    iterations whatever the D:G ratio, so 5:1 and 5:5 train as many iterations as 1:1 (each
    D update draws its own real batch, so D sees d_steps passes of the data per epoch)."""
    loss_bound: float | None = None
    """Stop as diverged when |g_loss| or |d_loss| exceeds this; None stops on non-finite only."""
    seed: int = 0
    """Seeds weights, noise and batch order: same config and seed give the same run on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto picks cuda when available."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """fp32, or bf16 autocast: matmuls and convolutions in bfloat16; weights, optimizer state and
    losses stay fp32. Faster where the hardware multiplies bf16 natively (Intel AMX CPUs, CUDA
    GPUs since Ampere): 1.2-1.4x for the MLP at batch 256 and the DCGAN on this project's CPU,
    not at batch 64 (docs/performance.md); CPUs without native bf16 run it slower."""
    compile: bool = False
    """torch.compile the networks (pays off on CUDA for long runs)."""

    # Hand-written, not the dataclass's: only here are the fields given told apart from those
    # left out, which the preset fills.
    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(FIELDS))
        if unknown:
            raise ConfigError(f"unknown training config key(s) {unknown}; known keys: {', '.join(FIELDS)}")
        preset = values.get("preset", "default")
        _choice("preset", preset, tuple(PRESETS))
        given = {**PRESETS[preset], **values}
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, given.get(f.name, f.default))
        self._validate()

    def _validate(self) -> None:
        _choice("arch", self.arch, ARCHS)
        _choice("spectral_norm", self.spectral_norm, PLACEMENTS)
        _choice("self_attention", self.self_attention, PLACEMENTS)
        _choice("loss", self.loss, LOSSES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("budget_unit", self.budget_unit, BUDGET_UNITS)
        _choice("device", self.device, DEVICES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("g_output", self.g_output, G_OUTPUTS)
        _choice("data_scaling", self.data_scaling, DATA_SCALINGS)
        _choice("noise", self.noise, NOISES)
        _choice("batch_counts", self.batch_counts, BATCH_COUNTS)
        if not _is_int(self.g_stem) or self.g_stem not in G_STEMS:
            raise ConfigError(f"g_stem must be one of 7, 14; got g_stem={self.g_stem!r}")
        for name in ("g_output_leaky", "d_output_leaky"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {name}={getattr(self, name)!r}")
        for name in ("g_hidden", "d_hidden", "d_channels"):
            value = tuple(getattr(self, name))
            if not value or any(not _is_int(w) or w < 1 for w in value):
                raise ConfigError(f"{name} must be a non-empty list of positive ints, got {name}={list(value)}")
            object.__setattr__(self, name, tuple(int(w) for w in value))
        if len(self.d_channels) != 2:
            raise ConfigError(f"d_channels must have 2 entries, got d_channels={list(self.d_channels)}")
        for name in ("latent_dim", "g_channels", "batch_size", "d_steps", "g_steps"):
            _positive_int(name, getattr(self, name))
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an int >= 0, got seed={self.seed!r}")
        for name in ("lr_g", "lr_d", "budget"):
            _positive(name, getattr(self, name))
        if self.budget_unit == "steps" and not float(self.budget).is_integer():
            raise ConfigError(f"budget in steps must be a whole number, got budget={self.budget}")
        if self.loss_bound is not None:
            _positive("loss_bound", self.loss_bound)
        if self.compile and self.loss == "wgan-gp":
            raise ConfigError("compile=True does not support wgan-gp's double backward: set compile=False")
        if self.d_dropout is None:
            object.__setattr__(self, "d_dropout", DEFAULT_DROPOUT[self.arch])
        _in_range("d_dropout", self.d_dropout, 0.0, 1.0, high_open=True)
        _in_range("g_slope", self.g_slope, 0.0, 1.0)
        _in_range("d_slope", self.d_slope, 0.0, 1.0)
        if self.d_dropout_layers is not None:
            layers, n = self.d_dropout_layers, self.d_layers
            listed = isinstance(layers, (list, tuple)) and all(_is_int(i) and 1 <= i <= n for i in layers)
            if not listed or len(set(layers)) != len(layers):
                raise ConfigError(
                    f"d_dropout_layers must list distinct D layers among 1..{n} ({n} is the output layer) "
                    f"or be null; got d_dropout_layers={layers!r}"
                )
            object.__setattr__(self, "d_dropout_layers", tuple(sorted(layers)))
        if self.g_output == "sigmoid" and self.data_scaling != "unit":
            raise ConfigError(
                f"g_output='sigmoid' makes [0, 1] images but data_scaling={self.data_scaling!r} puts real "
                "pixels elsewhere: set data_scaling='unit' or g_output='tanh'"
            )
        if self.batch_counts == "total" and self.batch_size % 2:
            raise ConfigError(
                f"batch_counts='total' splits batch_size evenly between real and generated images: "
                f"batch_size must be even, got batch_size={self.batch_size}"
            )
        _in_range("beta1", self.beta1, 0.0, 1.0, high_open=True)
        _in_range("beta2", self.beta2, 0.0, 1.0, high_open=True)
        _in_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _in_range("g_ema", self.g_ema, 0.0, 1.0, high_open=True)
        _in_range("real_label", self.real_label, 0.5, 1.0)
        if not _is_number(self.gp_weight) or self.gp_weight < 0:
            raise ConfigError(f"gp_weight must be >= 0, got gp_weight={self.gp_weight!r}")
        if self.self_attention != "none" and self.arch == "mlp":
            raise ConfigError(
                f"self_attention={self.self_attention!r} needs conv feature maps: use arch='dcgan' "
                "or self_attention='none'"
            )
        if self.loss not in TARGET_LOSSES and self.real_label != 1.0:
            raise ConfigError(
                f"real_label={self.real_label} (label smoothing) applies to losses {', '.join(TARGET_LOSSES)}, "
                f"not loss={self.loss!r}: set real_label=1.0"
            )

    # -- derived values -------------------------------------------------------------------
    @property
    def real_batch(self) -> int:
        """Real images (and as many generated ones) per D update."""
        return self.batch_size // 2 if self.batch_counts == "total" else self.batch_size

    @property
    def d_layers(self) -> int:
        """D's weight layers as ``d_dropout_layers`` numbers them: the hidden ones, then the output."""
        return (len(self.d_hidden) if self.arch == "mlp" else len(self.d_channels)) + 1

    def d_dropout_after(self, layer: int) -> bool:
        """Whether dropout follows D's ``layer`` (numbered from 1, the output layer last)."""
        if self.d_dropout_layers is None:
            return layer < self.d_layers
        return layer in self.d_dropout_layers

    def total_steps(self, n_train: int) -> int:
        """Iterations the budget allows on a training set of ``n_train`` images."""
        if self.budget_unit == "steps":
            return int(self.budget)
        return max(1, math.ceil(self.budget * (n_train // self.real_batch)))

    def resolved_device(self) -> torch.device:
        """The device to train on; an error when cuda is asked for and absent."""
        return resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from plain values; unknown keys are an error that lists the known ones."""
        return cls(**values)

    def replace(self, **changes: Any) -> TrainConfig:
        """This config with ``changes``; every other field keeps its value (a new ``preset``
        changes no other field: build a new config to take its values)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainConfig))


def resolve_device(device: str) -> torch.device:
    """``auto`` (cuda when available), ``cpu`` or ``cuda``; an error when cuda is absent."""
    _choice("device", device, DEVICES)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' but no CUDA device is available: use device='auto' or 'cpu'")
    return torch.device(device)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {name}={value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, got {name}={value!r}")


def _positive(name: str, value: Any) -> None:
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"{name} must be > 0, got {name}={value!r}")


def _in_range(name: str, value: Any, low: float, high: float, high_open: bool = False) -> None:
    ok = _is_number(value) and low <= value and (value < high if high_open else value <= high)
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{name} must be in [{low}, {high}{bracket}, got {name}={value!r}")
