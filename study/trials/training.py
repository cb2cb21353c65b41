"""One training run of a trial (the trial's own, or one repeat's) and what it sends to MLflow:
curves while it trains, scores and samples at each evaluation, the pruner's reports, and the
final scores and artifacts. Several runs train at once as one population (``gan.train_population``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
import torch

import gan
from gan.plots import as_uint8, class_histogram, labelled_samples, save_grid
from gan.sampling import arithmetic_rows, interpolation_rows

from .progress import Meter, is_tty
from ..storage.record import PICTURES
from ..storage.runs import CurveLogger, log_artifacts, log_metrics
from ..spec.spec import StudySpec

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from .evaluation import Evaluation

__all__ = ["EVAL_SEED", "MAX_CURVE_POINTS", "RunTraining", "progress_steps", "train_runs", "with_class_counts"]

EVAL_SEED = 12345  # noise for evaluation samples: the same for every trial, so metrics compare
MAX_CURVE_POINTS = 500  # per curve and run: plenty for plots, half the insert cost of 1000
PROGRESS_FRACTIONS = (0.0, 0.25, 0.5)  # of the budget: the reports' "samples across training" (plus the end)
PROGRESS_IMAGES = 10  # fixed-noise images per progress strip


def progress_steps(total: int) -> list[int]:
    """The steps of the progress strips before the last (0, 25 % and 50 % of ``total``)."""
    return sorted({round(total * f) for f in PROGRESS_FRACTIONS} - {total})


class RunTraining:
    """The callbacks of one run's training and its ending; ``report``: this run's scores go to
    the pruner (a trial's first repeat)."""

    def __init__(self, spec: StudySpec, evaluation: Evaluation, client: MlflowClient, trial: optuna.Trial,
                 cfg: gan.TrainConfig, run_id: str, *, report: bool, progress_bar: bool,
                 verdict: list[optuna.TrialPruned] | None = None, meter: Meter | None = None):
        self.spec, self.ev, self.client, self.trial = spec, evaluation, client, trial
        self.cfg, self.run_id, self.report = cfg, run_id, report
        # Shared by the runs of one trial: once the pruner stops the trial, its other runs stop too.
        self.verdict = verdict if verdict is not None else []
        self.total = total = cfg.total_steps(len(evaluation.data))
        # The invocation's progress (study.trials.progress): steps and images, once a records block.
        self.meter, self.images_per_step = meter, cfg.real_batch * cfg.d_steps
        window = math.ceil(total / MAX_CURVE_POINTS)
        self.curves = CurveLogger(client, run_id, window)
        self.records_every = window * math.ceil(100 / window)
        self.snapshots = progress_steps(total)
        self.progress: dict[int, Any] = {}  # step -> uint8 fixed-noise images, for the progress strip
        self.bar = None
        if progress_bar and is_tty():  # redraws with carriage returns: a terminal's only
            from tqdm import tqdm

            seed = f" seed {cfg.seed}" if spec.repeats > 1 else ""
            self.bar = tqdm(total=total, desc=f"trial {trial.number}{seed}", unit="step", leave=False)

    def on_records(self, records: gan.Records) -> None:
        if self.verdict:
            raise self.verdict[0]
        self.curves(records)
        if self.meter is not None:
            self.meter.advance(len(records.steps), len(records.steps) * self.images_per_step)
        if self.bar is not None:
            self.bar.update(len(records.steps))

    def on_eval(self, point: gan.EvalPoint) -> None:
        spec = self.spec
        if self.verdict:
            raise self.verdict[0]
        self.curves.flush()  # training is paused anyway
        images = point.generator(point.fixed_noise)
        log_artifacts(self.client, self.run_id, {f"samples/step_{point.step:06d}.png": lambda p: save_grid(images, p)})
        if point.step in self.snapshots:
            self.progress[point.step] = as_uint8(images[:PROGRESS_IMAGES])
        if point.step % spec.eval_every:  # a progress snapshot only: no scores
            return
        values, _ = self.ev.score(point.generator, point.discriminator, self.cfg, spec.eval_samples)
        log_metrics(self.client, self.run_id, with_class_counts(values), point.step)
        # step 0 scores the untrained models for the curves; the pruner compares trained ones
        if self.report and not spec.multi_objective and point.step > 0:
            metric = spec.objectives[0].metric
            self.trial.report(values[metric], point.step)
            if self.trial.should_prune():
                self.verdict.append(optuna.TrialPruned(f"pruned at step {point.step}: {metric}={values[metric]:.4g} is behind the other trials"))
                raise self.verdict[0]

    def close(self) -> None:
        self.curves.flush()
        if self.bar is not None:
            self.bar.close()

    def finish(self, result: gan.TrainResult) -> dict[str, Any]:
        """Score the trained models, log the final metrics and artifacts; the metrics."""
        values, images = self.ev.score(result.generator, result.discriminator, self.cfg, self.spec.final_samples)
        values.update(train_seconds=result.seconds, images_per_sec=result.images_per_sec, steps=result.steps)
        log_metrics(self.client, self.run_id, with_class_counts(values), result.steps)
        self.progress[result.steps] = as_uint8(result.generator(result.fixed_noise)[:PROGRESS_IMAGES])
        self.save_artifacts(result, images, values)
        return values

    def save_artifacts(self, result: gan.TrainResult, images: torch.Tensor, values: dict[str, Any]) -> None:
        evaluator = self.ev.evaluator
        twenty = images[:20]  # from the evaluation noise (EVAL_SEED): the same latents in every trial

        def digits(batch: torch.Tensor) -> list[int]:
            probs, _ = evaluator.predict(batch)
            return probs.argmax(1).tolist()

        interpolation = interpolation_rows(result.generator, rows=5, steps=10)
        arithmetic = arithmetic_rows(result.generator, rows=4)
        labels = {"samples_20": digits(twenty), "interpolation": digits(interpolation), "arithmetic": digits(arithmetic)}
        steps = sorted(self.progress)
        pictures = {
            "samples_20": as_uint8(twenty), "samples_20_pred": labels["samples_20"],
            "interpolation": as_uint8(interpolation), "interpolation_pred": labels["interpolation"],
            "arithmetic": as_uint8(arithmetic), "arithmetic_pred": labels["arithmetic"],
            "progress_steps": steps, "progress": [self.progress[k] for k in steps] if steps else [],
        }
        saved = {
            "metrics": values,
            "config": result.config.to_dict(),
            "environment": gan.environment(result.device),
            "evaluator": evaluator.card(),
            "samples": self.spec.final_samples,
            "eval_seed": EVAL_SEED,
        }
        log_artifacts(
            self.client,
            self.run_id,
            {
                "samples/final.png": lambda p: save_grid(result.generator(result.fixed_noise), p),
                "final/samples_20.png": lambda p: labelled_samples(twenty, labels["samples_20"], p),
                "final/class_histogram.png": lambda p: class_histogram(values["class_counts"], p),
                "final/interpolation.png": lambda p: labelled_samples(interpolation, labels["interpolation"], p, ncol=10),
                "final/latent_arithmetic.png": lambda p: labelled_samples(arithmetic, labels["arithmetic"], p, ncol=4,
                                                                          col_titles=["x1", "x2", "x1 − x2", "x1 + x2"]),
                PICTURES: lambda p: _save_npz(p, pictures),
                "final/metrics.json": lambda p: p.write_text(json.dumps(saved, indent=2)),
                "checkpoint/checkpoint.pt": lambda p: gan.save_checkpoint(p, result.config, result.generator, result.discriminator, step=result.steps, metrics={k: v for k, v in values.items() if isinstance(v, float)}),
            },
        )


def train_runs(runs: Sequence[RunTraining], data: gan.MNIST) -> list[dict[str, Any] | optuna.TrialPruned]:
    """Train the runs (one alone, several as one population) and score each: per run, its final
    metrics, or the ``TrialPruned`` that ends its trial. The pruner stops a trial's runs and
    no other; a diverged run prunes its trial, whose other runs are then not scored.
    """
    first, spec = runs[0], runs[0].spec
    schedule = {"records_every": first.records_every, "eval_every": spec.eval_every, "eval_at": first.snapshots}
    stops = (gan.DivergenceError, optuna.TrialPruned)
    try:
        if len(runs) == 1:
            try:
                results: list[Any] = [gan.train(first.cfg, data, on_records=first.on_records, on_eval=first.on_eval, **schedule)]
            except stops as exc:
                results = [exc]
        else:
            results = gan.train_population([r.cfg for r in runs], data, on_records=lambda k, rec: runs[k].on_records(rec),
                                           on_eval=lambda k, point: runs[k].on_eval(point), stop_on=stops, **schedule)
    finally:
        for run in runs:
            run.close()
    ended: dict[int, optuna.TrialPruned] = {}  # trial number -> why it ends
    for run, result in zip(runs, results, strict=True):
        if isinstance(result, gan.DivergenceError):
            why = optuna.TrialPruned(f"diverged: {result}")
            why.__cause__ = result
            ended.setdefault(run.trial.number, why)
        elif isinstance(result, optuna.TrialPruned):
            ended.setdefault(run.trial.number, result)
    return [ended.get(run.trial.number) or run.finish(result) for run, result in zip(runs, results, strict=True)]


def with_class_counts(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with ``class_counts`` also as one metric per digit (``class_count.D``), so the
    class histogram of every evaluation, not only the last, is in MLflow (claims on shares are
    judged at each evaluation step)."""
    return {**values, **{f"class_count.{d}": n for d, n in enumerate(values.get("class_counts", []))}}


def _save_npz(path, arrays: dict[str, Any]) -> None:
    import numpy as np

    with open(path, "wb") as fh:  # np.savez on a path would append .npz to the artifact's name
        np.savez_compressed(fh, **{k: np.asarray(v) for k, v in arrays.items()})
