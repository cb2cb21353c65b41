"""A/B timing of gan.train at a git revision against the working tree (or another revision).

    python -m benchmarks.ab bf542d9 --batch 256 --steps 300 --rounds 4
    python -m benchmarks.ab a25dba3~1 --against a25dba3

Loads ``gan/loop.py`` (``gan/train.py`` before 2026-12-03) as it was at the revision (the rest of ``gan`` from the working tree)
and times both on the same config in alternating rounds; prints each round and the best
images/s of each with their ratio. This is how the gains listed in docs/performance.md for
each change to the training loop were measured.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import gan
from gan import TrainConfig

REPO = Path(__file__).resolve().parent.parent


def train_at(revision: str):
    """``train`` from gan/loop.py (earlier gan/train.py) at ``revision``, importing the working tree's gan package."""
    for file in ("gan/loop.py", "gan/train.py"):
        shown = subprocess.run(["git", "show", f"{revision}:{file}"], cwd=REPO, capture_output=True, text=True)
        if shown.returncode == 0:
            break
    else:
        raise SystemExit(f"{revision} has neither gan/loop.py nor gan/train.py: {shown.stderr.strip()}")
    source = shown.stdout
    source = source.replace("from .", "from gan.")
    name = "train_at_" + "".join(c if c.isalnum() else "_" for c in revision)
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ab", description=__doc__.split("\n\n")[0])
    p.add_argument("revision")
    p.add_argument("--against", help="a second revision instead of the working tree")
    p.add_argument("--arch", default="mlp")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int)
    p.add_argument("--optimizer", default="adam")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = gan.load_mnist()
    cfg = TrainConfig(arch=args.arch, batch_size=args.batch, budget=args.steps, optimizer=args.optimizer, device="cpu")
    variants = {args.revision: train_at(args.revision),
                args.against or "working tree": train_at(args.against) if args.against else gan.train}
    for fn in variants.values():
        fn(cfg.replace(budget=5), data)
    best = dict.fromkeys(variants, 0.0)
    for r in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn(cfg, data, records_every=100, on_records=lambda records: None)
            rate = cfg.batch_size * args.steps / (time.perf_counter() - start)
            best[name] = max(best[name], rate)
            print(f"round {r + 1}: {name:>14s} {rate:9,.0f} img/s", flush=True)
    (a, base), (b, new) = best.items()
    print(f"best: {a} {base:,.0f} img/s, {b} {new:,.0f} img/s, ratio {new / base:.2f}x "
          f"({args.arch}, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
