"""Figures that show every value of a factor, as the classic reports do: samples with their
predicted digit, class histograms, D accuracy on real and generated images, FD at each
evaluation and samples across training. One figure per factor; one row (or panel) per value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from gan import metrics as gm

from .analysis import Factor, Level
from .data import StudyData
from .figures import BASELINE_COLOR, _save, binned_curves, palette, themed
from .pictures import mosaic

__all__ = ["class_counts", "class_histograms", "eval_curves", "level_colors", "level_pictures", "progress_strips", "sample_strips", "shares_table"]

UNIFORM_COLOR = "#c44e52"
REAL_COLOR = "black"


def level_colors(factor: Factor) -> dict[str, tuple]:
    """The colors of factor_row: the palette in order, the baseline dark grey."""
    colors = palette([lv.label for lv in factor.levels if not lv.baseline])
    colors.update({lv.label: BASELINE_COLOR for lv in factor.levels if lv.baseline})
    return colors


def _name(level: Level) -> str:
    """The value's label; the baseline's says so unless its label already is 'baseline'."""
    return f"{level.label} (baseline)" if level.baseline and level.label != "baseline" else level.label


def level_pictures(data: StudyData, level: Level) -> tuple[int, dict[str, Any]] | None:
    """(trial number, pictures) of the level's first trial that has them (its first repeat)."""
    for t in sorted(level.trials, key=lambda t: t.number):
        if t.number in data.pictures:
            return t.number, data.pictures[t.number]
    return None


def class_counts(level: Level) -> np.ndarray:
    """Predicted-digit counts of the final samples, summed over every repeat of the level."""
    total = np.zeros(10)
    for t in level.trials:
        for r in t.repeat_metrics:
            counts = r.get("class_counts")
            if isinstance(counts, list) and len(counts) == 10:
                total += np.asarray(counts, dtype=float)
    return total


