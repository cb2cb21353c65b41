"""Reading a study's MLflow runs for a report: its experiment and runs, the invocations, which
runs hold each trial's curves, the curves themselves (in bulk where the store allows) and the
best trial's final artifacts."""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from gan.plots import compact_png
from study.storage.compat import metric_history_bulk
from study.storage.record import Tag

if TYPE_CHECKING:
    from .data import TrialInfo

__all__ = ["BEST_ARTIFACTS", "attach_runs", "copy_best_artifacts", "describe_invocation", "fetch_curves", "find_experiment", "search_runs"]

log = logging.getLogger("gan_study.reports")


def find_experiment(stores, name: str):
    """(client, experiment id, why not) of the study's MLflow experiment, never creating a store."""
    uri = str(stores.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():  # don't create an empty store
        return None, None, f"no MLflow store at {uri}: curves, artifacts and the device are not shown"
    try:
        client = stores.mlflow()
        experiment = client.get_experiment_by_name(name)
    except Exception as exc:
        return None, None, f"the MLflow store could not be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if experiment is None:
        return client, None, f"no MLflow experiment named {name!r}: curves, artifacts and the device are not shown"
    return client, experiment.experiment_id, ""


def search_runs(client, experiment_id: str) -> list:
    """Every run of the experiment, page by page."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=5000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def describe_invocation(run) -> dict[str, Any]:
    """What a report shows of one invocation's run."""
    return {
        "run_id": run.info.run_id,
        "params": dict(run.data.params),
        "status": run.info.status,
        "start": run.info.start_time,
        "end": run.info.end_time,
        "host": run.data.tags.get(Tag.HOST),
        "commit": run.data.tags.get(Tag.GIT_COMMIT),
    }


def attach_runs(trials: list[TrialInfo], runs: list) -> None:
    """Fill curve runs from MLflow tags where the trial's user attributes lack them."""
    by_trial: dict[int, list[tuple[str, int]]] = {}
    for r in runs:
        tags = r.data.tags
        if tags.get(Tag.CURVES) != "true" or Tag.TRIAL_NUMBER not in tags:
            continue
        try:
            number = int(tags[Tag.TRIAL_NUMBER])
        except ValueError:
            continue
        by_trial.setdefault(number, []).append((r.info.run_id, int(tags.get(Tag.REPEAT, 0))))
    for t in trials:
        if not t.curve_runs and t.number in by_trial:
            t.curve_runs = sorted(by_trial[t.number], key=lambda x: x[1])


def fetch_curves(client, runs: list[tuple[int, str, int]], keys: tuple[str, ...]) -> pd.DataFrame:
    """Metric histories of many runs: one query per key on SQL stores, else one call per run."""
    columns = ["trial", "repeat", "key", "step", "value"]
    if not runs:
        return pd.DataFrame(columns=columns)
    meta = {rid: (trial, rep) for trial, rid, rep in runs}
    rows: list[tuple] = []
    ids = list(meta)
    bulk = {key: metric_history_bulk(client, ids, key) for key in keys}
    if all(v is not None for v in bulk.values()):
        for key, found in bulk.items():
            rows += [(*meta[rid], key, step, value) for rid, step, value in found]
        return pd.DataFrame(rows, columns=columns)

    def one(job: tuple[str, str]) -> list[tuple]:
        rid, key = job
        trial, rep = meta[rid]
        return [(trial, rep, key, m.step, m.value) for m in client.get_metric_history(rid, key)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        for part in pool.map(one, [(rid, key) for rid in ids for key in keys]):
            rows.extend(part)
    return pd.DataFrame(rows, columns=columns)


BEST_ARTIFACTS = {
    "grid": "samples/final.png",
    "samples_20": "final/samples_20.png",
    "histogram": "final/class_histogram.png",
    "interpolation": "final/interpolation.png",
    "arithmetic": "final/latent_arithmetic.png",
    "metrics_json": "final/metrics.json",
}


def copy_best_artifacts(client, run_id: str, figures: Path) -> dict[str, Path]:
    """Download the best trial's final artifacts into ``figures`` as best_<kind>.<ext>."""
    out: dict[str, Path] = {}
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the CLI's output
    with tempfile.TemporaryDirectory() as tmp:
        for kind, rel in BEST_ARTIFACTS.items():
            try:
                local = Path(client.download_artifacts(run_id, rel, tmp))
            except Exception as exc:
                log.debug("artifact %s of run %s: %s", rel, run_id, exc)
                continue
            if not local.is_file() or local.stat().st_size == 0:
                continue
            target = figures / f"best_{kind}{local.suffix}"
            if local.suffix == ".png":  # runs of older versions logged RGBA pictures
                compact_png(local, target)
            else:
                target.write_bytes(local.read_bytes())
            out[kind] = target
    return out
