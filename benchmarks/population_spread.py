"""Population members against solo repeats: do a population's final metrics fall within the
spread of the same config trained one run at a time?

    python -m benchmarks.population_spread [--seeds 6] [--steps 3000] [--arch mlp] [--set k=v ...]

Trains one config (the CPU default MLP, or ``--arch dcgan``; ``--set`` changes any field) with
seeds 0..N-1 one at a time, then the same N seeds as one population, and scores every run as a
study scores a trial (10,000 samples, the frozen evaluator). Over a long run two runs of one
seed part ways (float rounding grows: batched and single matmuls round apart), so a member is
judged against the spread of solo seeds, not against its own solo run. Per metric: the solo
mean, sd and range, the members' mean, their difference in solo sds, and how many members lie
within the solo range (a run from the solo runs' own distribution does so with probability
(N - 1) / (N + 1), 5/7 for N = 6); last, one line a script can read:
``population_spread seeds=N fd_diff_sd=X fd_within=n/N ...``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

import gan
from gan import metrics as gm
from gan.config import resolve_device
from study.trials.evaluation import load_evaluation


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.population_spread", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=6, help="solo repeats, and population members (default 6)")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--arch", default="mlp", choices=["mlp", "dcgan"])
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a TrainConfig field (YAML value)")
    p.add_argument("--samples", type=int, default=10_000)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    if args.seeds < 2:
        p.error(f"--seeds must be >= 2 to measure a spread, got {args.seeds}")
    changes = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    base = gan.TrainConfig(arch=args.arch, budget=args.steps, device=args.device, **changes)
    evaluation = load_evaluation(None, resolve_device(args.device))
    configs = [base.replace(seed=s) for s in range(args.seeds)]

    def scored(result: gan.TrainResult) -> dict[str, float]:
        """Every registered score the evaluation measured (``d_acc_generated``, D's own, included)."""
        values, _ = evaluation.score(result.generator, result.discriminator, result.config, args.samples)
        return {m.name: float(values[m.name]) for m in gm.metrics_of("score") if isinstance(values.get(m.name), (int, float))}

    start = time.perf_counter()
    solo = [scored(gan.train(cfg, evaluation.data)) for cfg in configs]
    solo_s = time.perf_counter() - start
    start = time.perf_counter()
    members = [scored(r) for r in gan.train_population(configs, evaluation.data)]
    population_s = time.perf_counter() - start

    print(f"{args.arch} {args.steps} steps, batch {base.batch_size}, seeds 0..{args.seeds - 1}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; solo runs {solo_s:.0f} s, population {population_s:.0f} s (scoring included)")
    print(f"{'metric':<15} {'solo mean':>10} {'sd':>8} {'range':>19} {'members':>10} {'diff/sd':>8} {'within':>7}")
    line = [f"population_spread seeds={args.seeds}"]
    for m in solo[0]:
        a, b = [r[m] for r in solo], [r[m] for r in members]
        sd = statistics.stdev(a)
        diff = (statistics.fmean(b) - statistics.fmean(a)) / sd if sd > 0 else 0.0
        within = sum(min(a) <= v <= max(a) for v in b)
        print(f"{m:<15} {statistics.fmean(a):>10.4f} {sd:>8.4f} {f'[{min(a):.4f}, {max(a):.4f}]':>19} "
              f"{statistics.fmean(b):>10.4f} {diff:>+8.2f} {within:>4}/{len(b)}")
        line.append(f"{m}_diff_sd={diff:+.2f} {m}_within={within}/{len(b)}")
    print(" ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
