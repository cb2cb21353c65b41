"""Search studies (sampled parameters, not a sweep): the objective against each parameter
(slice plots), the two most important parameters together, and modes and KL per value."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from . import analysis as an
from .data import StudyData
from .doc import Block, Figure, Heading, Table, Text
from .figures import _save, themed
from .stats import fmt_estimate

__all__ = ["search_blocks", "slice_plots", "top_two"]


def _numeric(values: list) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _log_scale(data: StudyData, name: str) -> bool:
    for t in data.study.get_trials(deepcopy=False):
        dist = t.distributions.get(name)
        if dist is not None:
            return bool(getattr(dist, "log", False))
    return False


@themed
def slice_plots(data: StudyData, params: list[str], path: Path) -> Path | None:
    """The first objective of every complete trial against each parameter (one panel each),
    colored by trial number so the sampler's drift shows."""
    done = [t for t in data.complete if t.values]
    if not done or not params:
        return None
    metric, direction = data.primary
    ncol = min(len(params), 3)
    nrow = -(-len(params) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.2 * nrow), squeeze=False, sharey=True)
    numbers = [t.number for t in done]
    for ax, name in zip(axes.flat, params):
        having = [t for t in done if name in t.params]
        xs = [t.params[name] for t in having]
        ys = [t.values[0] for t in having]
        if not _numeric(xs):  # categories at integer positions, a little jitter to separate points
            cats = list(dict.fromkeys(map(str, xs)))
            pos = [cats.index(str(x)) + np.random.default_rng(t.number).uniform(-0.12, 0.12) for x, t in zip(xs, having)]
            ax.set_xticks(range(len(cats)), cats)
            xs = pos
        else:
            # a log axis where the sampled values span a decade (within one, its ticks are crowded minor labels)
            if _log_scale(data, name) and min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            else:
                ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        sc = ax.scatter(xs, ys, c=[t.number for t in having], cmap="viridis", vmin=min(numbers), vmax=max(numbers), s=30,
                        edgecolor="white", linewidth=0.5)
        floor = (data.floors or {}).get(metric)
        if isinstance(floor, float) and math.isfinite(floor):
            ax.axhline(floor, color="0.35", ls="--", lw=1)
        ax.set_xlabel(name)
        ax.set_title(f"{metric} against {name}", fontsize=10)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{metric} ({direction})")
    for ax in list(axes.flat)[len(params):]:
        ax.axis("off")
    bar = fig.colorbar(sc, ax=axes, label="trial number", fraction=0.025, pad=0.02)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return _save(fig, path)


@themed
def top_two(data: StudyData, params: list[str], path: Path) -> tuple[Path | None, str]:
    """Optuna's contour plot of the two parameters (its parallel coordinates when one is
    categorical); Optuna's ggplot style, which it sets globally, ends with :func:`themed`'s context."""
    from optuna.visualization import matplotlib as ovm

    metric = data.primary[0]
    target = (lambda t: t.values[0]) if data.multi_objective else None
    numeric = all(_numeric([t.params[p] for t in data.complete if p in t.params]) for p in params)
    kind = "contour" if numeric else "parallel coordinates"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are 'experimental'
        try:
            if numeric:
                ax = ovm.plot_contour(data.study, params=params, target=target, target_name=metric)
            else:
                ax = ovm.plot_parallel_coordinate(data.study, params=params, target=target, target_name=metric)
        except Exception as exc:  # noqa: BLE001 - say why in the report
            plt.close("all")
            return None, f"Optuna's {kind} plot failed: {type(exc).__name__}: {exc}"
        ax0 = ax.flat[0] if isinstance(ax, np.ndarray) else ax
        fig = ax0.figure
        fig.set_size_inches(7, 4.8)
        fig.suptitle("")
        ax0.set_title(f"{kind.capitalize()} of {metric} over {' and '.join(params)}", fontsize=10)
        return _save(fig, path), kind


def search_blocks(data: StudyData, importances: dict[str, dict[str, float]], figures: Path) -> list[Block]:
    """Slice plots, the top-two view and per-value modes/KL tables of a search study."""
    blocks: list[Block] = []
    params = [p for p in an.param_names(data) if len({repr(t.params.get(p)) for t in data.complete if p in t.params}) > 1]
    path = slice_plots(data, params, figures / "slices.png")
    if path is not None:
        blocks += [Heading("Objective against each parameter", 3),
                   Figure(path, f"Slice plots: the {data.primary[0]} of every complete trial against each sampled parameter "
                                "(color: trial number; dashed: the real-data floor).", 0.95 if len(params) > 1 else 0.5)]
    ranked = sorted(importances.get(data.primary[0], {}).items(), key=lambda kv: -kv[1]) if importances else []
    pair = [p for p, _ in ranked[:2]] if len(ranked) >= 2 else params[:2]
    if len(pair) == 2 and len(data.complete) >= 3:
        path, kind = top_two(data, pair, figures / "top_two.png")
        why = "the two most important parameters" if len(ranked) >= 2 else "the first two sampled parameters"
        if path is not None:
            blocks += [Heading(f"{pair[0]} and {pair[1]} together", 3),
                       Figure(path, f"Optuna's {kind} plot of {why}, {pair[0]} and {pair[1]}.", 0.6)]
        else:
            blocks.append(Text(kind))
    rows = []
    for f in an.search_factors(data):
        for lv in f.levels:
            rows.append([f.name, lv.label, str(sum(max(t.n_repeats, 1) for t in lv.trials)),
                         *(fmt_estimate(an.level_estimate(lv, m), 3) for m in (data.primary[0], "modes", "kl_uniform"))])
    if rows:
        cols = ["parameter", "value", "runs", data.primary[0], "modes", "kl_uniform"]
        if data.primary[0] in ("modes", "kl_uniform"):
            cols, rows = [c for i, c in enumerate(cols) if i != 3], [[c for i, c in enumerate(r) if i != 3] for r in rows]
        blocks += [Heading("Modes and class balance per value", 3),
                   Table(cols, rows, "Per value of each parameter (ranges in quantile bins): digits covered (of 10) and the KL of "
                                     "the class histogram to uniform, mean ± 95 % t-interval over runs; confounded with the other parameters.",
                         [False, False, True, *[True] * (len(cols) - 3)])]
    return blocks

