"""The claims' verdict-by-budget figure: claims as rows, budgets as columns, cells coloured by
the verdict at that budget."""

from __future__ import annotations

from pathlib import Path

from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from .figures import _save, plt, themed
from .verdicts import VERDICTS, Judgement, VerdictKind

__all__ = ["COLORS", "budget_columns", "verdict_grid"]

COLORS = {
    VerdictKind.SUPPORTED: "#4c9a5b",
    VerdictKind.CONTRADICTED: "#c44e52",
    VerdictKind.INCONCLUSIVE: "#e3c567",
    VerdictKind.NOT_REACHED: "#8da0cb",
    VerdictKind.UNMEASURABLE: "#b3b3b3",
    VerdictKind.NOT_RUN: "#ffffff",
}


def budget_columns(judgements: list[Judgement]) -> list[tuple[str, float | None]]:
    """Every (unit, budget) any claim was judged at, ascending within a unit (epochs first)."""
    keys = {(v.budget.unit, v.budget.key) for j in judgements for v in j.by_budget if v.budget is not None}
    return sorted(keys, key=lambda k: (k[0] != "epochs", k[1] is None, k[1] or 0.0))


@themed
def verdict_grid(judgements: list[Judgement], path: Path) -> Path | None:
    """Draw the grid; None when no claim was judged at any budget."""
    columns = budget_columns(judgements)
    if not columns:
        return None
    index = {k: i for i, k in enumerate(VERDICTS)}
    grid = [[index[VerdictKind.NOT_RUN]] * len(columns) for _ in judgements]
    col = {k: i for i, k in enumerate(columns)}
    for r, j in enumerate(judgements):
        for v in j.by_budget:
            if v.budget is not None:
                grid[r][col[(v.budget.unit, v.budget.key)]] = index[str(v.verdict)]
    cmap = ListedColormap([COLORS[k] for k in VERDICTS])
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.35 * len(columns)), 1.2 + 0.24 * len(judgements)))
    ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(VERDICTS) - 0.5, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(judgements)), [j.claim.id for j in judgements], fontsize=7)
    step = max(1, len(columns) // 20)
    ticks = list(range(0, len(columns), step))
    unit = {u for u, _ in columns}
    ax.set_xticks(ticks, [("end" if columns[i][1] is None else f"{columns[i][1]:g}") for i in ticks], fontsize=7, rotation=90)
    ax.set_xlabel("budget (" + (" / ".join(sorted(unit))) + ") at which the claim is judged")
    ax.set_xticks([x - 0.5 for x in range(len(columns) + 1)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(len(judgements) + 1)], minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6)
    ax.grid(which="major", visible=False)
    ax.tick_params(which="minor", length=0)
    handles = [Patch(facecolor=COLORS[k], edgecolor="0.6", label=k if k != VerdictKind.NOT_RUN else "not run / not evaluated") for k in VERDICTS]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return _save(fig, path)
