"""Sample-quality metrics of generated digits, all read through the frozen MNIST evaluator.

Class coverage and balance come from the argmax histogram, sharpness from the classifier
Inception Score, and fidelity/diversity from the evaluator's 128-d features: Fréchet distance
and k-NN precision/recall (Kynkäänniemi et al. 2019) against the MNIST test set.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .cache import data_checksum, digest, read_cache, write_cache
from .config import TrainConfig
from .data import load_mnist, resolve_data_dir
from .evaluator import Evaluator, check_images
from .losses import d_output_mean, realness

log = logging.getLogger(__name__)

K = 3  # neighbours of precision/recall, as in the paper
# A digit is covered when its share reaches this fraction of the uniform share (1 % for 10 classes).
MODE_FRACTION = 0.1
CHUNK = 1024  # rows of a distance block: 1024 x 10,000 float32 is 40 MB
METRICS_VERSION = "metrics/1"


# -- the metric registry ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricInfo:
    """What every layer needs to know of one metric: the spec's objective choices and default
    directions, the pruner's check, ``status``, the leaderboard, the findings and the labels all
    read it from :data:`METRICS`.
    """

    name: str
    label: str
    direction: str | None
    """'minimize' or 'maximize': which way is better (the objective's default); None where
    neither is (e.g. D's accuracy on generated samples)."""
    unit: str = ""
    kind: str = "score"
    """'score': measured by the evaluator at every evaluation and at the end (a pruner can act
    on it); 'run': known at the end of training; 'curve': recorded at every training step
    (its ``compute`` reads :class:`StepOutputs`), logged with the run's records and judged by claims."""
    shown: bool = True
    """A leaderboard column, a ``status`` column and a finding of the reports."""
    compute: Callable[[ScoreInputs], float] | Callable[[StepOutputs], torch.Tensor] | None = None
    """A score's value from what :func:`score` computed (for scores added by users: built-in
    scores are computed together in :func:`score`, several share one pass over the features); a
    curve's values, one per step and member, from :class:`StepOutputs` (every curve has one)."""
    panel: str | None = None
    """The reports' figure that draws it over training (one of :data:`PANELS`): 'factor_row', a
    factor's row of training curves; 'eval_curves', D's accuracy on each side per step and scores
    at every evaluation. None: not drawn (a claim may still judge a curve)."""


@dataclass(frozen=True)
class ScoreInputs:
    """What :func:`score` has computed before its metrics: a registered ``compute`` reads it."""

    logits: torch.Tensor
    features: torch.Tensor
    real: RealStats
    class_counts: list[int]


@dataclass(frozen=True)
class StepOutputs:
    """What a curve's ``compute`` reads: a block of training steps (and members) at once, on the
    device; the loop brings the curves to the host once per block."""

    cfg: TrainConfig
    g_loss: torch.Tensor
    """(...,) G's loss of each step's last G update."""
    d_loss: torch.Tensor
    """(...,) D's loss of each step's last D update."""
    real_out: torch.Tensor
    """(..., B) D's raw outputs on the last D update's real images."""
    fake_out: torch.Tensor
    """(..., B) D's raw outputs on that update's generated images."""

    def acc_real(self) -> torch.Tensor:
        """The share of real images D calls real."""
        return (realness(self.cfg, self.real_out) > 0).float().mean(-1)

    def acc_fake(self) -> torch.Tensor:
        """The share of generated images D calls generated."""
        return (realness(self.cfg, self.fake_out) < 0).float().mean(-1)


METRICS: dict[str, MetricInfo] = {}
"""Every metric gan-study knows, in display order. Add one with :func:`register`."""
KINDS = ("score", "run", "curve")
PANELS = (None, "factor_row", "eval_curves")


def register(info: MetricInfo) -> MetricInfo:
    """Add (or replace) a metric; everything downstream reads the registry when it runs."""
    if info.direction not in ("minimize", "maximize", None):
        raise ValueError(f"direction must be 'minimize', 'maximize' or None, got {info.direction!r}")
    if info.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {info.kind!r}")
    if info.kind == "curve" and info.compute is None:
        raise ValueError(f"curve {info.name!r} needs a compute: its values per step from StepOutputs")
    if info.panel not in PANELS:
        raise ValueError(f"panel must be one of {PANELS}, got {info.panel!r}")
    METRICS[info.name] = info
    return info


def metrics_of(*kinds: str, shown: bool | None = None) -> list[MetricInfo]:
    """Registered metrics of the given kinds (all kinds if none), in registry order."""
    return [m for m in METRICS.values() if (not kinds or m.kind in kinds) and (shown is None or m.shown == shown)]


def over_training() -> list[MetricInfo]:
    """The metrics with values over training: every curve (one per step), then the scores a
    panel draws (one per evaluation)."""
    return metrics_of("curve") + [m for m in metrics_of("score") if m.panel]


def label(name: str) -> str:
    """The human label of a metric, with its unit (its name when it is not registered)."""
    info = METRICS.get(name)
    if info is None:
        return name
    return f"{info.label} ({info.unit})" if info.unit else info.label


for _info in (
    MetricInfo("fd", "Fréchet distance (evaluator features)", "minimize", panel="eval_curves"),
    MetricInfo("modes", "digits covered (of 10)", "maximize"),
    MetricInfo("kl_uniform", "KL(class histogram ‖ uniform) (nats)", "minimize"),
    MetricInfo("is", "classifier Inception Score", "maximize"),
    MetricInfo("confidence", "mean max class probability", "maximize", shown=False),
    MetricInfo("precision", "precision (k=3)", "maximize"),
    MetricInfo("recall", "recall (k=3)", "maximize"),
    # Measured with the trial's own D, not the evaluator (the study computes it).
    MetricInfo("d_acc_generated", "D accuracy on generated samples", None),
    MetricInfo("train_seconds", "training time", "minimize", unit="s", kind="run"),
    MetricInfo("images_per_sec", "training throughput", "maximize", unit="images/s", kind="run", shown=False),
    # The curves, in the order of a run's records (g_loss and d_loss are checked for divergence).
    MetricInfo("g_loss", "generator loss", None, kind="curve", shown=False, panel="factor_row",
               compute=lambda s: s.g_loss),
    MetricInfo("d_loss", "discriminator loss", None, kind="curve", shown=False, panel="factor_row",
               compute=lambda s: s.d_loss),
    MetricInfo("d_acc", "discriminator accuracy", None, unit="fraction", kind="curve", shown=False,
               panel="factor_row", compute=lambda s: (s.acc_real() + s.acc_fake()) / 2),
    MetricInfo("d_acc_real", "D accuracy on real images", None, unit="fraction", kind="curve", shown=False,
               panel="eval_curves", compute=StepOutputs.acc_real),
    MetricInfo("d_acc_fake", "D accuracy on generated images", None, unit="fraction", kind="curve", shown=False,
               panel="eval_curves", compute=StepOutputs.acc_fake),
    MetricInfo("d_real_mean", "mean D output on real images", None, kind="curve", shown=False,
               compute=lambda s: d_output_mean(s.cfg, s.real_out)),
    MetricInfo("d_fake_mean", "mean D output on generated images", None, kind="curve", shown=False,
               compute=lambda s: d_output_mean(s.cfg, s.fake_out)),
):
    register(_info)

KEYS = ("fd", "modes", "kl_uniform", "is", "confidence", "precision", "recall", "class_counts")
"""What :func:`score` returns for the built-in metrics (plus any registered ``compute``)."""


@dataclass(frozen=True)
class RealStats:
    """The reference side of the feature metrics: the MNIST test set through the evaluator."""

    mu: torch.Tensor
    """float64 (D,) feature mean."""
    sigma: torch.Tensor
    """float64 (D, D) feature covariance."""
    features: torch.Tensor
    """float32 (N, D) features of every test image."""
    radii: torch.Tensor
    """float32 (N,) distance of each test feature to its K-th nearest other test feature."""
    key: str
    """Cache key: the evaluator's recipe key and weights hash, and the test data's checksum."""


# Per evaluator, per data folder; weak so a dropped evaluator frees its statistics.
_MEMO: weakref.WeakKeyDictionary[Evaluator, dict[str, RealStats]] = weakref.WeakKeyDictionary()


def real_stats(evaluator: Evaluator, data_dir: str | os.PathLike | None = None) -> RealStats:
    """Test-set statistics, computed once and cached in memory and next to the evaluator cache.

    ``data_dir`` defaults to the folder the evaluator was loaded from.
    """
    folder = resolve_data_dir(data_dir) if data_dir is not None else evaluator.data_dir
    memo = _MEMO.setdefault(evaluator, {})
    if str(folder) in memo:
        return memo[str(folder)]
    test = load_mnist(folder, train=False)
    # The recipe key alone is not enough: the same recipe trains other weights on another CPU.
    key = digest(METRICS_VERSION, K, evaluator.key, evaluator.weights_hash, data_checksum(test))
    # One file per evaluator: a pinned and a retrained one in the same cache do not evict each other.
    path = evaluator.cache_dir / f"real-stats-{evaluator.weights_hash[:16]}.pt"
    payload = read_cache(path, key)
    try:
        stats = RealStats(**payload, key=key) if payload is not None else None
    except TypeError:  # a payload with other fields: rebuild like any corrupt file
        log.warning("cache file %s is corrupt (unexpected fields); rebuilding it", path)
        stats = None
    if stats is None:
        _, feats = evaluator.predict(test.batch(torch.arange(len(test))))
        mu, sigma = moments(feats)
        stats = RealStats(mu.cpu(), sigma.cpu(), feats.cpu(), knn_radii(feats).cpu(), key)
        write_cache(path, key, {"mu": stats.mu, "sigma": stats.sigma, "features": stats.features, "radii": stats.radii})
    memo[str(folder)] = stats
    return stats


def score(images: torch.Tensor, evaluator: Evaluator, real: RealStats | None = None) -> dict[str, float | list[int]]:
    """Every metric of ``images`` (float (N, 1, 28, 28) in [-1, 1]) against the MNIST test set.

    Keys: ``fd``, ``modes``, ``kl_uniform``, ``is``, ``confidence``, ``precision``, ``recall``
    and ``class_counts`` (images per predicted digit, a list of 10 ints).
    """
    check_images(images)
    if images.shape[0] <= K:
        raise ValueError(f"need more than {K} images to score, got {images.shape[0]}")
    real = real if real is not None else real_stats(evaluator)
    logits, feats = evaluator.predict(images)
    counts = torch.bincount(logits.argmax(1), minlength=10).tolist()
    mu, sigma = moments(feats)
    dev = feats.device
    precision, recall = precision_recall(real.features.to(dev), real.radii.to(dev), feats)
    values: dict[str, float | list[int]] = {
        "fd": frechet_distance(mu, sigma, real.mu.to(dev), real.sigma.to(dev)),
        **class_metrics(counts),
        **inception_score(logits),
        "precision": precision,
        "recall": recall,
        "class_counts": counts,
    }
    inputs = ScoreInputs(logits, feats, real, counts)
    for info in metrics_of("score", "run"):
        if info.compute is not None:
            values[info.name] = float(info.compute(inputs))
    return values


def floors(
    evaluator: Evaluator, data_dir: str | os.PathLike | None = None, n: int = 10_000, seed: int = 0
) -> dict[str, float | list[int]]:
    """The metrics of real digits: ``n`` random training images scored like generated ones.

    This is the best a generator can do at ``n`` samples (FD is not 0 even for real data).
    The draw is random because MNIST's splits are ordered (the test set's first half is easier).
    """
    folder = resolve_data_dir(data_dir) if data_dir is not None else evaluator.data_dir
    train = load_mnist(folder, train=True)
    if not K < n <= len(train):
        raise ValueError(f"n must be in {K + 1}..{len(train)}, got {n}")
    real = real_stats(evaluator, folder)
    key = digest(METRICS_VERSION, real.key, data_checksum(train), n, seed)
    path = evaluator.cache_dir / f"floors-n{n}-seed{seed}.pt"
    cached = read_cache(path, key)
    wanted = {*KEYS, *(m.name for m in metrics_of("score", "run") if m.compute)}
    if cached is not None and wanted <= set(cached):
        return {k: v for k, v in cached.items() if k in wanted}
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    result = score(train.batch(idx), evaluator, real)
    write_cache(path, key, result)
    return result


def class_metrics(counts: Sequence[int]) -> dict[str, float]:
    """``modes`` (digits with at least 10 % of the uniform share) and ``kl_uniform``.

    ``kl_uniform`` is KL(class histogram || uniform) in nats: 0 when balanced, ln C for one class.
    """
    total = sum(counts)
    if total <= 0 or min(counts) < 0:
        raise ValueError(f"class counts must be non-negative with a positive total, got {list(counts)}")
    n_classes = len(counts)
    modes = sum(c >= MODE_FRACTION * total / n_classes for c in counts)
    kl = sum(c / total * math.log(c / total * n_classes) for c in counts if c > 0)
    return {"modes": modes, "kl_uniform": max(kl, 0.0)}


def inception_score(logits: torch.Tensor) -> dict[str, float]:
    """Classifier Inception Score exp(E_x KL(p(y|x) || p(y))) and the mean max-probability."""
    log_p = torch.log_softmax(logits.double(), dim=1)
    p = log_p.exp()
    log_marginal = p.mean(0).log()
    kl = (p * (log_p - log_marginal)).sum(1).mean()
    return {"is": kl.exp().item(), "confidence": p.max(1).values.mean().item()}


def moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance in float64."""
    x = features.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64.

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2),
    a symmetric PSD matrix: the eigen route gives a real answer with no imaginary round-off.
    """
    s1, s2 = sigma1.double(), sigma2.double()
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    inner = root1 @ s2 @ root1
    tr_covmean = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    diff = mu1.double() - mu2.double()
    return (diff @ diff + s1.trace() + s2.trace() - 2 * tr_covmean).clamp(min=0).item()


def knn_radii(features: torch.Tensor, k: int = K) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (itself excluded)."""
    sq = features.pow(2).sum(1)
    # ||b||^2 - 2 a.b ranks the rows of b like the squared distance; ||a||^2 is added after topk.
    partial = [
        torch.addmm(sq[None, :], chunk, features.T, alpha=-2).topk(k + 1, dim=1, largest=False).values[:, k]
        for chunk in features.split(CHUNK)
    ]
    return (torch.cat(partial) + sq).clamp_(min=0).sqrt_()


def precision_recall(
    real: torch.Tensor, real_radii: torch.Tensor, fake: torch.Tensor, k: int = K
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019).

    Precision: share of fakes inside some real k-NN ball; recall: share of reals inside some
    fake k-NN ball. Both scan the fake x real distances in chunks, each test rearranged so one
    ``addmm`` and one ``amin`` decide it: ||f - r||^2 <= rad^2  <=>  ||r||^2 - rad_r^2 - 2 f.r <= -||f||^2.
    """
    real_sq, fake_sq = real.pow(2).sum(1), fake.pow(2).sum(1)
    fake_slack = fake_sq - knn_radii(fake, k).pow(2)
    real_slack = (real_sq - real_radii.pow(2))[None, :]
    inside: list[torch.Tensor] = []
    nearest = torch.full_like(real_sq, math.inf)  # min over fakes of ||f||^2 - rad_f^2 - 2 f.r
    for chunk, sq, slack in zip(fake.split(CHUNK), fake_sq.split(CHUNK), fake_slack.split(CHUNK)):
        inside.append(torch.addmm(real_slack, chunk, real.T, alpha=-2).amin(1) <= -sq)
        nearest = torch.minimum(nearest, torch.addmm(slack[:, None], chunk, real.T, alpha=-2).amin(0))
    return torch.cat(inside).float().mean().item(), (nearest <= -real_sq).float().mean().item()
