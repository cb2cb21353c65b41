"""The report's "Claims" section: every claim of the spec with what this study measured, its
headline verdict beside the Holm-adjusted one, a verdict-by-budget table and figure, and the
count of each verdict (observed claims alone in the headline); claims.csv beside report.md holds
every run's value at every budget (see :mod:`reports.verdicts`, :mod:`reports.claims_csv`)."""

from __future__ import annotations

import math
from pathlib import Path

from . import figures as fg
from .analysis import Factor
from .claims_csv import write_claims_csv
from .data import StudyData
from .doc import Block, Figure, Heading, Link, Table, Text
from .figures_claims import budget_columns, verdict_grid
from .inference import WHY, clopper_pearson
from .stats import fmt
from .verdicts import VERDICTS, Judgement, Verdict, VerdictKind, judge_all

__all__ = ["ABBREVIATIONS", "claims_blocks", "counts_text"]

ABBREVIATIONS = {VerdictKind.SUPPORTED: "S", VerdictKind.CONTRADICTED: "C", VerdictKind.INCONCLUSIVE: "I",
                 VerdictKind.NOT_REACHED: "NR", VerdictKind.UNMEASURABLE: "U", VerdictKind.NOT_RUN: "–"}
KIND_WORDS = {"observed": "observed", "cited": "cited advice", "intent": "stated intent", "extrapolation": "our extrapolation"}
MAX_BUDGET_COLUMNS = 9


def claims_blocks(data: StudyData, factor_list: list[Factor], figures: Path) -> list[Block]:
    claims = data.spec.claims if data.spec is not None else ()
    if not claims:
        return []
    judgements = judge_all(data, factor_list, claims)
    csv_path = write_claims_csv(judgements, figures.parent / "claims.csv")
    blocks: list[Block] = [Heading("7. Claims"), Text(_intro(data)), Text(_tests_text())]
    rows = [_row(j, factor_list, figures) for j in judgements]
    blocks.append(Table(["id", "kind", "source", "claim", "test", "budget", "measured", "test used", "verdict", "Holm", "figure"],
                        rows, numeric=[False] * 11))
    blocks.append(Text(counts_text(judgements)))
    blocks += _by_budget(judgements, figures)
    blocks.append(Text(f"Every run's value at every budget, with the preconditions' readings and each verdict: "
                       f"{csv_path.name} beside this report (one row per claim × level × run × budget); the verdicts can be "
                       "recomputed from it alone (reports.claims_csv.recompute)."))
    return blocks


def _intro(data: StudyData) -> str:
    return (
        "Each observation of the earlier reports that the spec lists, re-tested on this study's runs "
        f"({_budget(data)}) at every budget the runs were evaluated at. The headline verdict is at the source's own budget "
        "where the runs reached it, else at the largest budget run (the budget column says which). Supported: the 95 % "
        "interval (or exact test) excludes every effect against the claim (≈: it lies within ± the tolerance); contradicted: "
        "it excludes every effect in the claimed direction (≈: it lies wholly outside); inconclusive: neither (the MDD says how "
        "large a difference these runs could have detected with 80 % power); not reached: a precondition of the claim "
        "(runs that have learned, a budget) is unmet at that budget, with the measured values; unmeasurable: the statistic "
        "rests on fewer points than it needs at that budget; not run: no complete run of a compared level. Holm: the verdict "
        "after Holm's adjustment across all the claims' headline tests. Kinds: observed (the source measured it), cited "
        "(advice the source quotes), intent (a change the source made, no outcome reported), extrapolation (ours); only "
        "observed claims count in the headline. Verdicts hold for these budgets and seeds only."
    )


def _tests_text() -> str:
    return "Tests: " + "; ".join(f"{name} — {why}" for name, why in WHY.items()) + (
        ". Effect: the difference in sds of the reference level (the second; the level itself against a number). "
        "MDD: the smallest difference the same test at this run count detects with 80 % power at 5 % two-sided, "
        "given the runs' spread (∞: no outcome of so few runs can reach a verdict).")


def _budget(data: StudyData) -> str:
    spec = data.spec_raw.get("budget") or {}
    unit, amount = next(iter(spec.items()), ("steps", "?"))
    return f"{fmt(amount) if isinstance(amount, (int, float)) else amount} {unit} per run, {data.repeats} run(s) per level"


def _row(j: Judgement, factor_list: list[Factor], figures: Path) -> list:
    c, v = j.claim, j.headline
    claim = c.claim + (f" — {c.note}" if c.note else "")
    test = c.test_text() + (f"; requires {c.requires.text()}" if c.requires is not None else "")
    budget = f"{v.budget.label}: {j.where}" if v.budget is not None else ""
    used = ", ".join(dict.fromkeys(iv.test for iv in v.intervals.values()))
    holm = str(v.holm) if v.holm is not None else ""
    return [c.id, c.kind, c.source, claim, test, budget, measured(v), used, str(v.verdict), holm, _figure(c.factor, factor_list, figures)]


