"""The MNIST classifier that scores generated digits: pinned weights shipped with the package, frozen.

A small CNN (2.1 M multiply-adds per image) trained with batched random affine augmentation,
batch norm and a one-cycle schedule; it reaches about 99.5 % test accuracy and scores 10,000
images in under half a second on 2 CPU cores. Its logits give classes, KL and the Inception
Score; its 128-d penultimate layer is the feature space of the Fréchet distance and
precision/recall.

The evaluator defines every score, and the same recipe trains different weights on different
CPUs (other kernels, other rounding). So, as FID pins its Inception weights, the weights that
score by default are pinned: ``gan/weights/`` ships them with their card, and loading checks
their SHA-256 against ``PINNED_WEIGHTS_HASH`` (a mismatch is an error, never a silent
rescoring). ``source="retrained"`` trains the recipe on this machine instead (cached in
``$GAN_STUDY_CACHE``); a loaded evaluator carries ``weights_hash`` and ``source``, caches of
its features are keyed by the hash, and its ``card()`` is recorded with the scores it gives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .cache import data_checksum, digest, read_cache, resolve_cache_dir, write_cache
from .data import MNIST, load_mnist, resolve_data_dir
from .errors import GanStudyError

log = logging.getLogger(__name__)

CACHE_FILE = "evaluator.pt"
# Bump when the network or its training changes in a way the fields below do not capture.
VERSION = "mnist-cnn/2"
CHANNELS = (24, 48, 64)
FEATURES = 128
DROPOUT = 0.2
ARCHITECTURE = f"CNN {'-'.join(map(str, CHANNELS))} conv, {FEATURES}-d features, 10 classes"
SOURCES = ("pinned", "retrained")
PINNED_DIR = Path(__file__).resolve().parent / "weights"
PINNED_FILE = PINNED_DIR / "evaluator-mnist-cnn-2.pt"
PINNED_CARD = PINNED_DIR / "evaluator-mnist-cnn-2.json"
# The pinned weights' ``weights_hash``: written here, not read from the card beside them, so a
# replaced weights file cannot vouch for itself.
PINNED_WEIGHTS_HASH = "f303eba57597ec07e9aa1f7e8df252594040d7463ef91eb1827c08cf0cde823a"


class EvaluatorError(GanStudyError):
    """The pinned evaluator's weights are missing or are not the pinned ones."""


@dataclass(frozen=True)
class ClassifierConfig:
    """How the evaluator is trained; every field is part of the cache key."""

    epochs: int = 10
    batch_size: int = 256  # larger batches use 2 CPU cores better than 128 at equal accuracy
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    max_rotation_deg: float = 10.0
    max_scale: float = 0.1
    max_shift_px: float = 2.5
    seed: int = 0
    max_steps: int | None = None
    """Stops training early; only tests use it, to prove a real retraining in seconds."""


class Evaluator(nn.Module):
    """The frozen classifier. Input: float (B, 1, 28, 28) in [-1, 1], as a GAN outputs."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.body = nn.Sequential(
            # 1x28x28 -> 4x14x14: the first conv sees 6x6 pixels and no layer runs at full
            # resolution, where few-channel convs and pooling are slow on CPU.
            nn.PixelUnshuffle(2),
            *_conv_bn_relu(4, c1),
            nn.MaxPool2d(2),  # -> 7x7
            *_conv_bn_relu(c1, c2),
            *_conv_bn_relu(c2, c3),
            nn.MaxPool2d(2),  # -> 3x3
            nn.Flatten(),
            nn.Linear(c3 * 3 * 3, FEATURES, bias=False),
            nn.BatchNorm1d(FEATURES),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(DROPOUT)
        self.head = nn.Linear(FEATURES, 10)
        # Set by load_evaluator; not part of the weights.
        self.test_accuracy = math.nan
        self.test_loss = math.nan
        """Mean cross-entropy on the MNIST test split (nats)."""
        self.train_seconds = math.nan
        self.key = ""
        """The recipe's cache key: equal on every machine, unlike the weights it trains."""
        self.weights_hash = ""
        """SHA-256 of the loaded weights (see ``weights_hash``): tells this scorer from any other."""
        self.source = ""
        """``pinned`` (the shipped weights) or ``retrained`` (the recipe trained on this machine)."""
        self.cache_dir = Path()
        self.data_dir = Path()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.body(images)))

    def card(self) -> dict[str, Any]:
        """What identifies this scorer and how good it is; recorded with the scores it gives."""
        return {
            "architecture": ARCHITECTURE,
            "weights_hash": self.weights_hash,
            "test_accuracy": self.test_accuracy,
            "test_loss": self.test_loss,
            "train_seconds": self.train_seconds,
            "recipe_key": self.key,
            "source": self.source,
        }

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def predict(self, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (N, 10), features (N, 128))`` as float32 on the evaluator's device."""
        check_images(images)
        logits, features = [], []
        with torch.inference_mode():
            for chunk in images.split(batch_size):
                feat = self.body(chunk.to(self.device, torch.float32))
                features.append(feat)
                logits.append(self.head(feat))
        return torch.cat(logits), torch.cat(features)


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28) or not images.is_floating_point():
        raise ValueError(f"expected float images of shape (N, 1, 28, 28), got {tuple(images.shape)} {images.dtype}")


