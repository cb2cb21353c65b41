"""Where a training step's time goes: gan.train under torch.profiler, grouped by kind of op.

    python -m benchmarks.profile_step --batch 256 --steps 100 [--arch dcgan] [--precision bf16] [--table]

Self CPU time of every aten op, summed into: matmuls (mm, addmm, convolutions and their
backward), dropout's random masks (the draw, random_ — uniform_ or bernoulli_ in older
versions — and the compare), the optimizer kernel, copies (addmm's bias
broadcast, the real batch into D's input buffer, fakes), and everything else (activations,
losses, autograd bookkeeping). Profiling adds per-op overhead, so shares matter here, not
absolute rates.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import gan
from gan import TrainConfig
from gan.config import PRECISIONS

GROUPS = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution", "aten::convolution_backward",
               "aten::_convolution", "aten::slow_conv_transpose2d"),
    "dropout masks (draw, compare)": ("aten::bernoulli_", "aten::uniform_", "aten::random_", "aten::lt"),
    "optimizer": ("aten::_fused_adam_", "aten::_fused_sgd_", "aten::_foreach_"),
    "copies": ("aten::copy_", "aten::index_select", "aten::cat"),
}


def group_of(name: str) -> str:
    for group, prefixes in GROUPS.items():
        if any(name == p or (p.endswith("_") and name.startswith(p)) for p in prefixes):
            return group
    return "everything else"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="mlp")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int)
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--table", action="store_true", help="also print torch's table of the top ops")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = gan.load_mnist()
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch, budget=args.steps, device="cpu", precision=args.precision)
    gan.train(cfg.replace(budget=5), data)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        gan.train(cfg, data, records_every=100)
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            totals[group_of(event.key)] += event.self_cpu_time_total
    whole = sum(totals.values())
    print(f"{args.arch} batch {args.batch} {args.precision}, {args.steps} steps, {torch.get_num_threads()} threads: "
          f"{whole / args.steps / 1e3:.2f} ms of aten ops per step")
    for group, us in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {group:30s} {100 * us / whole:5.1f} %  {us / args.steps / 1e3:6.2f} ms/step")
    if args.table:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
