"""``claims.csv`` beside report.md: one row per claim × level × run × budget with the measured
value, the precondition's readings and the verdict, so that every verdict can be recomputed from
the file alone (:func:`recompute` does, with nothing but the rows and :mod:`reports.inference`).

Columns: the claim (``claim``, ``kind``, ``factor``, ``quantity``, ``relation``, ``claim_value``,
``tolerance``, ``compare`` — the compared levels, first is A, ``|``-separated —, ``min_points``,
``req_modes``, ``req_kl_uniform``, ``req_levels``, ``req_after``, ``req_after_unit``), the budget
(``budget``: epochs, or steps where ``budget_unit`` says so, ``end`` where unknown;
``headline``: 1 at the claim's headline budget), the run (``level``, ``role``: compared or
precondition, ``trial``, ``repeat``, ``seed``, ``step``), what was read (``measured``, blank
where not logged; ``points`` the statistic rests on; ``censored``; ``modes``, ``kl_uniform``) and
the report's ``verdict`` at that budget and, on headline rows, its ``holm`` verdict.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .inference import ALPHA, VerdictKind, compare, compare_binary, decide, holm
from .verdicts import TESTED, Judgement, Verdict

__all__ = ["COLUMNS", "holm_verdicts", "judge_rows", "read_rows", "recompute", "rows_of", "write_claims_csv"]

COLUMNS = ["claim", "kind", "factor", "quantity", "relation", "claim_value", "tolerance", "compare", "min_points",
           "req_modes", "req_kl_uniform", "req_levels", "req_after", "req_after_unit", "budget", "budget_unit", "headline",
           "level", "role", "trial", "repeat", "seed", "step", "measured", "points", "censored", "modes", "kl_uniform",
           "verdict", "holm"]


def _num(x: float | int | None) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return ""
    return repr(float(x)) if isinstance(x, float) else str(x)


def rows_of(judgements: Sequence[Judgement]) -> list[dict[str, str]]:
    rows = []
    for j in judgements:
        c, req = j.claim, j.claim.requires
        stat = c.quantity.statistic
        verdicts = j.by_budget or [j.headline]
        compared = [k for k in (verdicts[0].estimates or {})] or list(c.compare)
        base = {"claim": c.id, "kind": c.kind, "factor": c.factor, "quantity": str(c.quantity), "relation": c.relation,
                "claim_value": _num(c.value), "tolerance": _num(c.tolerance), "compare": "|".join(compared),
                "min_points": str(stat.min_points) if stat else "",
                "req_modes": _num(req.modes) if req else "", "req_kl_uniform": _num(req.kl_uniform) if req else "",
                "req_levels": "|".join((req.levels or tuple(compared)) if req.learned else ()) if req else "",
                "req_after": _num(req.after) if req else "", "req_after_unit": req.after_unit if req and req.after else ""}
        for v in verdicts:
            b = v.budget
            where = {"budget": "end" if b is None or b.key is None else _num(b.key), "budget_unit": b.unit if b else "",
                     "headline": "1" if v is j.headline else "0", "verdict": str(v.verdict),
                     "holm": str(v.holm) if v is j.headline and v.holm is not None else ""}
            if not v.values:
                rows.append({**base, **where})
            for x in v.values:
                rows.append({**base, **where, "level": x.level, "role": "compared" if x.compared else "precondition",
                             "trial": str(x.run.trial), "repeat": str(x.run.repeat), "seed": str(x.run.seed),
                             "step": _num(x.step), "measured": _num(x.value) if x.compared else "",
                             "points": str(x.points) if x.compared else "", "censored": "1" if x.censored else "0",
                             "modes": _num(x.modes), "kl_uniform": _num(x.kl_uniform)})
    return rows


def write_claims_csv(judgements: Sequence[Judgement], path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows_of(judgements))
    tmp.replace(path)
    return path


# -- the reviewer's side: verdicts from the rows alone ------------------------------------------
def _f(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def read_rows(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def recompute(path_or_rows: Path | list[dict[str, str]]) -> dict[tuple[str, str], tuple[str, str]]:
    """(claim, budget) -> (verdict, Holm verdict on headline rows else '') from claims.csv."""
    rows = read_rows(path_or_rows) if isinstance(path_or_rows, (str, Path)) else path_or_rows
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["claim"], r["budget"]), []).append(r)
    out: dict[tuple[str, str], tuple[str, str]] = {}
    headline: dict[tuple[str, str], tuple[VerdictKind, float, float]] = {}
    for key, rs in groups.items():
        verdict, p_s, p_c = judge_rows(rs)
        out[key] = (verdict, "")
        if rs[0]["headline"] == "1":
            headline[key] = (verdict, p_s, p_c)
    for key, adjusted in holm_verdicts(headline).items():
        out[key] = (out[key][0], adjusted)
    return out


def holm_verdicts(family: dict[Any, tuple[VerdictKind, float, float]]) -> dict[Any, VerdictKind]:
    """Holm-adjusted verdicts of a family of (verdict, p of support, p of contradiction); only
    tested verdicts with p-values take part. A raw verdict stands where its adjusted p < ALPHA."""
    tested = {k: v for k, v in family.items() if v[0] in TESTED and math.isfinite(min(v[1], v[2]))}
    out = {}
    for (key, (verdict, p_s, p_c)), adj in zip(tested.items(), holm([min(p_s, p_c) for _, p_s, p_c in tested.values()])):
        side = VerdictKind.SUPPORTED if p_s <= p_c else VerdictKind.CONTRADICTED
        out[key] = side if adj < ALPHA and verdict == side else VerdictKind.INCONCLUSIVE
    return out


def judge_rows(rs: list[dict[str, str]]) -> tuple[VerdictKind, float, float]:
    """One claim's verdict at one budget from its rows, with the p-values of support and of
    contradiction (NaN where no test ran)."""
    first = rs[0]
    if not any(r["level"] for r in rs):  # no runs to read: not run, or no shared budget
        return VerdictKind(first["verdict"]), math.nan, math.nan
    compared = first["compare"].split("|")
    runs = {lv: [r for r in rs if r["level"] == lv and r["role"] == "compared"] for lv in compared}
    need = int(first["min_points"]) if first["min_points"] else 1
    for lv, xs in runs.items():
        if not xs or min(int(x["points"]) for x in xs) < need or min(int(x["points"]) for x in xs) == 0:
            return VerdictKind.UNMEASURABLE, math.nan, math.nan
    if first["req_after"]:
        unit = first["req_after_unit"]
        at = _f(first["budget"]) if first["budget_unit"] == unit else max(_f(r["step"]) for r in rs) if unit == "steps" else math.inf
        if at < _f(first["req_after"]):
            return VerdictKind.NOT_REACHED, math.nan, math.nan
    for lv in filter(None, first["req_levels"].split("|")):
        xs = [r for r in rs if r["level"] == lv]
        modes, kls = [_f(x["modes"]) for x in xs], [_f(x["kl_uniform"]) for x in xs]
        if not xs or (first["req_modes"] and not all(m >= _f(first["req_modes"]) for m in modes)) or \
                (first["req_kl_uniform"] and not all(k <= _f(first["req_kl_uniform"]) for k in kls)):
            return VerdictKind.NOT_REACHED, math.nan, math.nan
    vals = {lv: [(_f(x["measured"]), int(x["seed"])) for x in xs if x["measured"] != ""] for lv, xs in runs.items()}
    binary = first["quantity"].endswith(".explodes")
    relation, tol = first["relation"], _f(first["tolerance"]) if first["tolerance"] else None

    def one(b: str | None, rel: str):
        a = [v for v, _ in vals[compared[0]]]
        if b is None:
            other = _f(first["claim_value"])
            return compare_binary(a, other, rel, tol) if binary else compare(a, other, rel, tol)
        bv = [v for v, _ in vals[b]]
        if binary:
            return compare_binary(a, bv, rel, tol)
        return compare(a, bv, rel, tol, [s for _, s in vals[compared[0]]], [s for _, s in vals[b]])

    if relation in ("lowest", "highest"):
        comps = [one(b, "<" if relation == "lowest" else ">") for b in compared[1:]]
        done = [c for c in comps if c is not None]
        p_s = max((c.p_support for c in done), default=1.0) if len(done) == len(comps) else 1.0
        p_c = min(1.0, len(comps) * min((c.p_contra for c in done), default=1.0))
        raw = [decide(c.p_support, c.p_contra) for c in done]
        return (VerdictKind.CONTRADICTED if VerdictKind.CONTRADICTED in raw
                else VerdictKind.SUPPORTED if p_s < ALPHA else VerdictKind.INCONCLUSIVE), p_s, p_c
    c = one(None if len(compared) == 1 else compared[1], relation)
    p_s, p_c = (c.p_support, c.p_contra) if c is not None else (1.0, 1.0)
    return decide(p_s, p_c), p_s, p_c