def measured(v: Verdict) -> str:
    """Per level its mean ± 95 % half-width (n) or its count of 1s with the exact interval; per
    comparison the difference, its interval, p, effect size and MDD; then the note."""
    parts = []
    for label, e in v.estimates.items():
        if e.n == 0:
            continue
        if v.claim.binary:
            k = round(e.mean * e.n)
            lo, hi = clopper_pearson(k, e.n)
            parts.append(f"{label}: {k}/{e.n} [{fmt(lo, 2)}, {fmt(hi, 2)}]")
        else:
            parts.append(f"{label}: {fmt(e.mean) if math.isnan(e.half) else f'{fmt(e.mean)} ± {fmt(e.half, 2)}'} (n={e.n})")
    for key, c in v.intervals.items():
        interval = f" [{fmt(c.low)}, {fmt(c.high)}]" if math.isfinite(c.low) else ""
        extra = [f"p = {fmt(c.p, 2)}"]
        if math.isfinite(c.effect):
            extra.append(f"effect {fmt(c.effect, 2)} sd")
        mdd = c.mdd
        if not math.isnan(mdd):
            extra.append("MDD ∞" if math.isinf(mdd) else f"MDD {fmt(mdd, 2)}")
        parts.append(f"{key} = {fmt(c.diff)}{interval} ({', '.join(extra)})")
    if v.note:
        parts.append(v.note)
    return "; ".join(parts)


def counts_text(judgements: list[Judgement]) -> str:
    """The count of each headline verdict: observed claims first, then each other kind."""
    def count(js: list[Judgement], holm: bool = False) -> str:
        got = {k: sum(str(j.headline.holm if holm and j.headline.holm is not None else j.headline.verdict) == k for j in js) for k in VERDICTS}
        return ", ".join(f"{n} {k}" for k, n in got.items() if n) or "none"

    observed = [j for j in judgements if j.claim.kind == "observed"]
    out = [f"Headline: of {len(observed)} observed claims, {count(observed)}; after Holm's adjustment, {count(observed, True)}."]
    for kind in ("cited", "intent", "extrapolation"):
        js = [j for j in judgements if j.claim.kind == kind]
        if js:
            out.append(f"Not in the headline, {KIND_WORDS[kind]} ({len(js)}): {count(js)}.")
    return " ".join(out)


def _by_budget(judgements: list[Judgement], figures: Path) -> list[Block]:
    columns = budget_columns(judgements)
    if not columns:
        return []
    shown = _pick(columns)
    rows = []
    for j in judgements:
        at = {(v.budget.unit, v.budget.key): v for v in j.by_budget if v.budget is not None}
        cells = [ABBREVIATIONS[str(at[k].verdict)] + ("*" if at[k] is j.headline else "") if k in at else "" for k in shown]
        rows.append([j.claim.id, *cells])
    heads = [("end" if k is None else f"{k:g}") + ("" if u == "epochs" else " st") for u, k in shown]
    unit = "epochs" if all(u == "epochs" for u, _ in shown) else "epochs, or steps (st)"
    blocks: list[Block] = [Heading("Verdicts by budget", 3), Table(
        ["id", *heads], rows,
        f"Each claim's verdict at each budget (columns: {unit}; {len(shown)} of the {len(columns)} budgets judged). "
        "S supported, C contradicted, I inconclusive, NR not reached, U unmeasurable, – not run; * the headline; "
        "blank: no evaluation of the compared runs at that budget.", [False] + [False] * len(shown))]
    path = verdict_grid(judgements, figures / "claims_by_budget.png")
    if path is not None:
        blocks.append(Figure(path, "Every claim (rows) at every budget judged (columns), coloured by its verdict.",
                             1.0 if len(columns) > 12 else 0.8))
    return blocks


def _pick(columns: list[tuple[str, float | None]]) -> list[tuple[str, float | None]]:
    """At most MAX_BUDGET_COLUMNS budgets: the first, those nearest 1-2-5 steps, the last."""
    if len(columns) <= MAX_BUDGET_COLUMNS:
        return columns
    keys = [k for k in columns if k[1] is not None]
    marks = [m * 10**e for e in range(-2, 6) for m in (1, 2, 5)]
    chosen = {columns[0], columns[-1]}
    for m in marks:
        near = min(keys, key=lambda k: abs(math.log(k[1] / m)) if k[1] > 0 else math.inf)
        if _near_mark(near, m):
            chosen.add(near)
    ordered = [k for k in columns if k in chosen]
    while len(ordered) > MAX_BUDGET_COLUMNS:  # thin the middle, keep the ends
        ordered.pop(len(ordered) // 2)
    return ordered


def _near_mark(key: tuple[str, float | None], mark: float) -> bool:
    return key[1] is not None and key[1] > 0 and abs(math.log(key[1] / mark)) < 0.2


def _figure(factor: str, factor_list: list[Factor], figures: Path) -> Link | str:
    if not any(f.name == factor for f in factor_list):
        return ""
    return Link(f"§3 {factor}", figures / f"factor_{fg.slug(factor)}.png")
