"""Total training throughput of N trials sharing one device, as ``gan-study run --jobs N`` runs them.

    python -m benchmarks.jobs                          # MLP, batch 256, on the default device
    python -m benchmarks.jobs --arch dcgan --batch 64 --device cuda --jobs 1,2,4

For each N, starts N processes at once (as the study's workers: spawned, each with cores / N
torch threads), each training the same config for ``--steps`` steps after a short warm-up,
and prints the images/s of each and their total, and the total as a multiple of N = 1 (the
first N, measured in the same run). On a GPU this is the "--jobs N on one GPU" figure.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys

import torch

import gan
from gan import TrainConfig


def _worker(cfg: TrainConfig, threads: int, start, results) -> None:
    torch.set_num_threads(threads)
    data = gan.load_mnist(device=cfg.resolved_device())
    gan.train(cfg.replace(budget=10), data)  # warm-up: allocator, kernels, CUDA context
    start.wait()  # all N train at the same time
    results.put(gan.train(cfg, data).images_per_sec)


def measure(cfg: TrainConfig, jobs: int) -> list[float]:
    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(jobs), ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = [ctx.Process(target=_worker, args=(cfg, threads, start, results)) for _ in range(jobs)]
    for p in procs:
        p.start()
    rates = [results.get() for _ in procs]
    for p in procs:
        p.join()
    return rates


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.jobs", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mlp")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--device", default="auto")
    p.add_argument("--jobs", default="1,2,4", help="comma-separated counts of concurrent trials (default 1,2,4)")
    args = p.parse_args(argv)
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch, budget=args.steps, device=args.device)
    counts = [int(n) for n in args.jobs.split(",")]
    device = cfg.resolved_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {os.cpu_count()} cores"
    print(f"{args.arch} batch {args.batch}, {args.steps} steps per trial on {name}; torch {torch.__version__}")
    print(f"{'jobs':>4} {'total img/s':>12} {'vs first':>9}  per trial img/s")
    first = None
    for n in counts:
        rates = measure(cfg, n)
        total = sum(rates)
        first = first or total
        print(f"{n:>4} {total:>12,.0f} {total / first:>8.2f}x  {', '.join(f'{r:,.0f}' for r in rates)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
