"""The final summary of ``gan-study run``: trial counts, the study's and the command's wall
time, the best trial with the real-data floor beside each metric, the registered model, the stores."""

from __future__ import annotations

from typing import Any

from ..trials.progress import clock, step

__all__ = ["floor_samples", "real_floors", "summary_lines"]


def floor_samples(spec: Any) -> int:
    """The floors' sample count: the trials' final one (as the report's, so they share a cache file)."""
    return min(max(int(spec.final_samples), 10), 60_000)


def real_floors(spec: Any, data_dir: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The real-data floor of every metric at the trials' final sample count (as the report's,
    from the same cache), or None and why not."""
    n = floor_samples(spec)
    try:
        with step(f"real-data floors ({n:,} MNIST training images scored like a trial's samples)"):
            from gan.evaluator import load_evaluator
            from gan.metrics import floors

            return dict(floors(load_evaluator(data_dir, source=spec.evaluator), data_dir, n=n, seed=0)), None
    except Exception as exc:  # noqa: BLE001 - a summary without floors beats no summary
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"(real-data floors not shown: {type(exc).__name__}: {first})"


def summary_lines(result: Any, spec: Any, stores: Any, wall: float, data_dir: str | None) -> list[str]:
    """The final summary of ``run``: counts and times, the best trial with the floor beside each
    metric, the registered model, the stores."""
    from gan import metrics as gm

    lines = [f"study {result.study_name}: {result.complete} complete, {result.pruned} pruned, {result.failed} failed "
             f"in {result.seconds:.0f} s (wall time {clock(wall)})"]
    if result.enqueued:
        lines.append(f"enqueued the spec's {result.enqueued} configuration(s) to try first")
    if result.best:
        metrics = result.best["metrics"]
        floors, note = real_floors(spec, data_dir)

        def shown(name: str) -> str:
            floor = (floors or {}).get(name)
            beside = f" (floor {floor:.4g})" if isinstance(floor, (int, float)) and not isinstance(floor, bool) else ""
            return f"{name}={metrics[name]:.4g}{beside}"

        names = [m.name for m in gm.metrics_of("score", shown=True) if m.name in metrics]
        lines.append(f"best trial {result.best['number']}: {', '.join(shown(n) for n in names)}")
        if note:
            lines.append(note)
        elif floors:
            lines.append(f"(floor: what {floor_samples(spec):,} real MNIST training digits score, scored like a trial's samples)")
    if result.registered:
        lines.append(f"best generator registered as model {result.study_name!r} version {result.registered}; "
                     f"draw from it with 'gan-study sample {result.study_name}'")
    lines.append(f"stores: {stores.workdir if stores.embedded else '(remote)'}; see 'gan-study status {result.study_name}'")
    return lines
