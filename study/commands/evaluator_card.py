"""``gan-study evaluator [--retrain]``: the card of the evaluator that scores, and a retraining
of its recipe compared with it.

Every study scores with the pinned evaluator unless its spec says ``evaluation: {evaluator:
retrained}``; the comparison says how far a retrained one would move the scores: how often the
two agree on the test split's digits, and the FD of one fixed stand-in generator (training digits
with seeded noise) under each.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from gan import metrics as gm
from gan.data import load_mnist
from gan.cache import resolve_cache_dir
from gan.evaluator import Evaluator, load_evaluator, pinned_card

__all__ = ["STAND_IN_NOISE", "STAND_IN_SAMPLES", "agreement", "evaluator_command", "stand_in_images"]

STAND_IN_SAMPLES = 10_000
STAND_IN_NOISE = 0.5
"""The stand-in generator's Gaussian noise (images in [-1, 1]): FD well above the real-data floor."""


def stand_in_images(data_dir: str | None) -> torch.Tensor:
    """A fixed, machine-independent "generator": the first 10,000 training digits with seeded noise."""
    train = load_mnist(data_dir, train=True)
    real = train.batch(torch.arange(STAND_IN_SAMPLES))
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(0))
    return (real + STAND_IN_NOISE * noise).clamp_(-1, 1)


def agreement(a: Evaluator, b: Evaluator, data_dir: str | None) -> dict[str, float]:
    """Share of the test split on which ``a`` and ``b`` predict the same digit, and the stand-in's FD under each."""
    test = load_mnist(data_dir, train=False)
    images = test.batch(torch.arange(len(test)))
    same = (a.predict(images)[0].argmax(1) == b.predict(images)[0].argmax(1)).float().mean().item()
    stand_in = stand_in_images(data_dir)
    fd = {}
    for name, ev in (("a", a), ("b", b)):
        fd[name] = float(gm.score(stand_in, ev, gm.real_stats(ev, data_dir))["fd"])
    return {"prediction_agreement": same, "stand_in_fd_a": fd["a"], "stand_in_fd_b": fd["b"]}


def _card_lines(title: str, card: dict[str, Any]) -> list[str]:
    return [
        f"{title}:",
        f"  architecture   {card['architecture']}",
        f"  weights sha256 {card['weights_hash']}",
        f"  test accuracy  {100 * card['test_accuracy']:.2f} %, test loss {card['test_loss']:.4f} (MNIST test split)",
        f"  recipe key     {card['recipe_key']}",
    ]


def evaluator_command(data_dir: str | None, retrain: bool) -> str:
    """What the command prints: the pinned card; with ``retrain``, a fresh training and the agreement."""
    from gan.evaluator import PINNED_FILE

    pinned = load_evaluator(data_dir)
    shipped = pinned_card()
    lines = _card_lines("pinned evaluator (scores every study unless its spec asks for the retrained one)", pinned.card())
    lines += [f"  weights        {PINNED_FILE}",
              f"  trained on     {shipped.get('trained_on', '?')} in {pinned.train_seconds:.0f} s",
              f"  recipe         {shipped.get('recipe', {})}"]
    if not retrain:
        return "\n".join(lines)
    from ..trials.progress import bar, step

    # At once, before MNIST and torchvision load (seconds): then the training's own bar.
    logging.getLogger("gan_study.evaluator").info(
        "retraining the evaluator's recipe on this machine (the pinned run took %.0f s on %s; cached in %s)",
        pinned.train_seconds, shipped.get("trained_on", "?"), resolve_cache_dir())
    start = time.perf_counter()
    fresh = load_evaluator(data_dir, source="retrained", progress=bar)
    took = time.perf_counter() - start
    with step("comparing it with the pinned evaluator (the test split's digits, the stand-in's FD)"):
        a = agreement(pinned, fresh, data_dir)
    lines += _card_lines(f"retrained evaluator (this machine, cached in {fresh.cache_dir}; {took:.0f} s)", fresh.card())
    lines += [
        "agreement with the pinned evaluator:",
        f"  same predicted digit on {100 * a['prediction_agreement']:.2f} % of the test split",
        f"  FD of the stand-in generator (training digits + N(0, {STAND_IN_NOISE}²) noise): "
        f"{a['stand_in_fd_a']:.4f} pinned, {a['stand_in_fd_b']:.4f} retrained",
        "  (scores of different evaluators do not compare; a study chooses with evaluation: {evaluator: retrained})",
    ]
    return "\n".join(lines)
