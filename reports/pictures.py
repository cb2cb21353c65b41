"""The images behind the per-value strips: each trial's ``final/pictures.npz`` (first repeat).

The objective stores them as uint8 arrays with the evaluator's predicted digits (see
``study.trials.training.RunTraining.save_artifacts``), so a report draws every setting's samples without torch
models or checkpoints.
"""

from __future__ import annotations

import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from gan.plots import mosaic
from study.storage.record import PICTURES

log = logging.getLogger("gan_study.reports")

__all__ = ["fetch_pictures", "mosaic", "real_digits"]


def fetch_pictures(client, trials: list) -> dict[int, dict[str, Any]]:
    """Trial number -> arrays of its first curve run's pictures; trials without them are left out
    (trials of an older gan-study, or a store that lost the artifact)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    jobs = [(t.number, t.curve_runs[0][0]) for t in trials if t.curve_runs]

    def one(job: tuple[int, str]) -> tuple[int, dict[str, Any] | None]:
        number, run_id = job
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = Path(client.download_artifacts(run_id, PICTURES, tmp))
                with np.load(local) as npz:
                    return number, {k: npz[k] for k in npz.files}
            except Exception as exc:  # noqa: BLE001 - a report without one strip beats no report
                log.debug("pictures of trial %s (run %s): %s", number, run_id, exc)
                return number, None

    with ThreadPoolExecutor(max_workers=4) as pool:
        return {n: p for n, p in pool.map(one, jobs) if p is not None}


def real_digits(data_dir: str | None, n: int = 64, seed: int = 0) -> np.ndarray | None:
    """``n`` random MNIST test digits as uint8 (n, 28, 28), or None when the data cannot be read."""
    try:
        from gan.data import load_mnist

        test = load_mnist(data_dir, train=False)
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(test), size=n, replace=False)
        return test.images.cpu().numpy()[np.sort(idx)].astype(np.uint8)
    except Exception as exc:  # noqa: BLE001
        log.warning("real digits are not shown: %s", exc)
        return None
