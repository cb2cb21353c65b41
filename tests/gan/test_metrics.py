"""Sample-quality metrics on real MNIST: their floors, collapse, mixtures, noise, and the helpers."""

from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

from gan import metrics
from gan.evaluator import load_evaluator, weights_hash
from gan.metrics import (
    KEYS,
    class_metrics,
    floors,
    frechet_distance,
    inception_score,
    knn_radii,
    moments,
    precision_recall,
    real_stats,
    score,
)


@pytest.fixture(scope="session")
def floor(evaluator) -> dict:
    return floors(evaluator)


def _digits(split, digits: list[int], n: int = 10_000) -> torch.Tensor:
    """``n`` real images cycling through every test image of ``digits`` (equal shares)."""
    per = n // len(digits)
    parts = []
    for d in digits:
        idx = (split.labels == d).nonzero()[:, 0]
        parts.append(idx[torch.arange(per) % len(idx)])
    return split.batch(torch.cat(parts))


def test_score_returns_exactly_the_documented_keys(evaluator, mnist_test):
    result = score(mnist_test.batch(torch.arange(500)), evaluator)
    assert set(result) == set(KEYS) == {"fd", "modes", "kl_uniform", "is", "confidence", "precision", "recall", "class_counts"}
    assert len(result["class_counts"]) == 10 and sum(result["class_counts"]) == 500
    assert all(isinstance(c, int) for c in result["class_counts"])


def test_floors_are_real_training_images_against_the_test_set(floor, evaluator):
    assert set(floor) == set(KEYS) and sum(floor["class_counts"]) == 10_000
    assert floor["modes"] == 10 and floor["kl_uniform"] < 0.01 and floor["is"] > 9
    assert floor["precision"] > 0.6 and floor["recall"] > 0.6 and floor["fd"] > 0
    assert floors(evaluator) == floor  # cached (and deterministic)


def test_real_test_images_score_at_the_limits(evaluator, mnist_test):
    # The reference set against itself: every metric at its ideal value.
    result = score(mnist_test.batch(torch.arange(len(mnist_test))), evaluator)
    assert result["modes"] == 10 and result["kl_uniform"] < 0.01 and result["is"] > 9
    assert result["precision"] == result["recall"] == 1.0
    assert result["fd"] == pytest.approx(0, abs=1e-6)


def test_other_real_images_score_at_the_floor(evaluator, mnist_train, floor):
    idx = torch.randperm(len(mnist_train), generator=torch.Generator().manual_seed(123))[:10_000]
    result = score(mnist_train.batch(idx), evaluator)
    assert result["modes"] == 10 and result["kl_uniform"] < 0.01 and result["is"] > 9
    assert result["precision"] > 0.6 and result["recall"] > 0.6
    # Both draws are real digits: their FDs differ by sampling noise only. That noise depends on
    # the evaluator's feature space (10k draws spread over about +-20 % on two evaluators), so the
    # bound is a factor of 2, still far below any generator short of real data.
    assert floor["fd"] / 2 < result["fd"] < 2 * floor["fd"]
    assert result["precision"] == pytest.approx(floor["precision"], abs=0.02)
    assert result["recall"] == pytest.approx(floor["recall"], abs=0.02)


@pytest.mark.parametrize("digit", [1, 5, 8])
def test_collapsed_generator_covers_one_mode(evaluator, mnist_test, floor, digit):
    result = score(_digits(mnist_test, [digit]), evaluator)
    assert result["modes"] == 1 and result["kl_uniform"] == pytest.approx(math.log(10), abs=0.05)
    assert result["is"] < 1.2 and result["recall"] < 0.2 and result["fd"] > 20 * floor["fd"]


def test_two_digit_mixture_covers_two_modes(evaluator, mnist_test):
    result = score(_digits(mnist_test, [3, 7]), evaluator)
    assert result["modes"] == 2 and result["kl_uniform"] == pytest.approx(math.log(5), abs=0.05)
    assert result["is"] == pytest.approx(2, abs=0.2)


FADE = (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.35, 0.5, 0.75, 1.0)


def test_fd_grows_as_real_images_fade_into_noise(evaluator, mnist_train):
    """What FD guarantees on any evaluator the recipe trains, along a fade from digits to noise.

    Once images are mostly noise the evaluator's features saturate and FD levels off, at a noise
    level and a height that depend on the weights: an AMD EPYC's evaluator gave FD 0.11, 0.56,
    2.3, 12, 36, 51 for 0-50 % noise, then no further rise. So FD must rise only while the
    evaluator still recognizes most digits, and every unrecognizable level must score worse
    than every recognizable one.
    """
    idx = torch.randperm(len(mnist_train), generator=torch.Generator().manual_seed(7))[:2000]
    real, labels = mnist_train.batch(idx), mnist_train.labels[idx]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(8)) * 2 - 1
    fds, accuracy = [], []
    for a in FADE:
        images = (1 - a) * real + a * noise
        fds.append(score(images, evaluator)["fd"])
        accuracy.append((evaluator.predict(images)[0].argmax(1) == labels).float().mean().item())
    shown = [f"{a:.0%}: FD {fd:.3g}, accuracy {acc:.3f}" for a, fd, acc in zip(FADE, fds, accuracy)]
    assert accuracy[-1] < 0.5, shown  # pure noise carries no digit
    recognized = next(i for i, acc in enumerate(accuracy) if acc < 0.5)
    assert FADE[recognized] > 0.05, shown  # 5 % noise hides no digit
    assert all(b > a for a, b in zip(fds[:recognized], fds[1:recognized])), shown
    assert min(fds[recognized:]) > max(fds[:recognized]), shown
    assert fds[0] < 0.01 * max(fds), shown  # real against real: sampling noise only


