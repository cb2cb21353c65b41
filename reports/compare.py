"""``gan-study report A B ...``: several studies' best trials side by side, with real-data floors.

A markdown table (and the same table as a PDF through :mod:`reports.doc`): one row per study's
best complete trial (the Pareto trial best on the first objective for several objectives),
the shown evaluator metrics as columns, and a floor row per final sample count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna

from gan import metrics as gm
from study.storage.record import StudyAttrs, TrialRecord
from study.storage.registry import best_trial

from .data import ReportError, load_floors
from .doc import Heading, Table, Text, to_markdown, to_pdf

__all__ = ["write_comparison"]

FORMATS = ("md", "pdf")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and math.isfinite(value) else "—"


def build(studies: list[optuna.Study], data_dir: str | None) -> list:
    shown = [m.name for m in gm.metrics_of("score", shown=True)]
    columns = ["study", "trial", "objective", *shown, "train s", "params"]
    rows, emphasis = [], []
    sample_counts = set()
    for study in studies:
        spec = study.user_attrs.get(StudyAttrs.SPEC) or {}
        sample_counts.add(int((spec.get("evaluation") or {}).get("final_samples", 10_000)))
        best = best_trial(study)
        names = study.metric_names or study.user_attrs.get(StudyAttrs.OBJECTIVES) or []
        if best is None:
            rows.append([study.study_name, "—", "no complete trial", *["—"] * len(shown), "—", ""])
            continue
        metrics = TrialRecord.from_trial(best).metrics
        objective = ", ".join(f"{n}={_fmt(v)}" for n, v in zip(names, best.values))
        params = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in best.params.items())
        rows.append([study.study_name, str(best.number), objective, *[_fmt(metrics.get(m)) for m in shown],
                     _fmt(metrics.get("train_seconds")), params])
    notes = []
    for n in sorted(sample_counts):
        floors, note = load_floors(SimpleNamespace(final_samples=n), data_dir)
        if floors:
            emphasis.append(len(rows))
            rows.append(["floor", "real data", f"n={n:,}", *[_fmt(floors.get(m)) for m in shown], "—", "real-vs-real"])
        notes.append(note)
    blocks = [
        Heading("gan-study comparison: " + ", ".join(s.study_name for s in studies), 1),
        Text("The best complete trial of each study (for several objectives: the Pareto trial best on the first), "
             "scored by the same evaluator. Floor rows: MNIST training images scored like generated samples, "
             "at each study's final sample count."),
        Table(columns, rows, caption="Best trials side by side" + ("; " + "; ".join(notes) if notes else ""),
              numeric=[False, True, False, *[True] * len(shown), True, False], emphasis_rows=emphasis),
    ]
    return blocks


def write_comparison(studies: list[optuna.Study], stores, out: Path, formats: list[str] | tuple[str, ...] = FORMATS) -> list[Path]:
    """Write ``compare.md`` and/or ``compare.pdf`` into ``out``; returns the written files."""
    formats = [f.lower() for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ReportError(f"--format takes a comma-separated list of {', '.join(FORMATS)}; got {','.join(formats) or 'nothing'}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot write the comparison to {out} ({exc.strerror or exc}): choose another --out") from exc
    blocks = build(studies, os.environ.get("GAN_STUDY_DATA"))
    written = []
    if "md" in formats:
        path = out / "compare.md"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(to_markdown(blocks, out))
        tmp.replace(path)
        written.append(path)
    if "pdf" in formats:
        path = out / "compare.pdf"
        tmp = path.with_suffix(".pdf.tmp")
        to_pdf(blocks, tmp, "gan-study comparison")
        tmp.replace(path)
        written.append(path)
    return written
