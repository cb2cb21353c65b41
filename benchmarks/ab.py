"""A/B timing of gan.train at a git revision against the working tree (or another revision).

    python -m benchmarks.ab bf542d9 --batch 256 --steps 300 --rounds 4
    python -m benchmarks.ab a25dba3~1 --against a25dba3

Extracts the whole ``gan`` package as it was at the revision (a change to the models, losses or
members counts as much as one to the loop) and times ``gan.train`` of each side on the same
config in alternating rounds, each round in a fresh process on that side's package; prints each
round and the best images/s of each with their ratio. This is how the gains listed in
docs/performance.md for each change to the training loop were measured.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from gan.data import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent

# One round on one side, run from the folder that holds that side's gan package. The warm-up
# run (5 steps) keeps one-time costs (allocator, oneDNN kernels) out of the timing.
ROUND = """
import json, sys, time
import torch
import gan
args = json.loads(sys.argv[1])
if args["threads"]:
    torch.set_num_threads(args["threads"])
data = gan.load_mnist()
cfg = gan.TrainConfig(**args["config"])
gan.train(cfg.replace(budget=5), data)
start = time.perf_counter()
gan.train(cfg, data, records_every=100, on_records=lambda records: None)
print(cfg.batch_size * cfg.budget / (time.perf_counter() - start))
"""


def package_at(revision: str, into: Path) -> Path:
    """A folder holding the ``gan`` package as it was at ``revision``."""
    archive = subprocess.run(["git", "archive", revision, "gan"], cwd=REPO, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"no gan package at {revision}: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def images_per_sec(root: Path, config: dict, threads: int | None) -> float:
    """One timed round of ``gan.train`` with the package under ``root``."""
    # MNIST where the working tree finds it, whatever the revision's default
    env = {**os.environ, "PYTHONPATH": str(root), "GAN_STUDY_DATA": str(resolve_data_dir().resolve())}
    out = subprocess.run([sys.executable, "-c", ROUND, json.dumps({"config": config, "threads": threads})],
                         env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the round on {root} failed:\n{out.stderr.strip()}")
    return float(out.stdout.split()[-1])


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
        torch.set_num_threads(args.threads)  # for the summary line's thread count
    config = {"arch": args.arch, "batch_size": args.batch, "budget": args.steps, "optimizer": args.optimizer, "device": "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {args.revision: package_at(args.revision, Path(tmp) / "a"),
                 args.against or "working tree": package_at(args.against, Path(tmp) / "b") if args.against else REPO}
        best = dict.fromkeys(roots, 0.0)
        for r in range(args.rounds):
            for name, root in roots.items():
                rate = images_per_sec(root, config, args.threads)
                best[name] = max(best[name], rate)
                print(f"round {r + 1}: {name:>14s} {rate:9,.0f} img/s", flush=True)
    (a, base), (b, new) = best.items()
    print(f"best: {a} {base:,.0f} img/s, {b} {new:,.0f} img/s, ratio {new / base:.2f}x "
          f"({args.arch}, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