def _stats_file(ev):
    return ev.cache_dir / f"real-stats-{ev.weights_hash[:16]}.pt"


def test_real_stats_are_cached_in_memory_and_on_disk(evaluator):
    stats = real_stats(evaluator)
    assert real_stats(evaluator) is stats
    assert stats.features.shape == (10_000, stats.mu.shape[0]) and stats.sigma.dtype == torch.float64
    fresh = load_evaluator()  # another object: no memo, reads the file
    again = real_stats(fresh)
    assert again is not stats and torch.equal(again.features, stats.features) and torch.equal(again.sigma, stats.sigma)
    assert _stats_file(evaluator).is_file()


def test_real_stats_of_other_weights_are_not_reused(evaluator, tmp_path, caplog):
    # The same recipe trains other weights on another CPU: same recipe key, other features.
    expected = real_stats(evaluator)
    shutil.copy(_stats_file(evaluator), tmp_path / _stats_file(evaluator).name)
    same = load_evaluator(cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="gan"):
        assert torch.equal(real_stats(same).features, expected.features)
    assert caplog.text == ""  # the same weights read the copied file
    other = load_evaluator(cache_dir=tmp_path)
    with torch.no_grad():
        other.body[1].weight.mul_(1.01)
    other.weights_hash = weights_hash(other)  # as load_evaluator computes it for such weights
    assert other.key == evaluator.key
    # A file of these weights' name but written for others (say, copied by hand) is stale.
    shutil.copy(_stats_file(evaluator), _stats_file(other))
    with caplog.at_level(logging.WARNING, logger="gan"):
        stats = real_stats(other)
    assert "stale" in caplog.text
    assert stats.key != expected.key and not torch.equal(stats.features, expected.features)


def test_score_rejects_bad_input(evaluator):
    with pytest.raises(ValueError, match="shape"):
        score(torch.zeros(10, 28, 28), evaluator)
    with pytest.raises(ValueError, match="more than 3"):
        score(torch.zeros(3, 1, 28, 28), evaluator)


# Pure helpers against direct formulas.


def test_class_metrics():
    assert class_metrics([1000] * 10) == {"modes": 10, "kl_uniform": 0.0}
    one = class_metrics([0, 0, 10_000] + [0] * 7)
    assert one["modes"] == 1 and one["kl_uniform"] == pytest.approx(math.log(10))
    two = class_metrics([5000, 5000] + [0] * 8)
    assert two["modes"] == 2 and two["kl_uniform"] == pytest.approx(math.log(5))
    # Covered from 1 % of the samples (10 % of the uniform share) on.
    assert class_metrics([100] + [1100] * 9)["modes"] == 10
    assert class_metrics([99] + [1100] * 8 + [1101])["modes"] == 9
    with pytest.raises(ValueError):
        class_metrics([0] * 10)


def test_inception_score_limits():
    sharp = torch.full((1000, 10), -30.0)
    sharp[torch.arange(1000), torch.arange(1000) % 10] = 30.0
    assert inception_score(sharp)["is"] == pytest.approx(10, rel=1e-6)
    assert inception_score(sharp)["confidence"] == pytest.approx(1.0)
    same = torch.zeros(100, 10)
    same[:, 4] = 30.0
    assert inception_score(same)["is"] == pytest.approx(1.0)
    assert inception_score(torch.zeros(50, 10)) == pytest.approx({"is": 1.0, "confidence": 0.1})


def test_frechet_distance_matches_scipy_sqrtm():
    gen = np.random.default_rng(0)
    a, b = gen.normal(size=(500, 16)), gen.normal(1.0, 2.0, size=(400, 16)) @ gen.normal(size=(16, 16))
    mu1, s1 = moments(torch.from_numpy(a))
    mu2, s2 = moments(torch.from_numpy(b))
    np.testing.assert_allclose(s1.numpy(), np.cov(a, rowvar=False))
    covmean = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = ((mu1 - mu2) ** 2).sum().item() + np.trace(s1.numpy() + s2.numpy() - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-8)


def test_knn_and_precision_recall_match_brute_force(monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK", 64)  # several chunks
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(300, 8, generator=gen)
    fake = torch.randn(250, 8, generator=gen) * 1.3 + 0.4
    d_rr, d_ff, d_fr = torch.cdist(real, real), torch.cdist(fake, fake), torch.cdist(fake, real)
    r_real = d_rr.sort(1).values[:, 3]  # index 0 is the point itself
    r_fake = d_ff.sort(1).values[:, 3]
    torch.testing.assert_close(knn_radii(real), r_real, rtol=1e-4, atol=1e-4)
    precision, recall = precision_recall(real, r_real, fake)
    assert precision == pytest.approx((d_fr <= r_real[None, :]).any(1).float().mean().item(), abs=1 / 250)
    assert recall == pytest.approx((d_fr <= r_fake[:, None]).any(0).float().mean().item(), abs=1 / 300)
    assert 0.1 < precision < 0.95 and 0.1 < recall < 0.95  # neither all nor nothing