def load_evaluator(
    data_dir: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    source: str = "pinned",
    config: ClassifierConfig = ClassifierConfig(),
    progress: bool | Callable[..., Any] = False,
) -> Evaluator:
    """The evaluator that scores: the pinned weights (``source="pinned"``, the default), or the
    recipe ``config`` trained on MNIST's training split on this machine (``"retrained"``).

    Pinned weights load in milliseconds and are the same on every machine; a file whose hash
    is not ``PINNED_WEIGHTS_HASH`` raises :class:`EvaluatorError`. A retrained evaluator is
    cached in ``cache_dir`` (default ``$GAN_STUDY_CACHE``, else ``~/.cache/gan-study``); a
    cache file that is stale (other data, network or config) or unreadable is replaced by a
    retraining, with a progress bar on stderr when ``progress`` (a callable makes the bar:
    ``progress(total=, desc=)``, anything with ``update()`` and ``close()``, e.g. plain lines
    where stderr is not a terminal). ``data_dir`` is where the real-data statistics read MNIST
    from (and, retrained, what the recipe trains on).
    """
    if source not in SOURCES:
        raise EvaluatorError(f"evaluator source must be one of {', '.join(SOURCES)}; got {source!r}")
    cache = resolve_cache_dir(cache_dir)
    if source == "pinned":
        model, key = load_pinned()
    else:
        model, key = _retrained(data_dir, cache / CACHE_FILE, device, config, progress)
    model.weights_hash = weights_hash(model)
    model = model.to(device).eval().requires_grad_(False)
    model.key, model.source, model.cache_dir, model.data_dir = key, source, cache, resolve_data_dir(data_dir)
    return model


