"""Population training against solo trials: total images/s of K members in lockstep.

    python -m benchmarks.population [--batches 64 256] [--sizes 1 2 4 8] [--steps 200] [--rounds 3]

For each batch size, one solo ``gan.train`` run and populations of K seeds of the same MLP
config (the CPU default) take turns in each round, so every ratio compares runs made under the
same machine load; the best round of each is kept. Images/s counts the real images of every
member. DCGAN populations are not built yet (``gan.population_support``).
"""

from __future__ import annotations

import argparse
import time

import torch

import gan


def _rate(configs: list[gan.TrainConfig], data: gan.MNIST) -> float:
    start = time.perf_counter()
    gan.train_population(configs, data)
    cfg = configs[0]
    return len(configs) * cfg.total_steps(len(data)) * cfg.real_batch / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.population", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    data = gan.load_mnist()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for batch in args.batches:
        base = gan.TrainConfig(budget=args.steps, batch_size=batch, device=args.device)
        gan.train(base.replace(budget=10), data)  # warm-up
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            start = time.perf_counter()
            gan.train(base, data)
            best["solo"] = max(best.get("solo", 0.0), args.steps * batch / (time.perf_counter() - start))
            for k in args.sizes:
                best[f"K={k}"] = max(best.get(f"K={k}", 0.0), _rate([base.replace(seed=i) for i in range(k)], data))
        row = "  ".join(f"{name} {rate:,.0f} (x{rate / best['solo']:.2f})" for name, rate in best.items() if name != "solo")
        print(f"MLP batch {batch}: solo {best['solo']:,.0f} img/s  {row}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
