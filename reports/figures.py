"""The report's figures, drawn with seaborn/matplotlib (Agg) into PNG files."""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .analysis import Factor, level_estimate  # noqa: E402
from gan import metrics as gm  # noqa: E402
from gan.plots import save_figure  # noqa: E402

from .data import StudyData, finite  # noqa: E402

DPI = 120
CURVE_BINS = 120  # points per curve after binning steps (smooths and aligns runs)
STATE_COLORS = {"COMPLETE": "#4c72b0", "PRUNED": "#dd8452", "FAIL": "#c44e52", "RUNNING": "#55a868", "WAITING": "#8c8c8c"}
BASELINE_COLOR = (0.3, 0.3, 0.3)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def themed(draw: Callable[_P, _R]) -> Callable[_P, _R]:
    """``draw`` in seaborn's 'paper' whitegrid theme, the importing program's rcParams back after it.

    A context, not ``sns.set_theme`` at import: reports must not restyle the plots of a program
    that imports it. ``color_codes=False`` leaves matplotlib's 'b', 'g', ... colours (global, not
    rcParams) alone; no figure of reports names one.
    """

    @functools.wraps(draw)
    def styled(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with plt.rc_context():
            sns.set_theme(context="paper", style="whitegrid", font_scale=1.15, color_codes=False)
            return draw(*args, **kwargs)

    return styled


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _save(fig, path: Path) -> Path:
    save_figure(fig, path, dpi=DPI, bbox_inches="tight")
    return path


def palette(labels: list[str]) -> dict[str, tuple]:
    """One color per value, the same in every panel of a row."""
    colors = sns.color_palette("tab10" if len(labels) <= 10 else "husl", len(labels))
    return dict(zip(labels, colors))


def binned_curves(curves: pd.DataFrame, trials: dict[int, str], bins: int = CURVE_BINS) -> pd.DataFrame:
    """Each run's curves averaged in ``bins`` equal step windows; column ``level`` added.

    Binning aligns runs whose steps differ and smooths the windowed losses for reading.
    """
    df = curves[curves["trial"].isin(list(trials))].copy()
    if df.empty:
        return df.assign(level=[], step_bin=[])
    df["level"] = df["trial"].map(trials)
    top = float(df["step"].max()) or 1.0
    nb = int(min(bins, df["step"].nunique()))
    edges = np.linspace(0, top, nb + 1)
    idx = np.clip(np.searchsorted(edges, df["step"].to_numpy(), side="left") - 1, 0, nb - 1)
    centers = (edges[:-1] + edges[1:]) / 2
    df["step_bin"] = centers[idx] if nb > 1 else df["step"]
    return df.groupby(["level", "trial", "repeat", "key", "step_bin"], as_index=False, observed=True)["value"].mean()


@themed
def factor_row(data: StudyData, factor: Factor, metric: str, path: Path) -> Path:
    """One row: the registry's curves of panel 'factor_row' over training (G loss, D loss, D
    accuracy: mean, band ±1 sd over runs) and the final metric."""
    labels = [lv.label for lv in factor.levels]
    # the baseline is dark grey in every row; the other values take the palette in order
    colors = palette([lv.label for lv in factor.levels if not lv.baseline])
    colors.update({lv.label: BASELINE_COLOR for lv in factor.levels if lv.baseline})
    trials = {t.number: lv.label for lv in factor.levels for t in lv.trials}
    df = binned_curves(data.curves, trials)
    panels = [m for m in gm.metrics_of("curve") if m.panel == "factor_row"]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(13 / 4 * (len(panels) + 1), 3.3),
                             gridspec_kw={"width_ratios": [1] * len(panels) + [0.9]})
    for ax, curve in zip(axes, panels):
        key, ylabel = curve.name, gm.label(curve.name)
        part = df[df["key"] == key] if not df.empty else df
        if part.empty:
            ax.text(0.5, 0.5, "no curves logged", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.lineplot(
                data=part, x="step_bin", y="value", hue="level", hue_order=[lv for lv in labels if lv in set(part["level"])],
                palette=colors, errorbar="sd", estimator="mean", ax=ax, legend=False, linewidth=1.4,
            )
        ax.set_title(ylabel[0].upper() + ylabel[1:])
        ax.set_xlabel("training step (iterations)")
        ax.set_ylabel(ylabel)
        if curve.unit == "fraction":  # a share of images: chance is a half
            ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
    ax = axes[-1]
    points = [(lv.label, v) for lv in factor.levels for t in lv.trials for v in t.repeat_values(metric)]
    if points:
        pts = pd.DataFrame(points, columns=["level", "value"])
        sns.stripplot(data=pts, x="level", y="value", hue="level", order=labels, hue_order=labels, palette=colors,
                      ax=ax, size=5, alpha=0.75, jitter=0.12, legend=False)
        for i, lv in enumerate(factor.levels):
            e = level_estimate(lv, metric)
            if e.n == 0:
                continue
            err = e.half if math.isfinite(e.half) else 0
            ax.errorbar([i + 0.28], [e.mean], yerr=[[err], [err]], fmt="D", color="black", ms=4, capsize=3, lw=1.1)
    floor = (data.floors or {}).get(metric)
    if finite(floor):
        ax.axhline(floor, color="0.35", ls="--", lw=1, label="real-data floor")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Final {metric} by value")
    ax.set_xlabel(factor.name)
    ax.set_ylabel(gm.label(metric))
    ax.tick_params(axis="x", rotation=30 if sum(map(len, labels)) > 24 or max(map(len, labels)) > 12 else 0)
    handles = [plt.Line2D([0], [0], color=colors[lbl], lw=2.5) for lbl in labels]
    names = [f"{lbl} (baseline)" if lv.baseline and lbl != "baseline" else lbl for lbl, lv in zip(labels, factor.levels)]
    fig.legend(handles, names, title=factor.name, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, path)


@themed
def optimization_history(data: StudyData, path: Path) -> Path:
    """Objective value of each trial in trial order, with the best so far; pruned at their last report."""
    n_obj = len(data.objectives)
    fig, axes = plt.subplots(1, n_obj, figsize=(6.5 * n_obj, 3.8), squeeze=False)
    for i, (metric, direction) in enumerate(data.objectives):
        ax = axes[0][i]
        done = sorted((t for t in data.complete if t.values), key=lambda t: t.number)
        xs = [t.number for t in done]
        ys = [t.values[i] for t in done]
        ax.scatter(xs, ys, color=STATE_COLORS["COMPLETE"], s=28, label="complete", zorder=3)
        if ys:
            best = np.minimum.accumulate(ys) if direction == "minimize" else np.maximum.accumulate(ys)
            ax.step(xs, best, where="post", color="#c44e52", lw=1.5, label="best so far")
        if i == 0:
            pruned = [t for t in data.by_state("PRUNED", "RUNNING") if t.intermediate]
            for state in ("PRUNED", "RUNNING"):
                sel = [t for t in pruned if t.state == state]
                if sel:
                    ax.scatter([t.number for t in sel], [t.intermediate[max(t.intermediate)] for t in sel], marker="x",
                               color=STATE_COLORS[state], s=32, label=f"{state.lower()} (last report)", zorder=3)
        floor = (data.floors or {}).get(metric)
        if finite(floor):
            ax.axhline(floor, color="0.35", ls="--", lw=1, label="real-data floor")
        if data.is_sweep and len(done) <= 30:  # name the sweep point of each trial
            for t, y in zip(done, ys):
                if t.sweep:
                    ax.annotate(t.sweep["point"], (t.number, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color="0.25")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("trial number")
        ax.set_ylabel(gm.label(metric))
        ax.set_title(f"Optimization history: {metric} ({direction})")
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


@themed
def importances(values: dict[str, dict[str, float]], path: Path) -> Path:
    """Horizontal bars of each objective's normalised parameter importances."""
    n = len(values)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 0.9 + 0.45 * max(len(v) for v in values.values())), squeeze=False)
    for ax, (metric, imp) in zip(axes[0], values.items()):
        df = pd.DataFrame({"param": list(imp), "importance": list(imp.values())})
        sns.barplot(data=df, y="param", x="importance", color="#4c72b0", ax=ax, orient="h")
        for j, v in enumerate(df["importance"]):
            ax.text(v, j, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(1e-9, df["importance"].max()) * 1.2)
        ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
        ax.set_ylabel("parameter")
        ax.set_title(f"Parameter importance for {metric}")
    fig.tight_layout()
    return _save(fig, path)


