"""Population training against solo trials: total images/s of K members in lockstep.

    python -m benchmarks.population [--batches 64 256] [--dcgan-batches 64] [--sizes 1 2 4 8]
                                    [--steps 200] [--dcgan-steps 40] [--rounds 3]

For each architecture and batch size, one solo ``gan.train`` run and populations of K seeds of
the same config (the defaults: the CPU's MLP, and the DCGAN) take turns in each round, so every
ratio compares runs made under the same machine load; the best round of each is kept.
Images/s counts the real images of every member.
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


def _compare(base: gan.TrainConfig, data: gan.MNIST, sizes: list[int], rounds: int) -> str:
    """One line: solo images/s, then each population's and its ratio to solo."""
    gan.train(base.replace(budget=5), data)  # warm-up
    best: dict[str, float] = {}
    for _ in range(rounds):
        start = time.perf_counter()
        gan.train(base, data)
        solo = base.total_steps(len(data)) * base.real_batch / (time.perf_counter() - start)
        best["solo"] = max(best.get("solo", 0.0), solo)
        for k in sizes:
            best[f"K={k}"] = max(best.get(f"K={k}", 0.0), _rate([base.replace(seed=i) for i in range(k)], data))
    row = "  ".join(f"{name} {rate:,.0f} (x{rate / best['solo']:.2f})" for name, rate in best.items() if name != "solo")
    return f"{base.arch.upper()} batch {base.batch_size}: solo {best['solo']:,.0f} img/s  {row}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.population", description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", type=int, nargs="*", default=[64, 256], help="MLP batch sizes")
    p.add_argument("--dcgan-batches", type=int, nargs="*", default=[64], help="DCGAN batch sizes")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--steps", type=int, default=200, help="steps per MLP run")
    p.add_argument("--dcgan-steps", type=int, default=40, help="steps per DCGAN run (about 15x slower per step)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    data = gan.load_mnist()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    runs = [("mlp", b, args.steps) for b in args.batches] + [("dcgan", b, args.dcgan_steps) for b in args.dcgan_batches]
    for arch, batch, steps in runs:
        base = gan.TrainConfig(arch=arch, budget=steps, batch_size=batch, device=args.device)
        print(_compare(base, data, args.sizes, args.rounds), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
