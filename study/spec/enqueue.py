"""A spec's ``enqueue:``: configurations the study tries first (e.g. the classic baseline).

Each entry maps space parameters to values, as Optuna records them: a choice's value (or its
label for a mapping choice), a number inside a range. Entries are checked like the space (the
parameters exist, the values are allowed, a conditional parameter is given only where it is
drawn, the config is valid) and enqueued with Optuna's ``enqueue_trial`` exactly once per
study: a study attribute marks them done, taken under the work folder's lock, so resumes and
extra workers do not enqueue them again. Parameters an entry leaves out are sampled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gan import ConfigError

from ..storage.record import StudyAttrs
from .space import SpecError, label_of

if TYPE_CHECKING:
    import optuna

    from .spec import StudySpec
    from ..storage.tracking import Stores

__all__ = ["enqueue_once", "parse_enqueue"]


def parse_enqueue(raw: Any, spec: StudySpec) -> tuple[dict[str, Any], ...]:
    """The checked entries of ``enqueue:`` as Optuna parameter values (in space order)."""
    if spec.sweep or spec.is_grid:
        raise SpecError("enqueue applies to a sampled space (tpe, random, cmaes, nsga2); a grid or sweep runs every point: remove enqueue")
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise SpecError(f"enqueue must be a non-empty list of mappings of space parameters to values, e.g. [{{optimizer: adam}}]; got {raw!r}")
    if len(raw) > spec.trials:
        raise SpecError(f"enqueue lists {len(raw)} configurations but the study has {spec.trials} trials: raise trials or enqueue fewer")
    params = {p.name: p for p in spec.space}
    out: list[dict[str, Any]] = []
    for i, entry in enumerate(raw):
        where = f"enqueue[{i}]"
        unknown = [k for k in entry if k not in params]
        if unknown:
            raise SpecError(f"{where}: {unknown[0]!r} is not a space parameter; parameters: {', '.join(params)}")
        values: dict[str, Any] = {}
        overrides: dict[str, Any] = {}
        drawn_labels: dict[str, Any] = {}
        for p in spec.space:
            if p.name not in entry:
                if p.choices is not None and p.active(drawn_labels):
                    drawn_labels[p.name] = None  # sampled: its conditions on it cannot be checked here
                continue
            if not p.active(drawn_labels):
                conditions = ", ".join(f"{k} in {list(v)}" for k, v in p.when)
                raise SpecError(f"{where}.{p.name}: this parameter is drawn only when {conditions}, not in this entry: remove it")
            value = _value(p, entry[p.name], f"{where}.{p.name}")
            values[p.name] = value
            if p.choices is not None:
                drawn_labels[p.name] = value
                overrides.update(p.decode(value))
            else:
                overrides[p.name] = value
        try:
            spec.config_for(overrides, seed=0)
        except ConfigError as exc:
            raise SpecError(f"{where}: {exc}") from exc
        if values in out:
            raise SpecError(f"{where} repeats enqueue[{out.index(values)}]: list each configuration once")
        out.append(values)
    return tuple(out)


def _value(p, value: Any, where: str) -> Any:
    if p.choices is not None:
        label = label_of(value)
        if label not in p.labels():
            raise SpecError(f"{where}: {value!r} is not one of its choices {list(p.labels())}")
        return p.labels()[p.labels().index(label)]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (isinstance(value, int) or not p.integer)
    if not ok or not p.low <= value <= p.high:
        kind = "a whole number" if p.integer else "a number"
        raise SpecError(f"{where}: {value!r} is not {kind} in its range [{p.low}, {p.high}]")
    return int(value) if p.integer else float(value)


def enqueue_once(study: optuna.Study, spec: StudySpec, stores: Stores) -> int:
    """Enqueue the spec's entries unless this study already has; returns how many were added."""
    if not spec.enqueue:
        return 0
    with stores.lock("enqueue", when=stores.embedded):
        if study.user_attrs.get(StudyAttrs.ENQUEUED) is not None:
            return 0
        for params in spec.enqueue:
            # skip_if_exists: a half-done earlier attempt (killed before the marker) is not repeated
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr(StudyAttrs.ENQUEUED, len(spec.enqueue))
    return len(spec.enqueue)
