"""What population training buys a whole study: the spec with ``population: K`` (its repeats and
a search's trials trained K runs at once) against ``population: 1`` (one at a time), in fresh
stores.

    python -m benchmarks.study_population                 # SEARCH below, twice (~8 min on 2 CPU cores)
    python -m benchmarks.study_population --spec quick    # a built-in spec or a YAML path

Both start from the same sampler seed. The default study, SEARCH, is the quick study's search
over the parameters population members may differ in (gan.MEMBER_FIELDS) at batch 64 and 2,000
steps, its shape fixed, so that a population can take any of its trials (the quick study is
such a search too, at batch 128 with RMSprop and g_ema). Prints both side by side (wall time,
best value and the best trial's modes, KL to uniform and confidence) and, last, one line a
script can read:
``study_population spec=S population=K wall_ratio=R best_population=X best_solo=Y``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import optuna
import torch

from benchmarks.pruning import run
from study.spec.spec import load_spec, parse_spec


SEARCH = {
    "name": "member-search",
    "description": "MLP GAN: TPE over the learning rates, beta1, D dropout and label smoothing; adam, batch 64, 1:1",
    "objective": {"metric": "fd", "direction": "minimize"},
    "sampler": {"name": "tpe", "seed": 0, "startup_trials": 4},
    "pruner": {"name": "median", "warmup_evals": 1, "startup_trials": 3},
    "trials": 8,
    "budget": {"steps": 2000},
    "evaluation": {"every": 500, "samples": 2000, "final_samples": 10000},
    "fixed": {"arch": "mlp", "optimizer": "adam", "batch_size": 64},
    "space": {
        "lr_g": {"low": 1.0e-4, "high": 2.0e-3, "log": True},
        "lr_d": {"low": 1.0e-4, "high": 2.0e-3, "log": True},
        "beta1": [0.5, 0.9],
        "d_dropout": {"low": 0.1, "high": 0.5},
        "real_label": [1.0, 0.9],
    },
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_population", description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", help="built-in spec name or YAML path (default: SEARCH, in this module)")
    p.add_argument("--steps", type=int, help="training steps per run, as gan-study run --steps")
    p.add_argument("--factors", help="sweep factors to run, comma-separated, as gan-study run --factors")
    p.add_argument("--workdir", help="keep both studies' stores here (default: a temporary folder)")
    p.add_argument("--population", type=int, default=4, help="K of the population study (default 4)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    spec = load_spec(args.spec) if args.spec else parse_spec(SEARCH)
    if args.factors:
        spec = spec.with_factors(args.factors.split(","))
    if args.steps:
        spec = spec.with_budget_steps(args.steps)
    if args.population < 2:
        p.error(f"--population must be >= 2 to compare with one run at a time, got {args.population}")
    root = Path(args.workdir or tempfile.mkdtemp(prefix="gan-study-population-"))
    results = {}
    for label, variant in (("population", parse_spec({**spec.source, "population": args.population})),
                           ("solo", parse_spec({**spec.source, "population": 1}))):
        results[label] = run(variant, root / label, args.device)
    metric = spec.objectives[0]
    print(f"{spec.name}: {spec.trials} trials x {spec.repeats} repeats, {spec.budget:g} {spec.budget_unit}, population {args.population} vs 1; "
          f"torch {torch.__version__}, optuna {optuna.__version__}, {torch.get_num_threads()} threads; stores in {root}")
    print(f"{'study':<11} {'wall s':>7} {'best ' + metric.metric:>9} {'trial':>6} {'modes':>6} {'kl_uniform':>11} {'confidence':>11} {'complete':>9} {'pruned':>7}")
    for label, r in results.items():
        m = r["best"].user_attrs["metrics"]
        print(f"{label:<11} {r['seconds']:>7.0f} {r['best'].value:>9.3f} {r['best'].number:>6} {m['modes']:>6.0f} {m['kl_uniform']:>11.4f} "
              f"{m['confidence']:>11.3f} {r['complete']:>9} {r['pruned']:>7}")
    ratio = results["solo"]["seconds"] / results["population"]["seconds"]
    print(f"study_population spec={spec.name} population={args.population} wall_ratio={ratio:.2f} "
          f"best_population={results['population']['best'].value:.3f} best_solo={results['solo']['best'].value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
