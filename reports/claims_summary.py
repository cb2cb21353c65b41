"""Several studies' claims side by side: ``python -m reports.claims_summary A/claims.csv B/claims.csv``.

A spec's factors may run as studies of their own (``gan-study run seeds --factors lr,optimizer``,
each at the budget where its runs have learned); each report then judges the claims on its
factors and reads "not run" for the rest. :func:`summary` takes each claim from the first of the
given ``claims.csv`` files that ran it and recomputes its verdicts from the rows alone
(:mod:`reports.claims_csv`), with Holm's adjustment across the summary's claims: one family for
the whole replication, not one per study.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

from .claims_csv import holm_verdicts, judge_rows, read_rows
from .inference import VerdictKind

__all__ = ["summary"]


def _budget_key(budget: str) -> float:
    return math.inf if budget == "end" else float(budget)


def _budget(rows: list[dict[str, str]], budget: str) -> str:
    unit = next(r["budget_unit"] for r in rows if r["budget"] == budget)
    return "the end" if budget == "end" else f"{float(budget):g} {unit}".strip()


def summary(paths: Sequence[str | Path]) -> list[dict[str, str]]:
    """Per claim (in the first file's order): ``claim``, ``kind``, ``report`` (the file that ran
    it, '' where none did), ``headline_budget``, ``headline`` (the verdict there), ``holm`` (Holm's
    across this summary's headline verdicts), ``last_budget`` and ``last`` (the verdict at the
    largest budget that file judged)."""
    chosen: dict[str, tuple[str, list[dict[str, str]]]] = {}
    for path in paths:
        by_claim: dict[str, list[dict[str, str]]] = {}
        for r in read_rows(path):
            by_claim.setdefault(r["claim"], []).append(r)
        for claim, rows in by_claim.items():
            ran = any(r["level"] for r in rows) or rows[0]["verdict"] != VerdictKind.NOT_RUN
            if claim not in chosen or (not chosen[claim][0] and ran):
                chosen[claim] = (str(path) if ran else "", rows)
    entries, family = [], {}
    for claim, (report, rows) in chosen.items():
        at = lambda b: [r for r in rows if r["budget"] == b]  # noqa: E731
        last = max({r["budget"] for r in rows}, key=_budget_key)
        head = next((r["budget"] for r in rows if r["headline"] == "1"), last)
        verdict, p_s, p_c = judge_rows(at(head))
        family[claim] = (verdict, p_s, p_c)
        entries.append({"claim": claim, "kind": rows[0]["kind"], "report": report,
                        "headline_budget": _budget(rows, head) if report else "", "headline": str(verdict), "holm": "",
                        "last_budget": _budget(rows, last) if report else "",
                        "last": str(judge_rows(at(last))[0]) if report else ""})
    adjusted = holm_verdicts(family)
    for e in entries:
        e["holm"] = str(adjusted.get(e["claim"], ""))
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(p) for p in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m reports.claims_summary CLAIMS_CSV [CLAIMS_CSV ...]", file=sys.stderr)
        return 2
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"reports.claims_summary: error: {missing[0]} is not a file; give the claims.csv beside a report.md", file=sys.stderr)
        return 2
    print("| claim | kind | verdict (headline budget) | Holm, across this table | at the largest budget | from |")
    print("|---|---|---|---|---|---|")
    for e in summary(paths):
        head = f"{e['headline']} ({e['headline_budget']})" if e["report"] else e["headline"]
        last = f"{e['last']} ({e['last_budget']})" if e["report"] else ""
        print(f"| {e['claim']} | {e['kind']} | {head} | {e['holm']} | {last} | {e['report']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
