"""The report's "Claims" section: every claim of the spec with what this study measured and its
verdict (see :mod:`reports.verdicts`), then the count of each verdict."""

from __future__ import annotations

import math
from pathlib import Path

from . import figures as fg
from .analysis import Factor
from .data import StudyData
from .doc import Block, Heading, Link, Table, Text
from .stats import fmt
from .verdicts import VERDICTS, Verdict, judge_all

__all__ = ["claims_blocks"]


def claims_blocks(data: StudyData, factor_list: list[Factor], figures: Path) -> list[Block]:
    claims = data.spec.claims if data.spec is not None else ()
    if not claims:
        return []
    verdicts = judge_all(data, factor_list, claims)
    budget = _budget(data)
    blocks: list[Block] = [
        Heading("7. Claims"),
        Text(
            "Each observation of the earlier reports that the spec lists, re-tested on this study's runs "
            f"({budget}). Measured: the quantity's mean ± the half-width of its 95 % t-interval over runs (n), per level; "
            "then the difference with its 95 % Welch interval. Supported: the interval excludes no effect in the claimed "
            "direction (≈: it lies within ± the tolerance); contradicted: it excludes no effect in the other direction "
            "(≈: it lies wholly outside); inconclusive: neither, or fewer than 2 runs on a side; not run: this study has no "
            "complete run of a compared level. Verdicts hold for this budget and these seeds only."
        ),
    ]
    rows = [[v.claim.id, v.claim.source, v.claim.claim, v.claim.test_text(), _measured(v), v.verdict, _figure(v, factor_list, figures)]
            for v in verdicts]
    blocks.append(Table(["id", "source", "claim", "test", "measured", "verdict", "figure"], rows,
                        numeric=[False] * 7))
    counts = {k: sum(v.verdict == k for v in verdicts) for k in VERDICTS}
    blocks.append(Text(
        f"Of {len(verdicts)} claims, {counts['supported']} supported, {counts['contradicted']} contradicted, "
        f"{counts['inconclusive']} inconclusive and {counts['not run']} not run at this budget."
    ))
    return blocks


def _budget(data: StudyData) -> str:
    spec = data.spec_raw.get("budget") or {}
    unit, amount = next(iter(spec.items()), ("steps", "?"))
    return f"{fmt(amount) if isinstance(amount, (int, float)) else amount} {unit} per run, {data.repeats} run(s) per level"


def _measured(v: Verdict) -> str:
    parts = [f"{label}: {_est(e.mean, e.half)} (n={e.n})" for label, e in v.estimates.items()]
    parts += [f"{k} = {fmt(iv.diff)} [{fmt(iv.low)}, {fmt(iv.high)}]" for k, iv in v.intervals.items()]
    if v.note:
        parts.append(v.note)
    return "; ".join(parts)


def _est(mean: float, half: float) -> str:
    return fmt(mean) if math.isnan(half) else f"{fmt(mean)} ± {fmt(half, 2)}"


def _figure(v: Verdict, factor_list: list[Factor], figures: Path) -> Link | str:
    if not any(f.name == v.claim.factor for f in factor_list):
        return ""
    return Link(f"§3 {v.claim.factor}", figures / f"factor_{fg.slug(v.claim.factor)}.png")
