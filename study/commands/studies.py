"""Study-level views: the studies in a store (``gan-study studies``) and one study's trials as
a JSON document or CSV (``gan-study status --json|--csv``)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import optuna

from ..storage.record import StudyAttrs
from .status import study_names
from ..storage.tracking import Stores

__all__ = ["STATES", "status_csv", "status_document", "studies_rows", "studies_table"]

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def metric_names(study: optuna.Study) -> list[str]:
    """The objectives' metric names ('fd', ...), as ``run`` recorded them."""
    names = study.metric_names or study.user_attrs.get(StudyAttrs.OBJECTIVES)
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def status_document(study: optuna.Study, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``status --json``: the study's name, directions and metric names around its trial rows."""
    return {"study": study.study_name, "directions": [d.name.lower() for d in study.directions],
            "metric_names": metric_names(study), "trials": rows}


def status_csv(study: optuna.Study, rows: list[dict[str, Any]]) -> str:
    """``status --csv``: one line per trial; values, params and metrics in columns of their own."""
    names = metric_names(study)
    flat = []
    for r in rows:
        line: dict[str, Any] = {"number": r["number"], "state": r["state"]}
        for name, value in zip(names, r["values"] or [None] * len(names)):
            line[f"value_{name}"] = value
        line.update({f"param_{k}": v for k, v in r["params"].items()})
        line.update({f"metric_{k}": v for k, v in r["metrics"].items() if not isinstance(v, (list, dict))})
        line.update({k: r[k] for k in ("duration_s", "mlflow_run_id", "mlflow_status", "evaluator_hash", "reason")})
        flat.append(line)
    columns: list[str] = []
    for line in flat:
        columns += [k for k in line if k not in columns]
    groups = ("number", "state", "value_", "param_", "metric_")  # each group together, the rest last
    columns.sort(key=lambda c: next((i for i, g in enumerate(groups) if c.startswith(g)), len(groups)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ["number", "state"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def studies_rows(stores: Stores) -> list[dict[str, Any]]:
    """One object per study in the Optuna storage: trial counts by state and the best value."""
    if stores.embedded and not Path(stores.storage_url).exists():
        return []
    storage, names = study_names(stores)
    rows = []
    for name in sorted(names):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        counts = {state: sum(t.state.name == state for t in trials) for state in STATES}
        best = None
        if len(study.directions) == 1 and counts["COMPLETE"]:
            b = study.best_trial
            best = {"number": b.number, "value": b.value}
        rows.append({"study": name, "directions": [d.name.lower() for d in study.directions],
                     "metric_names": metric_names(study), "trials": len(trials), "states": counts, "best": best,
                     "pareto_size": len(study.best_trials) if len(study.directions) > 1 and counts["COMPLETE"] else None})
    return rows


def studies_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no studies yet: run one with 'gan-study run')"
    table = [["study", "objective", "trials", *[s.lower() for s in STATES], "best"]]
    for r in rows:
        objective = ", ".join(f"{n} ({'min' if d == 'minimize' else 'max'})" for n, d in zip(r["metric_names"], r["directions"]))
        if r["best"]:
            value = r["best"]["value"]
            best = f"{value:.4g} (trial {r['best']['number']})" if math.isfinite(value) else str(value)
        elif r["pareto_size"]:
            best = f"{r['pareto_size']} Pareto trials"
        else:
            best = "-"
        table.append([r["study"], objective, str(r["trials"]), *[str(r["states"][s]) for s in STATES], best])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)
