"""``gan-study sample``: samples from the best (or a chosen) trial's generator, as an image grid
(``.png``) or a tensor (``.pt``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

import gan
from gan import metrics as gm
from gan.errors import GanStudyError
from gan.plots import save_grid

from ..spec.limits import MAX_SAMPLES
from ..storage.names import check_name, inside, refuse_links
from ..storage.record import TrialRecord
from ..storage.tracking import Stores

__all__ = ["MAX_SAMPLES", "SampleError", "sample_command"]

SUFFIXES = (".png", ".pt")


class SampleError(GanStudyError):
    """Bad options of ``gan-study sample``."""


def sample_command(stores: Stores, study_name: str, *, trial: int | None, n: int, seed: int, out: str | None) -> str:
    """Write the samples; the line the CLI prints. Every option is checked before a store is read."""
    check_name(study_name)
    if not 1 <= n <= MAX_SAMPLES:
        raise SampleError(f"-n must be between 1 and {MAX_SAMPLES}, got -n {n}")
    if seed < 0:
        raise SampleError(f"--seed must be >= 0, got --seed {seed}")
    if trial is not None and trial < 0:
        raise SampleError(f"--trial must be a trial number >= 0, got --trial {trial}")
    if out is not None and Path(out).suffix.lower() not in SUFFIXES:
        raise SampleError(f"--out {out} must end in .png (an image grid) or .pt (a tensor of samples)")
    if out is not None:
        # --out is the user's choice, but no link planted in the work folder may redirect it.
        refuse_links(stores.workdir, out, "the samples file")
    from ..storage.registry import load_generator
    from .status import open_existing_study

    study = open_existing_study(stores, study_name)
    chosen, generator, source = load_generator(study, stores, trial)
    path = Path(out) if out else stores.workdir / "samples" / study_name / f"trial-{chosen.number}.png"
    refuse_links(stores.workdir, path, "the samples file")
    if out is None:
        inside(stores.workdir / "samples", path, "the samples file")
    images = gan.generate(generator, n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    if path.suffix.lower() == ".pt":
        torch.save(images.cpu(), tmp)
    else:
        save_grid(images, tmp, nrow=max(1, math.isqrt(n - 1) + 1) if n > 1 else 1)
    os.replace(tmp, path)
    metrics = TrialRecord.from_trial(chosen).metrics
    shown = ", ".join(f"{m.name}={metrics[m.name]:.4g}" for m in gm.metrics_of("score", shown=True)
                      if isinstance(metrics.get(m.name), (int, float)))
    return f"{path}: {n} samples of trial {chosen.number} ({shown}) from the {source}"
