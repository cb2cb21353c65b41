"""Upper bounds on every number of an input that sizes memory, processes or output, in one place.

Each is checked before anything starts (no store written, no process spawned, nothing trained)
and refused with exit 2 and one line that names the value and the fix. Issue #27: `--jobs 100000`
started one process per job, each importing torch, until the OOM killer took other processes of
the machine with it; `fixed: {batch_size: 1000000000}` was accepted, then failed every trial.

A bound guards against a typo: it sits far above any use measured here, and is not a tuning knob.
The checks return the problem as one line (None when there is none) and raise nothing, so that
this module imports no torch: ``gan-study run quick --jobs 100000`` is refused in milliseconds,
before the CLI loads torch (2 s). Callers raise their own error classes with the line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gan import TrainConfig

    from .spec import StudySpec

__all__ = ["jobs_problem", "machine_memory", "spec_problem", "training_memory_problem"]

GiB = 1 << 30

# -- the training data ------------------------------------------------------------------------
TRAIN_IMAGES = 60_000
"""MNIST's training split (``gan.data`` refuses files of any other size). A discriminator update
draws its real batch from it without replacement (``gan.train``: a larger batch fails every
trial), and the real-data floor at a study's final sample count draws that many of its images
(``gan.metrics.floors``)."""

# -- processes --------------------------------------------------------------------------------
JOBS_PER_CORE = 4
"""``--jobs``: worker processes per usable core. Each worker is a process with its own torch;
past one per core they only oversubscribe the cores (docs/performance.md: 4 workers on 2 cores
train fewer images per second than 2), so 4 per core is a typo, never a choice."""
JOBS_PER_GPU = 8
"""``--jobs`` on CUDA: every worker trains on the one device ``cuda`` names, each with its own
CUDA context (about 0.5 GB of the GPU's memory) time-slicing the GPU; the GPU target measured
in docs/performance.md is 4 concurrent trials on one GPU."""
WORKER_BYTES = 1 * GiB
"""Host memory of one worker before it trains: 0.97 GiB RSS measured (torch, MNIST's training
images as float32, the evaluator and its real-data statistics, Optuna, MLflow)."""
CUDA_CONTEXT_BYTES = GiB // 2
"""GPU memory a worker holds before it trains: its CUDA context, about 0.5 GB."""

# -- training memory --------------------------------------------------------------------------
MEMORY_MARGIN = 1.5
"""A training step's peak memory over the activations autograd saves for it: measured 1.04 (MLP)
and 1.19 (DCGAN) on the CPU at batches of 4k-16k real images; 1.5 leaves the allocator slack."""
PARAM_COPIES = 5
"""Copies of each weight during training: the weight, its gradient, Adam's two moments, and G's
average under ``g_ema``."""
SAMPLE_BYTES = 4096
"""Memory of one scored sample: the image as float32 (3 KiB) and its evaluator outputs."""
MODEL_FIELDS = ("arch", "latent_dim", "noise", "g_hidden", "g_channels", "g_stem", "g_batchnorm", "g_slope", "g_output",
                "g_output_leaky", "d_hidden", "d_channels", "d_dropout_layers", "d_slope", "d_output_leaky", "data_scaling",
                "self_attention")
"""The config fields ``gan.models`` builds G and D from, less those that do not change what a
training step saves per image (spectral norm normalises the weights, once a step; dropout's rate,
where it is not 0): configs equal in these, and in whether D has dropout, save equal activations."""

# -- study sizes ------------------------------------------------------------------------------
MAX_SAMPLES = TRAIN_IMAGES
"""``evaluation.samples``, ``evaluation.final_samples`` and ``gan-study sample -n``. A scoring
holds its samples, their features and k-NN distance blocks; the real-data floor the report sets
beside the final scores draws as many training images, so more than 60,000 cannot be compared."""
MAX_TRIALS = 10_000
"""``trials``, ``--trials`` and a sweep's or grid's points: every worker reads every trial of the
study between trials, TPE's ask is linear in the trials so far, and the report draws each one.
The largest built-in spec (full) has 200."""
MAX_REPEATS = 100
"""``repeats``: a trial trains and logs one run per repeat (an MLflow run with its artifacts);
the seeds spec uses 3."""
MAX_POPULATION = 64
"""``population``: K runs trained as one batched model hold K copies of every weight and
activation; docs/performance.md measured up to K = 8."""
MAX_EVALUATIONS = 1_000
"""Evaluations per training run (its budget's steps / ``evaluation.every``): each one generates
and scores ``evaluation.samples`` images, logs a sample grid to MLflow, and the report draws it;
the schedule itself is a set of steps built before training (``gan.train``)."""
MAX_FACTORS = 50
"""A sweep's factors or a search space's parameters: the report draws up to five figures per
factor (its row, evaluation curves, sample and progress strips, class shares); seeds has 12."""
MAX_FACTOR_VALUES = 20
"""A sweep factor's values or a choice parameter's choices: the report draws a class-share panel
per value, four to a row, in one figure scaled onto one PDF page (20 values: 5 rows); seeds'
largest factor has 4 values, full's largest choice 5."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def machine_memory() -> int | None:
    """This machine's memory in bytes (less where a cgroup limits it); None where unknown."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as handle:
                limit = handle.read().strip()
        except OSError:
            continue
        if limit.isdigit() and 0 < int(limit) < total:
            total = int(limit)
    return total if total > 0 else None


def _a(arch: str) -> str:
    return {"mlp": "an MLP", "dcgan": "a DCGAN"}.get(arch, f"arch={arch}")


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def jobs_problem(jobs: int, cores: int | None = None, memory: int | None = -1) -> str | None:
    """Why ``--jobs jobs`` is refused on this machine (cores, host memory), or None. Imports no torch."""
    if jobs < 1:
        return f"--jobs must be >= 1, got --jobs {jobs}"
    cores = cores or usable_cores()
    most = JOBS_PER_CORE * cores
    if jobs > most:
        return (f"--jobs {jobs} asks for more worker processes than this machine can run: at most {most} "
                f"({JOBS_PER_CORE} per core, {cores} core{'s' if cores > 1 else ''}); use --jobs {cores} (one per core) or fewer")
    memory = machine_memory() if memory == -1 else memory
    if jobs > 1 and memory is not None and jobs * WORKER_BYTES > memory:  # one worker is the run itself
        fit = max(1, memory // WORKER_BYTES)
        return (f"--jobs {jobs} needs about {_gib(jobs * WORKER_BYTES)} of memory for its worker processes "
                f"({_gib(WORKER_BYTES)} each) and this machine has {_gib(memory)}: use --jobs {fit} or fewer")
    return None


def gpu_jobs_problem(jobs: int) -> str | None:
    """Why ``--jobs jobs`` is refused for workers that all train on one GPU, or None."""
    if jobs > JOBS_PER_GPU:
        return (f"--jobs {jobs} puts {jobs} worker processes on one GPU, each with its own CUDA context: "
                f"at most {JOBS_PER_GPU}; use --jobs 4 or fewer (or --device cpu)")
    return None


# -- the spec ---------------------------------------------------------------------------------
def spec_configs(spec: StudySpec) -> Iterator[tuple[str, TrainConfig]]:
    """(where, config) for each value the spec can train: the fixed values, every sweep point,
    and each space value (range end or choice) in the first valid config where it is drawn.

    A search's values are taken one at a time (as ``space.check_values`` does), not in every
    combination: a bound on a product of two parameters is checked on each factor's extreme.
    """
    from gan import ConfigError

    from .space import condition_bases  # here, not at the top: space imports gan (torch), which this module never needs to refuse a size

    try:
        yield "fixed", spec.config_for({}, seed=0)
    except ConfigError:
        pass  # valid only beside some choice: its values are checked with those choices below
    for point in spec.sweep:
        if point.label != "baseline":
            yield f"sweep point {point.label}", spec.config_for(point.overrides, seed=0)
    others = [p.decode(label) for p in spec.space if p.choices is not None for label in p.labels()]
    for p in spec.space:
        if p.choices is None:
            values = [(f"space.{p.name}.{end}={getattr(p, end)}", {p.name: getattr(p, end)}) for end in ("low", "high")]
        else:
            values = [(f"space.{p.name}={label!r}", p.decode(label)) for label in p.labels()]
        for where, overrides in values:
            for base in [{**b, **c} for b in [{}, *others] for c in condition_bases(spec.space, p)]:
                try:
                    yield where, spec.config_for({**base, **overrides}, seed=0)
                    break
                except ConfigError:
                    continue


def spec_problem(spec: StudySpec) -> str | None:
    """Why ``spec`` is refused on any machine (its sizes; training data against its batches and
    evaluations), or None."""
    from gan.metrics import K

    if spec.trials > MAX_TRIALS:
        return f"trials={spec.trials} is more trials than a study holds: use trials <= {MAX_TRIALS}"
    if spec.repeats > MAX_REPEATS:
        return f"repeats={spec.repeats} is more than a trial trains: use repeats <= {MAX_REPEATS}"
    if spec.population is not None and spec.population > MAX_POPULATION:
        return f"population={spec.population} is more runs than train as one model: use population <= {MAX_POPULATION} (or auto)"
    for key, n in (("evaluation.samples", spec.eval_samples), ("evaluation.final_samples", spec.final_samples)):
        if not K < n <= MAX_SAMPLES:
            why = (f"scoring needs more than {K} samples (their k-NN precision and recall)" if n <= K else
                   f"more than MNIST's {TRAIN_IMAGES} training images, which the real-data floors draw")
            return f"{key}={n}: {why}; use {K + 1} <= {key.split('.')[1]} <= {MAX_SAMPLES}"
    factors = _factors(spec)
    if len(factors) > MAX_FACTORS:
        return f"{'the sweep has' if spec.sweep else 'space has'} {len(factors)} factors and the report draws figures for each: use at most {MAX_FACTORS}"
    for name, count in factors.items():
        if count > MAX_FACTOR_VALUES:
            return f"{name} has {count} values and the report draws a panel for each: use at most {MAX_FACTOR_VALUES} (or a range)"
    for where, cfg in spec_configs(spec):
        if cfg.real_batch > TRAIN_IMAGES:
            most = TRAIN_IMAGES * (2 if cfg.batch_counts == "total" else 1)
            return (f"{where}: batch_size={cfg.batch_size} takes {cfg.real_batch} real images per discriminator update, "
                    f"more than MNIST's {TRAIN_IMAGES} training images: use batch_size <= {most}")
        evaluations = (cfg.total_steps(TRAIN_IMAGES) - 1) // spec.eval_every
        if evaluations > MAX_EVALUATIONS:
            steps = cfg.total_steps(TRAIN_IMAGES)
            return (f"{'' if where == 'fixed' else where + ': '}evaluation.every={spec.eval_every} evaluates each run {evaluations} times in its "
                    f"{steps} steps: at most {MAX_EVALUATIONS}; use evaluation.every >= {math.ceil(steps / (MAX_EVALUATIONS + 1))} "
                    f"or a smaller budget")
    return None


def _factors(spec: StudySpec) -> dict[str, int]:
    """What the report compares: each sweep factor's values, or each space parameter's choices."""
    if spec.sweep:
        counts: dict[str, int] = {}
        for point in spec.sweep:
            if point.factor != "baseline":
                counts[f"sweep.factors.{point.factor}"] = counts.get(f"sweep.factors.{point.factor}", 0) + 1
        return counts
    return {f"space.{p.name}": len(p.choices) if p.choices is not None else 0 for p in spec.space}


# -- training memory against this machine ----------------------------------------------------------
def activation_bytes(cfg: TrainConfig) -> tuple[int, int]:
    """(bytes autograd saves per real image of a training step, bytes of G's and D's weights) of
    ``cfg``'s networks: G on a batch of noise and D on as many generated and real images, traced
    at two batch sizes (2 and 4 images) so the weights autograd also saves cancel out:
    milliseconds on an idle CPU. (The meta device would skip the arithmetic, but its first use
    imports torch's reference kernels: longer than these few images take.)"""
    import torch

    import gan

    def saved(n: int) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fake = generator(torch.randn(n, cfg.latent_dim))
            discriminator(torch.cat([fake, torch.zeros_like(fake)]))
        return total

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few images: on a busy machine, waking a thread pool costs more than the arithmetic
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
            torch.manual_seed(0)
            generator, discriminator = gan.build_models(cfg)
            per_image = (saved(4) - saved(2)) // 2
    finally:
        torch.set_num_threads(threads)
    weights = sum(p.numel() * p.element_size() for m in (generator, discriminator) for p in m.parameters())
    return per_image, weights


def training_memory_problem(spec: StudySpec, jobs: int, device: Any) -> str | None:
    """Why ``spec`` trained by ``jobs`` workers on ``device`` would not fit this machine's memory
    (or its GPU's), or None. The estimate per worker: K runs at once (the population) of the
    largest real batch, each image costing what autograd saves for it times ``MEMORY_MARGIN``,
    plus K × ``PARAM_COPIES`` copies of the weights and the scored samples."""
    cuda = getattr(device, "type", str(device)) == "cuda"
    if cuda:
        import torch

        memory = torch.cuda.get_device_properties(device.index or 0).total_memory
        base, where_memory = CUDA_CONTEXT_BYTES + TRAIN_IMAGES * 28 * 28 * 4, "its GPU has"
    else:
        memory = machine_memory()
        base, where_memory = WORKER_BYTES, "this machine has"
    if memory is None:
        return None
    workers = max(1, min(jobs, math.ceil(spec.trials / spec.trials_at_once)))
    runs = min(spec.runs_at_once, spec.trials_at_once * spec.repeats)
    traced: dict[tuple, tuple[int, int]] = {}
    worst, worst_where, heaviest, largest, search = 0.0, "", (0, 0, ""), (0, ""), not spec.sweep
    for where, cfg in spec_configs(spec):
        key = (*(getattr(cfg, f) for f in MODEL_FIELDS), cfg.d_dropout > 0)
        if key not in traced:
            traced[key] = activation_bytes(cfg)
        per_image, weights = traced[key]
        one = MEMORY_MARGIN * cfg.real_batch * per_image + PARAM_COPIES * weights
        if one > worst:
            worst, worst_where = one, f"batch_size={cfg.batch_size} of {_a(cfg.arch)}" + ("" if where == "fixed" else f" ({where})")
        # A search combines its values: its heaviest network may meet its largest batch.
        if per_image > heaviest[0]:
            heaviest = (per_image, weights, f"{_a(cfg.arch)} ({where})")
        if cfg.real_batch > largest[0]:
            largest = (cfg.real_batch, f"batch_size={cfg.batch_size} ({where})")
    if search and heaviest[2] and largest[1]:
        combined = MEMORY_MARGIN * largest[0] * heaviest[0] + PARAM_COPIES * heaviest[1]
        if combined > worst:
            worst, worst_where = combined, f"{largest[1]} with {heaviest[2]}"
    per_worker = base + runs * worst + max(spec.eval_samples, spec.final_samples) * SAMPLE_BYTES
    if workers * per_worker <= memory:
        return None
    each = f"{_gib(per_worker)} per worker × {workers} workers, " if workers > 1 else ""
    return (f"training {worst_where or 'this spec'} needs about {_gib(workers * per_worker)} of memory ({each}{runs} "
            f"run{'s' if runs > 1 else ''} at once) and {where_memory} {_gib(memory)}: lower batch_size, population or --jobs")