def pinned_card() -> dict[str, Any]:
    """The pinned weights' card: hash, test accuracy and loss, the recipe and where it was trained."""
    try:
        return json.loads(PINNED_CARD.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvaluatorError(f"cannot read the pinned evaluator's card {PINNED_CARD} ({exc}): reinstall gan-study") from exc


def load_pinned() -> tuple[Evaluator, str]:
    """The shipped evaluator (eval mode, CPU) with its card's numbers, and its recipe key."""
    card = pinned_card()
    try:
        state = torch.load(PINNED_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on damaged files
        raise EvaluatorError(f"cannot read the pinned evaluator weights {PINNED_FILE} ({type(exc).__name__}): "
                             "reinstall gan-study, or score with --evaluator retrained") from exc
    with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not consume the caller's RNG
        model = Evaluator()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise EvaluatorError(f"the pinned evaluator weights {PINNED_FILE} do not fit the network ({exc}): reinstall gan-study") from exc
    found = weights_hash(model)
    if found != PINNED_WEIGHTS_HASH:
        raise EvaluatorError(f"the pinned evaluator weights {PINNED_FILE} have sha256 {found[:16]}…, not the pinned "
                             f"{PINNED_WEIGHTS_HASH[:16]}…: they were changed; reinstall gan-study (scores from other "
                             "weights would not compare with anyone's)")
    model.test_accuracy, model.test_loss = float(card["test_accuracy"]), float(card["test_loss"])
    model.train_seconds = float(card["train_seconds"])
    return model.eval(), str(card["recipe_key"])


def recipe_key(train_split: MNIST, config: ClassifierConfig = ClassifierConfig()) -> str:
    """What a retrained evaluator's cache is keyed by: network, recipe and training data."""
    return digest(VERSION, {"channels": CHANNELS, "features": FEATURES, "dropout": DROPOUT},
                  dataclasses.asdict(config), data_checksum(train_split))


def _retrained(data_dir, path: Path, device, config: ClassifierConfig, progress: bool | Callable[..., Any]) -> tuple[Evaluator, str]:
    train_split = load_mnist(data_dir, train=True)
    key = recipe_key(train_split, config)
    seen = _mtime(path)
    model = _load_cached(path, key)
    if model is None:
        # The workers of a study start together on a cold cache: one trains, the others wait for
        # its file instead of each training at a fraction of the cores.
        with _locked(path.with_name(CACHE_FILE + ".lock")):
            if _mtime(path) != seen:
                model = _load_cached(path, key)
            if model is None:
                log.info("training the MNIST evaluator (cached in %s)", path)
                model, seconds = _train(train_split.to(device), config, progress)
                model.train_seconds = seconds
                model.test_accuracy, model.test_loss = accuracy_and_loss(model, load_mnist(data_dir, train=False).to(device))
                log.info("evaluator: test accuracy %.2f %% after %.0f s of training", 100 * model.test_accuracy, seconds)
                _save(model, path, key)
    elif math.isnan(model.test_loss):  # a cache file from before test_loss was recorded
        _, model.test_loss = accuracy_and_loss(model, load_mnist(data_dir, train=False))
        try:
            _save(model, path, key)
        except OSError as exc:  # a read-only shared cache still serves; the loss is recomputed next time
            log.warning("cannot add test_loss to cache file %s (%s)", path, exc)
    return model, key


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), across processes and threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one open file per holder: flock then excludes threads too
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _save(model: Evaluator, path: Path, key: str) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_cache(path, key, {"state_dict": state, "test_accuracy": model.test_accuracy, "test_loss": model.test_loss,
                            "train_seconds": model.train_seconds})


def _load_cached(path: Path, key: str) -> Evaluator | None:
    """The cached evaluator (in eval mode, on CPU) with its recorded numbers, or None (see read_cache).

    ``test_loss`` is NaN in a payload written before it was recorded.
    """
    payload = read_cache(path, key)
    if payload is None:
        return None
    with torch.random.fork_rng(devices=[]):  # the throwaway initial weights must not consume the caller's RNG
        model = Evaluator()
    try:
        model.load_state_dict(payload["state_dict"])
        model.test_accuracy = float(payload["test_accuracy"])
        model.train_seconds = float(payload["train_seconds"])
        model.test_loss = float(payload.get("test_loss", math.nan))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        log.warning("cache file %s is corrupt (%s); rebuilding it", path, exc)
        return None
    return model.eval()


def weights_hash(model: nn.Module) -> str:
    """SHA-256 hex of ``model``'s state_dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def accuracy_and_loss(model: Evaluator, split: MNIST) -> tuple[float, float]:
    """Fraction of ``split`` that ``model`` (in eval mode) classifies correctly, and its mean cross-entropy."""
    logits, _ = model.predict(split.batch(torch.arange(len(split), device=split.device)))
    labels = split.labels.to(logits.device)
    return (logits.argmax(1) == labels).float().mean().item(), F.cross_entropy(logits, labels).item()


def _train(split: MNIST, cfg: ClassifierConfig, progress: bool | Callable[..., Any] = False) -> tuple[Evaluator, float]:
    """A freshly trained evaluator (in eval mode) and the wall seconds its training took."""
    start = time.perf_counter()
    steps_per_epoch = len(split) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    # A private RNG stream: training is reproducible and the caller's global RNG is left alone.
    with torch.random.fork_rng(devices=[split.device] if split.device.type == "cuda" else []):
        torch.manual_seed(cfg.seed)
        model = Evaluator().to(split.device).train()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
        step = 0
        bar = (progress(total=total, desc="training the evaluator") if callable(progress)
               else tqdm(total=total, desc="training the evaluator", unit="step", disable=not progress, file=sys.stderr))
        while step < total:
            order = torch.randperm(len(split)).to(split.device)
            for i in range(min(steps_per_epoch, total - step)):
                idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
                loss = F.cross_entropy(model(_augment(split.images[idx], cfg)), split.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                bar.update()
        bar.close()
    return model.eval(), time.perf_counter() - start


def _augment(images_u8: torch.Tensor, cfg: ClassifierConfig) -> torch.Tensor:
    """Random rotation, scale and shift of a uint8 batch, as float (B, 1, 28, 28) in [-1, 1]."""
    b = images_u8.shape[0]
    u = (torch.rand(b, 4) * 2 - 1).to(images_u8.device)
    angle = u[:, 0] * math.radians(cfg.max_rotation_deg)
    scale = 1 + u[:, 1] * cfg.max_scale
    shift = u[:, 2:] * (cfg.max_shift_px / 14)  # affine_grid measures shifts in half-widths
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    # Warp in [0, 1] so the zero padding of grid_sample is the black background.
    x = images_u8.unsqueeze(1).float().div_(255)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False).mul_(2).sub_(1)
