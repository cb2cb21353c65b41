"""Training throughput of gan-study against the classic loop and the machine's matmul roofline.

    python -m benchmarks.throughput            # full run, about 8 minutes on 2 CPU cores
    python -m benchmarks.throughput --quick    # about two minutes

For the MLP GAN at batch 64, 256 and 512 and the DCGAN at batch 64 it prints, measured in the
same process: the seed-style loop (benchmarks/seed_style.py), ``gan.train`` as study trials
call it (records every 100 steps, handed to a callback that builds the curve windows as the
study's CurveLogger does), the matmul FLOPs per real image (benchmarks/flops.py) and the
float32 GEMM throughput of the machine (a 2048 x 2048 matmul, repeated). Measurements are
interleaved in rounds (GEMM, seed-style, gan.train, again) and the best round of each is
kept, so that load from other processes on a shared machine hurts all three alike; each
round also reports how much CPU other processes took meanwhile (trust rows near 0 %).
"matmul-only %" is the ceiling of benchmarks/matmul_bound.py: the step's own matrix products
replayed back to back, as a % of the roofline.
Rows ending in _bf16 train with precision="bf16" (autocast) against the same fp32 seed-style
loop; their roofline and ceiling are measured in bf16.
Then: the time to score 10,000 samples with every metric, and the cost of MLflow logging in
a trial. The last line is ``mlp_bs256 speedup_vs_seed_style=X.XX roofline_pct=YY.Y``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch

import gan
from gan import TrainConfig

from .flops import counted_flops_per_image, train_flops_per_image
from .matmul_bound import record, replay_seconds
from .seed_style import mnist_dataset, train_seed_style

MLP_BATCHES = (64, 256, 512)
GEMM_N = 2048
# A row's roofline is the GEMM rate in the precision its matmuls run in.
GEMM_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}


# -- measurements --------------------------------------------------------------------------
class OtherLoad:
    """CPU time that other processes used while a block ran, as a share of the machine.

    /proc/stat's busy jiffies of all cores minus this process's own CPU time: on a shared
    machine it says which measurements were taken while someone else computed.
    """

    def __enter__(self) -> OtherLoad:
        self._busy, self._own, self._wall = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._wall
        others = (_busy_seconds() - self._busy) - (_own_seconds() - self._own)
        self.pct = max(0.0, 100 * others / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


def _busy_seconds() -> float:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def gemm_flops(n: int = GEMM_N, reps: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n x n x n matmul in ``dtype``: the best of ``reps`` timed products."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(2):
        torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def study_callback(total_steps: int):
    """What a trial's on_records does with a block, less the MLflow call: window means."""
    window = math.ceil(total_steps / 1000)
    curves: list[tuple[str, int, float]] = []

    def on_records(records: gan.Records) -> None:
        steps = records.steps
        for start in range(0, len(steps), window):
            end = min(start + window, len(steps))
            for key, values in records.values.items():
                curves.append((key, steps[end - 1], sum(values[start:end]) / (end - start)))
        curves.append(("images_per_sec", steps[-1], records.images_per_sec))

    return on_records, window * math.ceil(100 / window)


def run_ours(cfg: TrainConfig, data: gan.MNIST, steps: int) -> tuple[float, gan.TrainResult]:
    """Wall seconds of ``gan.train`` for ``steps`` iterations as a trial calls it."""
    cfg = cfg.replace(budget=steps, budget_unit="steps")
    on_records, records_every = study_callback(steps)
    start = time.perf_counter()
    result = gan.train(cfg, data, on_records=on_records, records_every=records_every)
    return time.perf_counter() - start, result


@dataclass
class Row:
    name: str
    batch: int
    steps: int
    seed_img_s: float
    ours_img_s: float
    gemm_gflops: float
    mflop_per_image: float
    other_load_pct: float
    """The most CPU that other processes took during any round (0 on an idle machine)."""
    matmul_only_img_s: float
    """Images/s if a step were nothing but its own matmuls, replayed back to back."""

    @property
    def speedup(self) -> float:
        return self.ours_img_s / self.seed_img_s

    @property
    def ours_gflops(self) -> float:
        return self.mflop_per_image * self.ours_img_s / 1e3

    @property
    def roofline_pct(self) -> float:
        return 100 * self.ours_gflops / self.gemm_gflops

    @property
    def matmul_only_pct(self) -> float:
        """The matmul-only ceiling as a % of the roofline: no loop at these shapes gets above it."""
        return 100 * self.mflop_per_image * self.matmul_only_img_s / 1e3 / self.gemm_gflops


