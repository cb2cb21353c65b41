"""``gan-study status``: a study's trials as rows (for ``--json``) and as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from gan import metrics as gm

from ..storage.record import TrialRecord
from ..storage.errors import StoreError, mask_url
from ..storage.tracking import Stores

__all__ = ["open_existing_study", "status_table", "study_names", "trial_rows"]


def study_names(stores: Stores) -> tuple[Any, list[str]]:
    """The Optuna storage (read-only use) and the names of its studies; one line if unreadable."""
    stores.check_storage()
    stores.check_files(writing=False)  # a truncated mlflow.db: one line here, not 'MISSING' runs later
    storage = stores.optuna_storage(heartbeat=False, create=False)
    try:
        return storage, optuna.get_all_study_names(storage)
    except Exception as exc:
        raise StoreError(f"cannot read the Optuna storage {mask_url(stores.storage_url)}: {str(exc).splitlines()[0]}") from exc


def open_existing_study(stores: Stores, name: str) -> optuna.Study:
    """The named study; a one-line error listing the studies that exist otherwise."""
    if stores.embedded and not Path(stores.storage_url).exists():
        raise StoreError(f"no study {name!r}: there are no studies in {stores.workdir} (run one with 'gan-study run')")
    storage, names = study_names(stores)
    if name not in names:
        existing = ", ".join(sorted(names)) or "none"
        raise StoreError(f"no study {name!r} in {mask_url(stores.storage_url)}; studies: {existing}")
    return optuna.load_study(study_name=name, storage=storage)


def trial_rows(study: optuna.Study, stores: Stores) -> list[dict[str, Any]]:
    """One object per trial: what status prints and scripts read."""
    client = stores.mlflow()
    rows = []
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.from_trial(t)
        run_status = None
        if rec.mlflow_run_id:
            try:
                run_status = client.get_run(rec.mlflow_run_id).info.status
            except Exception:
                run_status = "MISSING"
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "values": t.values,
                "metrics": rec.metrics,
                "reason": rec.reason or ("worker died (no heartbeat)" if t.state.name == "FAIL" else None),
                "duration_s": duration,
                "mlflow_run_id": rec.mlflow_run_id,
                "mlflow_status": run_status,
                "evaluator_hash": (rec.evaluator or {}).get("weights_hash"),
            }
        )
    return rows


def status_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table: the registry's shown evaluator metrics as columns."""
    import pandas as pd

    if not rows:
        return "(no trials yet)"
    shown = [m.name for m in gm.metrics_of("score", shown=True) if m.direction]
    table = []
    for r in rows:
        m = r["metrics"]
        table.append(
            {
                "#": r["number"],
                "state": r["state"],
                "value": ", ".join(f"{v:.4g}" for v in r["values"]) if r["values"] else "",
                **{k: (f"{m[k]:.4g}" if k in m else "") for k in shown},
                "secs": f"{r['duration_s']:.0f}" if r["duration_s"] is not None else "",
                "mlflow run": f"{(r['mlflow_run_id'] or '')[:8]} {r['mlflow_status'] or ''}".strip(),
                "params": ", ".join(f"{k}={_short(v)}" for k, v in r["params"].items()),
                "reason": (r["reason"] or "")[:60],
            }
        )
    with pd.option_context("display.max_colwidth", 80, "display.width", 250):
        return pd.DataFrame(table).to_string(index=False)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