@themed
def pareto_front(data: StudyData, pareto: set[int], path: Path) -> Path:
    """The first two objectives of every complete trial; the Pareto-optimal ones joined."""
    (m0, d0), (m1, d1) = data.objectives[:2]
    done = [t for t in data.complete if t.values and len(t.values) >= 2]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    other = [t for t in done if t.number not in pareto]
    front = sorted((t for t in done if t.number in pareto), key=lambda t: t.values[0])
    ax.scatter([t.values[0] for t in other], [t.values[1] for t in other], color="0.6", s=28, label="dominated")
    ax.plot([t.values[0] for t in front], [t.values[1] for t in front], "o-", color="#c44e52", ms=6, lw=1.2, label="Pareto front")
    for t in done:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel(f"{gm.label(m0)} ({d0})")
    ax.set_ylabel(f"{gm.label(m1)} ({d1})")
    ax.set_title("Pareto front (labels: trial numbers)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


@themed
def intermediate_values(data: StudyData, path: Path) -> Path | None:
    """The objective at each evaluation of each trial (what the pruner sees), colored by state."""
    trials = [t for t in data.trials if len(t.intermediate) >= 1]
    if not trials:
        return None
    metric = data.primary[0]
    fig, ax = plt.subplots(figsize=(7.5, 4))
    seen = set()
    for t in sorted(trials, key=lambda t: t.number):
        steps = sorted(t.intermediate)
        label = t.state.lower() if t.state not in seen else None
        seen.add(t.state)
        ax.plot(steps, [t.intermediate[s] for s in steps], "o-", color=STATE_COLORS.get(t.state, "0.5"), ms=3, lw=1, alpha=0.85, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step (iterations)")
    ax.set_ylabel(gm.label(metric))
    ax.set_title(f"{metric} at each evaluation, per trial (what the pruner compares)")
    ax.legend(fontsize=8, title="trial state")
    fig.tight_layout()
    return _save(fig, path)


@themed
def real_beside_generated(data: StudyData, generated: Path, path: Path) -> Path | None:
    """64 random MNIST test digits beside the best trial's fixed-noise grid, at the same scale."""
    from .pictures import mosaic, real_digits

    real = real_digits(data.data_dir, 64)
    if real is None:
        return None
    fake = plt.imread(str(generated))
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
    axes[0].imshow(mosaic(real, 8), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[0].set_title("real MNIST digits (test split)")
    axes[1].imshow(fake, cmap="gray" if fake.ndim == 2 else None, interpolation="nearest")
    axes[1].set_title("generated (best trial, fixed noise)")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)