def measure(name: str, cfg: TrainConfig, data, dataset, steps: int, rounds: int, log) -> tuple[Row, gan.TrainResult]:
    warm = max(2, steps // 20)
    run_ours(cfg, data, warm)
    train_seed_style(cfg, dataset, warm)
    gemm, seed, ours = [], [], []
    result = None
    others, ceiling = [], []
    calls = record(lambda: gan.train(cfg.replace(budget=1), data))
    for r in range(rounds):
        with OtherLoad() as load:
            gemm.append(gemm_flops(dtype=GEMM_DTYPE[cfg.precision]))
            ceiling.append(cfg.batch_size * cfg.d_steps / replay_seconds(calls, reps=10 if cfg.arch == "mlp" else 2))
            images, seconds = train_seed_style(cfg, dataset, steps)
            seed.append(images / seconds)
            seconds, result = run_ours(cfg, data, steps)
            ours.append(steps * cfg.batch_size / seconds)
        others.append(load.pct)
        log(f"  {name} round {r + 1}/{rounds}: GEMM {gemm[-1] / 1e9:.1f} GFLOP/s, seed-style {seed[-1]:,.0f} img/s, "
            f"gan.train {ours[-1]:,.0f} img/s (other processes: {load.pct:.0f} % of the CPUs)")
    row = Row(name, cfg.batch_size, steps, max(seed), max(ours), max(gemm) / 1e9, train_flops_per_image(cfg) / 1e6,
              max(others), max(ceiling))
    return row, result


def measure_score(generator, data_dir, log) -> dict[str, float]:
    """Seconds to score 10,000 generated samples with every metric (cached evaluator and stats)."""
    from gan import metrics
    from gan.evaluator import load_evaluator

    evaluator = load_evaluator(data_dir)
    real = metrics.real_stats(evaluator, data_dir)
    images = gan.generate(generator, 10_000, seed=12345)
    times = []
    with OtherLoad() as load:
        for _ in range(3):
            start = time.perf_counter()
            values = metrics.score(images, evaluator, real)
            times.append(time.perf_counter() - start)
    log(f"  score(10,000): {', '.join(f'{t:.2f}' for t in times)} s; fd={values['fd']:.2f} "
        f"(other processes: {load.pct:.0f} % of the CPUs)")
    return {"best_s": min(times), "median_s": sorted(times)[1], "other_load_pct": load.pct}


def _async_curve_logger():
    """The study's CurveLogger as it was before 2026-11-23: MLflow's asynchronous log_batch for
    every records block (kept here as the comparison that made the study flush in batches)."""
    from study.storage.runs import MLFLOW_BATCH, CurveLogger

    @dataclass
    class AsyncCurveLogger(CurveLogger):
        operations: list = field(default_factory=list)

        def __call__(self, records) -> None:
            self.flushed_at = float("-inf")  # every block goes out at once...
            super().__call__(records)

        def flush(self) -> None:
            while self.pending:  # ...without waiting for it
                batch, self.pending = self.pending[:MLFLOW_BATCH], self.pending[MLFLOW_BATCH:]
                self.operations.append(self.client.log_batch(self.run_id, metrics=batch, synchronous=False))

    return AsyncCurveLogger


def measure_mlflow(data, steps: int, batch: int, rounds: int, log) -> dict:
    """A trial's training with the study's CurveLogger (MLflow batches to a real sqlite store)
    against the same training with no callback; the overhead is (on - off) / off. A what-if,
    measured but not used by study/: asynchronous log_batch calls for every records block.
    """
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    from study.trials.training import MAX_CURVE_POINTS
    from study.storage.runs import CurveLogger
    from study.storage.tracking import Stores

    cfg = TrainConfig(batch_size=batch, budget=steps, device="cpu")
    window = math.ceil(steps / MAX_CURVE_POINTS)
    variants = {"off": None, "study": CurveLogger, "async per block": _async_curve_logger()}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    others, points = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        stores = Stores.resolve(tmp)
        stores.prepare()
        client = stores.mlflow()
        experiment = stores.experiment_id("benchmark")
        gan.train(cfg.replace(budget=20), data)  # warm-up
        for r in range(rounds):
            with OtherLoad() as load:
                for name, logger in variants.items():
                    run_id = client.create_run(experiment, run_name=f"{name}-{r}").info.run_id
                    curves = logger(client, run_id, window) if logger else None
                    records_every = window * math.ceil(100 / window)  # as study.trials.training.RunTraining
                    start, cpu_start = time.perf_counter(), _own_seconds()
                    gan.train(cfg, data, on_records=curves, records_every=records_every)
                    if curves is not None:
                        curves.flush()
                        for operation in getattr(curves, "operations", []):
                            operation.wait()
                    wall[name].append(time.perf_counter() - start)
                    cpu[name].append(_own_seconds() - cpu_start)
                    client.set_terminated(run_id)
                    points[name] = len(client.get_metric_history(run_id, "d_loss"))
            others.append(load.pct)
            log(f"  trial {steps} steps, batch {batch}: " + ", ".join(
                f"{name} {wall[name][-1]:.2f} s" + (f" ({points[name]} points/curve)" if points[name] else "")
                for name in variants) + f" (other processes: {load.pct:.0f} % of the CPUs)")
    # Each round's "on" against the same round's "off" (the machine drifts between rounds by as
    # much as the effect measured), then the median over rounds.
    def overhead(times: dict[str, list[float]], name: str) -> float:
        return 100 * statistics.median((on - off) / off for on, off in zip(times[name], times["off"]))

    median = {k: statistics.median(v) for k, v in wall.items()}
    return {
        "off_s": median["off"],
        "on_s": median["study"],
        "overhead_pct": overhead(wall, "study"),
        "cpu_overhead_pct": overhead(cpu, "study"),
        "points_per_curve": points["study"],
        "what_if": {k: {"seconds": median[k], "overhead_pct": overhead(wall, k)} for k in variants if k not in ("off", "study")},
        "other_load_pct": max(others),
    }


# -- the report ------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torchvision

    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "load_avg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def table(rows: list[Row]) -> str:
    head = ("config", "steps", "seed-style img/s", "gan.train img/s", "speedup", "MFLOP/img", "GFLOP/s",
            "GEMM GFLOP/s", "roofline %", "matmul-only %", "others' CPU %")
    lines = [head] + [
        (r.name, str(r.steps), f"{r.seed_img_s:,.0f}", f"{r.ours_img_s:,.0f}", f"{r.speedup:.2f}x",
         f"{r.mflop_per_image:.2f}", f"{r.ours_gflops:.1f}", f"{r.gemm_gflops:.1f}", f"{r.roofline_pct:.1f}",
         f"{r.matmul_only_pct:.1f}", f"{r.other_load_pct:.0f}")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    fmt = lambda line: "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))) + " |"  # noqa: E731
    return "\n".join([fmt(lines[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, lines[1:])])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer steps and rounds (about two minutes)")
    p.add_argument("--steps", type=int, help="MLP iterations per measurement (default: 76,800 images' worth; quick: 25,600)")
    p.add_argument("--dcgan-steps", type=int, help="DCGAN iterations per measurement (default 20; quick 6)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per config, best kept (default 3; quick 2)")
    p.add_argument("--batches", default=",".join(map(str, MLP_BATCHES)), help="MLP batch sizes (default 64,256,512)")
    p.add_argument("--no-dcgan", action="store_true", help="skip the DCGAN row")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast rows (MLP batch 256, DCGAN)")
    p.add_argument("--mlflow-steps", type=int, help="steps of the logged trial (default 2000; quick 600)")
    p.add_argument("--skip-score", action="store_true", help="skip the 10,000-sample scoring time")
    p.add_argument("--skip-mlflow", action="store_true", help="skip the MLflow logging overhead")
    p.add_argument("--threads", type=int, help="torch.set_num_threads before measuring (default: torch's choice)")
    p.add_argument("--json", help="also write every number to this file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (2 if args.quick else 3)
    images_per_run = 25_600 if args.quick else 76_800
    dcgan_steps = args.dcgan_steps or (6 if args.quick else 20)
    batches = [int(b) for b in args.batches.split(",") if b]

    def log(msg: str) -> None:
        print(msg, flush=True)

    env = machine()
    log("gan-study throughput benchmark")
    for k, v in env.items():
        log(f"  {k}: {v}")

    data_dir = gan.resolve_data_dir()
    data = gan.load_mnist(data_dir)
    dataset = mnist_dataset(str(data_dir))
    configs = [(f"mlp_bs{b}", TrainConfig(arch="mlp", batch_size=b, device="cpu"), args.steps or max(10, images_per_run // b))
               for b in batches]
    if not args.no_dcgan:
        configs.append(("dcgan_bs64", TrainConfig(arch="dcgan", batch_size=64, device="cpu"), dcgan_steps))
    if not args.no_bf16:
        configs += [(f"{name}_bf16", cfg.replace(precision="bf16"), steps) for name, cfg, steps in configs
                    if name in ("mlp_bs256", "dcgan_bs64")]

    # The FLOP formula, checked once against torch's own counter on one step of gan.train.
    for name, cfg, _ in {c[0]: c for c in (configs[0], configs[-1])}.values():
        counted = counted_flops_per_image(lambda: gan.train(cfg.replace(budget=1), data), cfg.batch_size)
        analytic = train_flops_per_image(cfg)
        log(f"  {name}: {analytic / 1e6:.3f} MFLOP/image from the layer shapes, {counted / 1e6:.3f} counted by torch "
            "in one gan.train step")

    log(f"\nthroughput ({rounds} interleaved rounds each, best kept)")
    rows, results = [], {}
    for name, cfg, steps in configs:
        row, result = measure(name, cfg, data, dataset, steps, rounds, log)
        rows.append(row)
        results[name] = result

    extra: dict[str, dict] = {}
    if not args.skip_score:
        log("\nscoring 10,000 samples with every metric (cached evaluator and real stats)")
        generator = (results.get("mlp_bs256") or next(iter(results.values()))).generator
        extra["score_10k"] = measure_score(generator, data_dir, log)
    if not args.skip_mlflow:
        mlflow_steps = args.mlflow_steps or (600 if args.quick else 2000)
        log("\nMLflow logging in a trial (MLP, batch 64: the study's CurveLogger, sqlite store)")
        extra["mlflow"] = measure_mlflow(data, mlflow_steps, 64, rounds, log)

    log("\n" + table(rows))
    if "score_10k" in extra:
        s = extra["score_10k"]
        log(f"score(10,000 samples, all metrics): best {s['best_s']:.2f} s, median {s['median_s']:.2f} s (target <= 3 s)")
    if "mlflow" in extra:
        m = extra["mlflow"]
        log(f"MLflow logging overhead: {m['overhead_pct']:.1f} % of the trial's training time, median of the rounds "
            f"({m['on_s']:.2f} s on vs {m['off_s']:.2f} s off, {m['points_per_curve']} points per curve; target <= 5 %); "
            f"in CPU time {m['cpu_overhead_pct']:.1f} %")
        for name, w in m["what_if"].items():
            log(f"  what-if (not used by study/), {name}: {w['overhead_pct']:.1f} % ({w['seconds']:.2f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": env, "rows": [{**asdict(r), "speedup": r.speedup, "roofline_pct": r.roofline_pct,
                                                 "matmul_only_pct": r.matmul_only_pct} for r in rows], **extra}, f, indent=2)
    main_row = next((r for r in rows if r.name == "mlp_bs256"), rows[0])
    print(f"{main_row.name} speedup_vs_seed_style={main_row.speedup:.2f} roofline_pct={main_row.roofline_pct:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
