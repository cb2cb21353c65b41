"""OpenMP's wait policy on an idle machine and with one core held by another process.

    python -m benchmarks.wait_policy [--rounds 2]

``gan`` sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads (unless the user set it). This
measures why: each case runs in a fresh process (libgomp reads the variable once) with
libgomp's default (threads spin a while before they sleep) and with PASSIVE, once on an idle machine and once while a pure-Python loop keeps one core busy. Work: 60 steps of evaluator training (the
suite's largest item) and 300 MLP GAN steps at batch 256. Prints each case and the
PASSIVE/default ratio of the best round.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

_WORK = r"""
import json, time, torch
import gan
from gan import evaluator as ev
split = gan.load_mnist()
ev._train(split, ev.ClassifierConfig(max_steps=3))
t = time.perf_counter(); ev._train(split, ev.ClassifierConfig(max_steps=60))
eval_rate = 60 / (time.perf_counter() - t)
cfg = gan.TrainConfig(arch="mlp", batch_size=256, budget=300, device="cpu")
gan.train(cfg.replace(budget=20), split)
t = time.perf_counter(); gan.train(cfg, split)
gan_rate = 300 * 256 / (time.perf_counter() - t)
print(json.dumps({"evaluator_steps_s": eval_rate, "mlp_images_s": gan_rate}))
"""


def _measure(policy: str) -> dict[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}  # "" is unset for libgomp: its default
    out = subprocess.run([sys.executable, "-c", _WORK], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.wait_policy", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    for load in ("idle", "one core busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
        try:
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for policy in ("", "PASSIVE"):
                    r = _measure(policy)
                    print(f"{load:14s} {policy or 'default':8s} evaluator {r['evaluator_steps_s']:6.1f} steps/s   "
                          f"MLP GAN {r['mlp_images_s']:8.0f} img/s", flush=True)
                    b = best.setdefault(policy, r)
                    best[policy] = {k: max(b[k], r[k]) for k in r}
        finally:
            if busy:
                busy.kill()
        ratio = {k: best["PASSIVE"][k] / best[""][k] for k in best["PASSIVE"]}
        print(f"{load:14s} PASSIVE/default: evaluator x{ratio['evaluator_steps_s']:.2f}, "
              f"MLP GAN x{ratio['mlp_images_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