# -- curves ---------------------------------------------------------------------------------------
@themed
def eval_curves(data: StudyData, factor: Factor, path: Path) -> Path | None:
    """The registry's metrics of panel 'eval_curves': curves over training (D accuracy on real and
    on generated images), then scores at every evaluation (FD).

    Lines are means over the runs of a value; bands ±1 sd over them (the spread of the repeats).
    """
    colors = level_colors(factor)
    trials = {t.number: lv.label for lv in factor.levels for t in lv.trials}
    curves = data.curves
    if curves.empty or not set(curves["trial"]) & set(trials):
        return None
    order = [lv.label for lv in factor.levels]
    steps = [m.name for m in gm.metrics_of("curve") if m.panel == "eval_curves"]
    scores = [m.name for m in gm.metrics_of("score") if m.panel == "eval_curves"]
    fig, axes = plt.subplots(1, len(steps) + len(scores), figsize=(13 / 3 * (len(steps) + len(scores)), 3.3), squeeze=False)
    axes = axes[0]
    binned = binned_curves(curves[curves["key"].isin(steps)], trials)
    for ax, key in zip(axes, steps):
        part = binned[binned["key"] == key] if not binned.empty else binned
        if part.empty:
            ax.text(0.5, 0.5, "not logged (older study)", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(data=part, x="step_bin", y="value", hue="level", hue_order=[lv for lv in order if lv in set(part["level"])],
                         palette=colors, errorbar="sd", ax=ax, legend=False, linewidth=1.4)
        ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(gm.METRICS[key].label)
        ax.set_xlabel("training step (iterations)")
        ax.set_ylabel("fraction classified correctly")
    for ax, key in zip(axes[len(steps):], scores):
        _score_curve(ax, data, key, trials, order, colors)
    handles = [plt.Line2D([0], [0], color=colors[lv.label], lw=2.5) for lv in factor.levels]
    fig.legend(handles, [_name(lv) for lv in factor.levels], title=factor.name, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _score_curve(ax, data: StudyData, key: str, trials: dict[int, str], order: list[str], colors: dict) -> None:
    """One score at every evaluation of the runs of ``trials``, with its real-data floor."""
    values = data.curves[(data.curves["key"] == key) & data.curves["trial"].isin(list(trials))].copy()
    if values.empty:
        ax.text(0.5, 0.5, "no evaluations logged", ha="center", va="center", transform=ax.transAxes)
    else:
        values["level"] = values["trial"].map(trials)
        values = values.groupby(["level", "trial", "repeat", "step"], as_index=False)["value"].last()
        sns.lineplot(data=values, x="step", y="value", hue="level", hue_order=[lv for lv in order if lv in set(values["level"])],
                     palette=colors, errorbar="sd", marker="o", markersize=4, ax=ax, legend=False, linewidth=1.3)
        if (values["value"] > 0).all() and values["value"].max() / max(values["value"].min(), 1e-12) > 20:
            ax.set_yscale("log")  # the untrained step 0 is far above the rest
        floor = (data.floors or {}).get(key)
        if isinstance(floor, float) and floor > 0:
            ax.axhline(floor, color="0.35", ls="--", lw=1)
    ax.set_title(f"{key.upper()} at each evaluation")
    ax.set_xlabel("training step (iterations)")
    ax.set_ylabel(gm.label(key))


# -- pictures -------------------------------------------------------------------------------------
def _strip_row(ax, images: np.ndarray, labels: list[int] | None, ncol: int) -> None:
    """A row of images in one axis, with the predicted digit under each."""
    tile = mosaic(images, ncol)
    ax.imshow(tile, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    if labels is not None:
        w = images.shape[2] + 2
        for i, lab in enumerate(labels[:ncol]):
            ax.text(i * w + (w - 2) / 2, tile.shape[0] + 1, str(int(lab)), ha="center", va="top", fontsize=8)


@themed
def sample_strips(data: StudyData, factor: Factor, path: Path) -> tuple[Path | None, list[str]]:
    """20 final samples per value, predicted digit under each; the same noise in every row.

    Returns the figure (None when no value has pictures) and the values left out.
    """
    rows = [(lv, level_pictures(data, lv)) for lv in factor.levels]
    shown = [(lv, p) for lv, p in rows if p is not None and len(p[1].get("samples_20", [])) > 0]
    missing = [lv.label for lv, p in rows if p is None]
    if not shown:
        return None, missing
    colors = level_colors(factor)
    fig, axes = plt.subplots(len(shown), 1, figsize=(13, 0.95 * len(shown) + 0.2), squeeze=False)
    for ax, (lv, (number, pics)) in zip(axes[:, 0], shown):
        images = pics["samples_20"]
        _strip_row(ax, images, list(pics["samples_20_pred"]), len(images))
        ax.set_ylabel(f"{_name(lv)}\ntrial {number}", rotation=0, ha="right", va="center", fontsize=9, color=colors[lv.label])
    fig.tight_layout(h_pad=0.6)
    return _save(fig, path), missing


@themed
def progress_strips(data: StudyData, factor: Factor, path: Path) -> Path | None:
    """Fixed-noise samples at step 0, 25 %, 50 % and the end of training, one row per value."""
    shown = [(lv, p) for lv in factor.levels if (p := level_pictures(data, lv)) is not None and len(p[1].get("progress_steps", [])) > 0]
    if not shown:
        return None
    n_steps = max(len(p["progress_steps"]) for _, (_, p) in shown)
    fig, axes = plt.subplots(len(shown), n_steps, figsize=(2.6 * n_steps + 1, 1.35 * len(shown) + 0.4), squeeze=False)
    total = max(int(p["progress_steps"][-1]) for _, (_, p) in shown)
    colors = level_colors(factor)
    for r, (lv, (number, pics)) in enumerate(shown):
        steps = [int(s) for s in pics["progress_steps"]]
        for c in range(n_steps):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if c >= len(steps):
                continue
            images = pics["progress"][c]
            ax.imshow(mosaic(images, (len(images) + 1) // 2), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            if r == 0 or steps != [int(s) for s in shown[0][1][1]["progress_steps"]]:
                share = f"{steps[c] / total:.0%}" if total else ""
                ax.set_title(f"step {steps[c]} ({share})", fontsize=9)
        axes[r, 0].set_ylabel(f"{_name(lv)}\ntrial {number}", rotation=0, ha="right", va="center", fontsize=9, color=colors[lv.label])
    fig.tight_layout(w_pad=0.8, h_pad=0.5)
    return _save(fig, path)


@themed
def class_histograms(data: StudyData, factor: Factor, path: Path) -> Path | None:
    """Share of each predicted digit per value (all repeats pooled), small multiples on one scale,
    with the uniform share and the real-data histogram for reference."""
    counts = [(lv, class_counts(lv)) for lv in factor.levels]
    counts = [(lv, c) for lv, c in counts if c.sum() > 0]
    if not counts:
        return None
    real = (data.floors or {}).get("class_counts")
    real_share = np.asarray(real, dtype=float) / sum(real) if isinstance(real, list) and sum(real) else None
    ncol = min(len(counts), 4)
    nrow = -(-len(counts) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.25 * ncol, 2.4 * nrow), squeeze=False, sharey=True)
    colors = level_colors(factor)
    top = max(float((c / c.sum()).max()) for _, c in counts)
    for ax, (lv, c) in zip(axes.flat, counts):
        share = c / c.sum()
        ax.bar(range(10), share, color=colors[lv.label], alpha=0.85, width=0.8)
        ax.axhline(0.1, color=UNIFORM_COLOR, ls="--", lw=1)
        if real_share is not None:
            ax.plot(range(10), real_share, "_", color=REAL_COLOR, ms=12, mew=1.6)
        ax.set_xticks(range(10))
        ax.set_ylim(0, max(top, 0.12) * 1.1)
        ax.set_title(f"{_name(lv)} (n={int(c.sum()):,})", fontsize=9)
        ax.set_xlabel("predicted digit")
    for ax in axes[:, 0]:
        ax.set_ylabel("share of samples")
    for ax in list(axes.flat)[len(counts):]:
        ax.axis("off")
    handles = [plt.Line2D([0], [0], color=UNIFORM_COLOR, ls="--", lw=1)]
    names = ["uniform (0.1)"]
    if real_share is not None:
        handles.append(plt.Line2D([0], [0], color=REAL_COLOR, marker="_", ls="", ms=12, mew=1.6))
        names.append("real MNIST digits")
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)


def shares_table(factor: Factor) -> tuple[list[str], list[list[str]]]:
    """Per-digit shares (%) of each value's final samples with the mean KL to uniform and modes."""
    from .analysis import level_estimate
    from .stats import fmt_estimate

    columns = ["value", *map(str, range(10)), "kl_uniform", "modes"]
    rows = []
    for lv in factor.levels:
        c = class_counts(lv)
        if c.sum() == 0:
            continue
        shares = [f"{100 * v / c.sum():.1f}" for v in c]
        rows.append([_name(lv), *shares, fmt_estimate(level_estimate(lv, "kl_uniform"), 3), fmt_estimate(level_estimate(lv, "modes"), 3)])
    return columns, rows

