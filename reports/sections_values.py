"""Every value of a factor, not only the best trial: the blocks that follow each factor's row of
curves in section 3 (samples, class histograms, D accuracy, FD per evaluation, progress)."""

from __future__ import annotations

from pathlib import Path

from . import figures_values as fv
from .analysis import Factor
from .data import StudyData
from .doc import Block, Figure, Table, Text
from .figures import slug

__all__ = ["MAX_PICTURE_LEVELS", "value_blocks"]

MAX_PICTURE_LEVELS = 8  # more values than this (a binned range) are summarised by the table only


def value_blocks(data: StudyData, factor: Factor, figures: Path) -> list[Block]:
    """The per-value figures and the class-share table of one factor."""
    name = slug(factor.name)
    blocks: list[Block] = []
    first = " (first repeat)" if data.repeats > 1 else ""
    path = fv.eval_curves(data, factor, figures / f"factor_{name}_evals.png")
    if path is not None:
        blocks.append(Figure(path, f"{factor.name}: D accuracy on real and on generated images over training (line: mean over runs, "
                                   "band: ±1 sd), and the Fréchet distance at each evaluation, step 0 (untrained) included "
                                   "(evaluation samples; the last point: the final samples; dashed: the real-data floor)."))
    pictures = factor.kind != "binned" and len(factor.levels) <= MAX_PICTURE_LEVELS
    if pictures:
        path, missing = fv.sample_strips(data, factor, figures / f"values_{name}_samples.png")
        if path is not None:
            blocks.append(Figure(path, f"{factor.name}: 20 final samples per value{first} with the evaluator's predicted digit under "
                                       "each; the same latent vectors in every row, so columns compare."))
        if missing:
            blocks.append(Text(f"No stored pictures (final/pictures.npz) for: {', '.join(missing)}."))
        path = fv.progress_strips(data, factor, figures / f"values_{name}_progress.png")
        if path is not None:
            blocks.append(Figure(path, f"{factor.name}: samples across training{first}: 10 fixed-noise samples at step 0, 25 %, 50 % "
                                       "and 100 % of the budget.", 0.9))
    path = fv.class_histograms(data, factor, figures / f"values_{name}_classes.png")
    if path is not None:
        n = f"{data.spec.final_samples:,} " if data.spec else ""
        blocks.append(Figure(path, f"{factor.name}: share of each predicted digit among the {n}final samples of every run of a value "
                                   "(repeats pooled); dashed: uniform; black ticks: real MNIST digits.", 0.95 if len(factor.levels) > 2 else 0.7))
    columns, rows = fv.shares_table(factor)
    if rows:
        blocks.append(Table(columns, rows, f"{factor.name}: share (%) of each predicted digit (repeats pooled), the KL of the class "
                                           "histogram to uniform (nats) and the digits covered, mean ± 95 % t-interval over runs.",
                            [False, *[True] * 12]))
    return blocks
