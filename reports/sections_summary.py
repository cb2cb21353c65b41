"""Section 1 of a report: what was run, on what, for how long, and scored by which evaluator."""

from __future__ import annotations

import statistics

from .data import StudyData, TrialInfo, finite
from .doc import Block, Bullets, Code, Heading, Table, Text

__all__ = ["evaluator_rows", "evaluator_warning", "summary", "trials_row"]


def _duration(seconds: float | None) -> str:
    if seconds is None or not finite(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def trials_row(trials: list[TrialInfo], target: str, states: str) -> str:
    """How many trials ran against the study's target; retries of failed trials count apart,
    since they run a configuration again rather than add one ("24 of 24", not "26 of 24")."""
    retries = sum(t.retry_of is not None for t in trials)
    again = f" and {retries} retr{'y' if retries == 1 else 'ies'} of failed ones" if retries else ""
    return f"{len(trials) - retries}{f' of {target}' if target else ''}{again}: {states}"


def summary(data: StudyData) -> list[Block]:
    spec, raw = data.spec, data.spec_raw
    counts = {s: len(data.by_state(s)) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    inv = data.invocations[0]["params"] if data.invocations else {}
    sampler = spec.sampler if spec else inv.get("sampler", "unknown")
    if spec and spec.sampler != "grid":
        sampler += f" (seed {spec.sampler_seed})"
    pruner = spec.pruner if spec else inv.get("pruner", "unknown")
    if spec and spec.pruner == "median":
        pruner += f" (warm-up: {spec.pruner_warmup_evals} evaluation{'s' * (spec.pruner_warmup_evals != 1)})"
    kind = (
        f"one-factor sweep: {len(spec.sweep)} points"
        if spec and spec.sweep
        else f"search over {len(spec.space)} parameter{'s' * (len(spec.space) != 1)}"
        if spec
        else "unknown"
    )
    ended = [t for t in data.trials if t.state in ("COMPLETE", "PRUNED", "FAIL") and t.duration_s is not None]
    complete_durations = [t.duration_s for t in data.complete if t.duration_s is not None]
    train = sum(sum(r.get("train_seconds", 0) for r in t.repeat_metrics) or t.metrics.get("train_seconds", 0) * max(t.n_repeats, 1) for t in data.trials)
    starts = [t.started for t in data.trials if t.started]
    overlap = any((t.population or 1) > t.n_repeats for t in data.trials)  # other trials trained beside it
    span = None
    if starts:
        last = max((t.started.timestamp() + (t.duration_s or 0)) for t in data.trials if t.started)
        span = last - min(s.timestamp() for s in starts)
    env = data.environment or {}
    device = env.get("device", "unknown (no final/metrics.json of a complete trial)")
    if env.get("device_name"):
        device += f" ({env['device_name']})"
    software = ", ".join(f"{k} {env[k]}" for k in ("torch", "python") if k in env)
    states = ", ".join(f"{counts[s]} {name}" for s, name in (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"), ("RUNNING", "running"), ("WAITING", "waiting")) if counts[s] or s in ("COMPLETE", "PRUNED", "FAIL"))
    target = inv.get("target_trials") or (str(spec.trials) if spec else "")
    rows = [
        ["study", data.name],
        ["spec", f"{raw.get('name', '?')}: {' '.join(str(raw.get('description', '')).split())}".rstrip(": ")],
        ["kind", kind],
        ["objective", ", ".join(f"{m} ({d})" for m, d in data.objectives)],
        ["sampler", sampler],
        ["pruner", pruner],
        ["budget", f"{spec.budget:g} {spec.budget_unit} per training run" if spec else inv.get("budget", "")],
        ["evaluation", f"every {spec.eval_every} steps on {spec.eval_samples:,} samples; final on {spec.final_samples:,}" if spec else ""],
        ["repeats", f"{data.repeats} seed{'s' * (data.repeats != 1)} per configuration" + ("; tables show mean ± 95 % t-interval" if data.repeats > 1 else "")],
        ["trials", trials_row(data.trials, target, states)],
        ["compute time", f"{_duration(sum(t.duration_s for t in ended))} in ended trials; {_duration(train)} of that training (all repeats)"
                         + ("; trials trained in one population overlap, so these sums exceed the wall clock" if overlap else "")],
        ["per trial", f"mean {_duration(statistics.fmean(complete_durations))}, median {_duration(statistics.median(complete_durations))} (complete trials)" if complete_durations else "—"],
        ["wall clock", f"{_duration(span)} from the first trial's start to the last trial's end" if span is not None else "—"],
        ["device", device + (f"; {software}" if software else "")],
        ["invocations", f"{len(data.invocations)} (gan-study run/worker)" + (f"; jobs {', '.join(sorted({i['params'].get('jobs', '?') for i in data.invocations}))}" if data.invocations else "")],
    ]
    rows += evaluator_rows(data)
    blocks: list[Block] = [Heading("1. Summary"), Table(["", ""], [r for r in rows if r[1]], numeric=[False, False])]
    warning = evaluator_warning(data)
    if warning:
        blocks.append(Bullets([warning]))
    if raw:
        import yaml

        blocks += [Text("The spec as stored with the study:"), Code(yaml.safe_dump(raw, sort_keys=False), "yaml")]
    return blocks


def _evaluators(data: StudyData) -> dict[str, list[int]]:
    """weights hash -> numbers of the trials it scored (trials that recorded an evaluator card)."""
    out: dict[str, list[int]] = {}
    for t in data.trials:
        if t.evaluator and t.evaluator.get("weights_hash"):
            out.setdefault(str(t.evaluator["weights_hash"]), []).append(t.number)
    return out


def evaluator_rows(data: StudyData) -> list[list[str]]:
    """The evaluator card: what scored the samples, how good it is, which weights exactly."""
    cards = [t.evaluator for t in sorted(data.trials, key=lambda t: t.number) if t.evaluator]
    if not cards:
        return [["evaluator", "not recorded (trials of an older gan-study)"]]
    card = cards[-1]  # the newest trial's scorer
    acc, loss = card.get("test_accuracy"), card.get("test_loss")
    quality = []
    if finite(acc):
        quality.append(f"test accuracy {100 * acc:.2f} %")
    if finite(loss):
        quality.append(f"test loss {loss:.4f}")
    if finite(card.get("train_seconds")):
        quality.append(f"trained in {_duration(card['train_seconds'])}")
    return [
        ["evaluator", str(card.get("architecture", "?"))],
        ["evaluator quality", ", ".join(quality) + " (MNIST test split)" if quality else "—"],
        ["evaluator weights", f"sha256 {str(card.get('weights_hash', ''))[:16]}…; recipe {str(card.get('recipe_key', ''))[:12]}; "
                              f"{card.get('source') or 'trained on first use (before the pinned weights)'}"],
    ]


def evaluator_warning(data: StudyData) -> str:
    """A warning when trials were scored by different evaluator weights: their scores do not compare."""
    hashes = _evaluators(data)
    if len(hashes) < 2:
        return ""
    parts = "; ".join(f"{h[:12]}…: trials {', '.join(map(str, sorted(n)))}" for h, n in hashes.items())
    return (f"Warning: this study's trials were scored by {len(hashes)} different evaluators (different weights; e.g. trained "
            f"on different machines), so their metrics are not strictly comparable: {parts}.")
