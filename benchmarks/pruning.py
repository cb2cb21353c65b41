"""What pruning buys: a study with its pruner against the same study without one.

    python -m benchmarks.pruning                  # the quick study at 12 trials
    python -m benchmarks.pruning --spec my.yaml --trials 20 --seeds 5

The pruner acts only after the sampler's random start (the quick spec's 4 trials are all of
it), so the studies run ``--trials`` trials (default 12), not the spec's.

Both studies start from the same sampler seed, so they propose the same first configurations;
the pruned one stops the trials that fall behind. Then the unpruned study's best configuration
is trained again with ``--seeds`` - 1 more seeds: the spread of those repeats is what a
difference between the two best values is measured against. Prints both studies side by side
(best value, trials, training steps, wall time) and, last, one line a script can read:
``pruning best_pruned=X best_unpruned=Y seed_sd=S steps_ratio=R within_spread=yes|no``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

import gan
from gan.config import resolve_device
from study.trials.evaluation import load_evaluation
from study.trials.runner import RunOptions, run_study
from study.spec.spec import StudySpec, load_spec
from study.storage.tracking import Stores


def trained_steps(t: FrozenTrial) -> int:
    """Training steps a trial used: all of them when complete, up to its last report otherwise."""
    if t.state == TrialState.COMPLETE:
        return int(t.user_attrs["metrics"]["steps"])
    return max(t.intermediate_values, default=0)


def run(spec: StudySpec, workdir: Path, device: str) -> dict:
    stores = Stores.resolve(workdir)
    started = time.perf_counter()
    run_study(spec, RunOptions(stores=stores, study_name=spec.name, device=device, quiet=True, target_trials=spec.trials))
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=spec.name, storage=stores.optuna_storage())
    trials = study.get_trials(deepcopy=False)
    return {
        "best": study.best_trial,
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "steps": sum(trained_steps(t) for t in trials),
        "seconds": seconds,
    }


def seed_values(best: FrozenTrial, spec: StudySpec, seeds: int, device: str) -> list[float]:
    """The objective of the best configuration for seeds 0..seeds-1 (seed 0 is the trial itself)."""
    metric = spec.objectives[0].metric
    evaluation = load_evaluation(None, resolve_device(device))
    base = gan.TrainConfig.from_dict(best.user_attrs["config"])
    values = [best.value]
    for seed in range(base.seed + 1, base.seed + seeds):
        cfg = base.replace(seed=seed)
        result = gan.train(cfg, evaluation.data)
        values.append(evaluation.score(result.generator, result.discriminator, cfg, spec.final_samples)[0][metric])
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pruning", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default="quick", help="built-in spec name or YAML path (default: quick)")
    p.add_argument("--trials", type=int, default=12, help="trials of each study (default 12)")
    p.add_argument("--seeds", type=int, default=3, help="repeats of the best configuration (default 3)")
    p.add_argument("--workdir", help="keep both studies' stores here (default: a temporary folder)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f"--seeds must be >= 2 to measure a spread, got {args.seeds}")
    spec = dataclasses.replace(load_spec(args.spec), trials=args.trials)
    if spec.multi_objective:
        raise SystemExit("benchmarks.pruning: the spec must have one objective (Optuna prunes single-objective studies)")
    pruner = spec.pruner if spec.pruner != "none" else "median"
    root = Path(args.workdir or tempfile.mkdtemp(prefix="gan-study-pruning-"))
    results = {}
    for label, variant in (("pruned", dataclasses.replace(spec, pruner=pruner)), ("unpruned", dataclasses.replace(spec, pruner="none"))):
        results[label] = run(variant, root / label, args.device)
    metric = spec.objectives[0]
    values = seed_values(results["unpruned"]["best"], spec, args.seeds, args.device)
    sd = statistics.stdev(values)
    best_pruned, best_unpruned = results["pruned"]["best"].value, results["unpruned"]["best"].value
    ratio = results["pruned"]["steps"] / results["unpruned"]["steps"]
    within = abs(best_pruned - best_unpruned) <= 2 * sd

    print(f"{spec.name}: {spec.trials} trials, sampler {spec.sampler} seed {spec.sampler_seed}, {metric.metric} ({metric.direction}); "
          f"torch {torch.__version__}, optuna {optuna.__version__}, {torch.get_num_threads()} threads; stores in {root}")
    print(f"{'study':<10} {'pruner':<8} {'best ' + metric.metric:>10} {'trial':>6} {'complete':>9} {'pruned':>7} {'train steps':>12} {'wall s':>8}")
    for label, r in results.items():
        print(f"{label:<10} {pruner if label == 'pruned' else 'none':<8} {r['best'].value:>10.3f} {r['best'].number:>6} "
              f"{r['complete']:>9} {r['pruned']:>7} {r['steps']:>12,} {r['seconds']:>8.0f}")
    print(f"best unpruned configuration, {args.seeds} seeds: {', '.join(f'{v:.3f}' for v in values)} "
          f"(mean {statistics.fmean(values):.3f}, sd {sd:.3f})")
    print(f"pruned / unpruned training steps: {ratio:.2f}; best-value difference {best_pruned - best_unpruned:+.3f} "
          f"= {(best_pruned - best_unpruned) / sd:+.2f} seed sd ({'within' if within else 'outside'} 2 sd)")
    print(f"pruning best_pruned={best_pruned:.3f} best_unpruned={best_unpruned:.3f} seed_sd={sd:.3f} "
          f"steps_ratio={ratio:.2f} within_spread={'yes' if within else 'no'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
