"""A spec's search space and sweep: config fields, choices, ranges, sweep points, and the checks
that every value is valid (against ``TrainConfig``'s own rules) before anything trains."""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gan import FIELDS, ConfigError, TrainConfig
from gan.errors import GanStudyError

if TYPE_CHECKING:
    from .spec import StudySpec

__all__ = ["Param", "SpecError", "SweepPoint", "active_labels", "condition_bases", "field_kind", "label_of"]

RESERVED = ("seed", "device", "budget", "budget_unit")
SPACE_FIELDS = tuple(f for f in FIELDS if f not in RESERVED)
MAX_CHECKED_COMBINATIONS = 20_000


class SpecError(GanStudyError):
    """A study spec is invalid."""


@dataclass(frozen=True)
class Param:
    """One search-space dimension: choices, or a numeric range."""

    name: str
    choices: tuple[Any, ...] | None = None
    """Plain values, or mappings of several config fields (encoded as labels for Optuna)."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Conditions (earlier parameter, its labels that activate this one); all must hold. An
    inactive parameter is never sampled: its config field keeps the fixed or default value."""

    def active(self, labels: dict[str, Any]) -> bool:
        """Whether this parameter is drawn, given the labels drawn so far (inactive ones absent)."""
        return all(name in labels and labels[name] in allowed for name, allowed in self.when)

    def labels(self) -> tuple[Any, ...]:
        assert self.choices is not None
        return tuple(label_of(c) for c in self.choices)

    def decode(self, value: Any) -> dict[str, Any]:
        """Config fields set by the sampled ``value``."""
        if self.choices is not None and any(isinstance(c, dict) for c in self.choices):
            return dict(self.choices[self.labels().index(value)])
        return {self.name: value}


@dataclass(frozen=True)
class SweepPoint:
    label: str
    factor: str
    """The factor swept at this point ('baseline' for the common baseline)."""
    value: str
    overrides: dict[str, Any]
    """Config fields this point sets; ``budget``/``budget_unit`` too where its factor has a budget."""
    own_baseline: bool = False
    """Its factor is compared within itself, not with the common baseline: the factor has a budget
    of its own, or all its values share a setting the baseline lacks (self-attention on a DCGAN)."""


def label_of(value: Any) -> Any:
    """Optuna-storable label of a choice: the value itself, or 'k=v,...' for a mapping."""
    if isinstance(value, dict):
        return ",".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return value


def _fmt(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _mapping(value: Any, key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{key} must be a mapping with keys {', '.join(defaults)}; got {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise SpecError(f"{key}: unknown key(s) {unknown}; allowed: {', '.join(defaults)}")
    return {**defaults, **value}


def _fields(values: Any, key: str, check: bool = True) -> dict[str, Any]:
    """Config field values under ``key``; ``check`` also validates them on their own."""
    if not isinstance(values, dict):
        raise SpecError(f"{key} must be a mapping of training config fields; got {values!r}")
    for name in values:
        if name in RESERVED:
            raise SpecError(f"{key}.{name} is set by the study (seed, --device, budget), not by {key}: remove it")
        if name not in SPACE_FIELDS:
            raise SpecError(f"{key}.{name} is not a training config field; fields: {', '.join(SPACE_FIELDS)}")
    if not check:
        return dict(values)
    try:
        TrainConfig.from_dict(values)
    except ConfigError as exc:
        raise SpecError(f"{key}: {exc}") from exc
    return dict(values)


def parse_space(raw: Any) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        raise SpecError(f"space must be a mapping of name -> choices or range; got {raw!r}")
    params: list[Param] = []
    for name, value in raw.items():
        where = f"space.{name}"
        if isinstance(value, list):
            value = {"choices": value}
        if not isinstance(value, dict):
            raise SpecError(f"{where} must be a list of choices or {{low, high[, log]}}; got {value!r}")
        when = _when(value.get("when"), where, params) if "when" in value else ()
        value = {k: v for k, v in value.items() if k != "when"}
        if "choices" in value:
            extra = sorted(set(value) - {"choices"})
            if extra:
                raise SpecError(f"{where}: unknown key(s) {extra} beside choices")
            choices = value["choices"]
            if not isinstance(choices, list) or not choices:
                raise SpecError(f"{where}: choices must be a non-empty list; got {choices!r}")
            for choice in choices:
                # values are checked in combination below (self_attention needs arch=dcgan, ...)
                if isinstance(choice, dict):
                    _fields(choice, where, check=False)
                else:
                    _fields({name: choice}, "space", check=False)
            labels = [label_of(c) for c in choices]
            if len(set(map(repr, labels))) != len(labels):
                raise SpecError(f"{where}: choices repeat a value: {labels}")
            params.append(Param(name, choices=tuple(choices), when=when))
            continue
        extra = sorted(set(value) - {"low", "high", "log"})
        if extra:
            raise SpecError(f"{where}: unknown key(s) {extra}; a range has low, high and log")
        _fields({name: None}, "space", check=False)  # a training config field, not one the study sets
        low, high, log = value.get("low"), value.get("high"), value.get("log", False)
        for bound, b in (("low", low), ("high", high)):
            if not isinstance(b, (int, float)) or isinstance(b, bool) or not math.isfinite(b):
                raise SpecError(f"{where}.{bound} must be a finite number; got {b!r}")
        # int or float comes from the config field, not from how the YAML number is written
        kind = field_kind(name)
        if kind is None:
            raise SpecError(f"{where}: {name} is not a numeric field, so it takes no range: give it choices: [...]")
        if kind is int:
            for bound, b in (("low", low), ("high", high)):
                if not isinstance(b, int):
                    raise SpecError(f"{where}.{bound}={b!r}: {name} is an int field, so its range needs whole-number bounds")
        else:
            low, high = float(low), float(high)
        if low > high:
            raise SpecError(f"{where}: low must be <= high; got low={low}, high={high}")
        if not isinstance(log, bool):
            raise SpecError(f"{where}.log must be true or false; got {log!r}")
        if log and low <= 0:
            raise SpecError(f"{where}: a log range needs low > 0; got low={low}")
        params.append(Param(name, low=low, high=high, log=log, integer=kind is int, when=when))
    return tuple(params)


def _when(raw: Any, where: str, earlier: list[Param]) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``when: {param: value | [values]}``: each param a choice parameter listed above this one,
    each value one of its choices (labels, as Optuna records them)."""
    choice_params = {p.name: p for p in earlier if p.choices is not None}
    above = ", ".join(choice_params) or "none"
    if not isinstance(raw, dict) or not raw:
        raise SpecError(f"{where}.when must map a choice parameter above it to a value or a list of values, "
                        f"e.g. when: {{arch: dcgan}}; got {raw!r}")
    out = []
    for parent, values in raw.items():
        if parent not in choice_params:
            why = "is a range" if any(p.name == parent for p in earlier) else "is not a choice parameter listed above it"
            raise SpecError(f"{where}.when: {parent!r} {why}: a condition names a choice parameter defined earlier in space ({above})")
        allowed = choice_params[parent].labels()
        values = values if isinstance(values, list) else [values]
        if not values:
            raise SpecError(f"{where}.when.{parent} must name at least one of {list(allowed)}")
        for v in values:
            if label_of(v) not in allowed:
                raise SpecError(f"{where}.when.{parent}: {v!r} is not one of {parent}'s choices {list(allowed)}")
        out.append((parent, tuple(label_of(v) for v in values)))
    return tuple(out)


def active_labels(space: tuple[Param, ...], labels: dict[str, Any]) -> dict[str, Any]:
    """The labels of the parameters that are drawn when the choices take ``labels`` (in order)."""
    out: dict[str, Any] = {}
    for p in space:
        if p.name in labels and p.active(out):
            out[p.name] = labels[p.name]
    return out


def field_kind(name: str) -> type | None:
    """``int`` or ``float`` for a numeric training config field (from its type), else None."""
    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = {a for a in typing.get_args(hint) if a is not type(None)} if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    return next(iter(kinds)) if len(kinds) == 1 and next(iter(kinds)) in (int, float) else None


def parse_sweep(raw: Any, fixed: dict[str, Any]) -> tuple[dict[str, Any], tuple[SweepPoint, ...], dict[str, str]]:
    raw = _mapping(raw, "sweep", {"baseline": {}, "factors": {}})
    baseline = {**fixed, **_fields(raw["baseline"] or {}, "sweep.baseline")}
    factors = raw["factors"]
    if not isinstance(factors, dict) or not factors:
        raise SpecError(f"sweep.factors must map each factor to a non-empty list of values; got {factors!r}")
    base_cfg = _config(baseline, "sweep.baseline")
    points = [SweepPoint("baseline", "baseline", "baseline", {})]
    baseline_values: dict[str, str] = {}
    for factor, entry in factors.items():
        where = f"sweep.factors.{factor}"
        values, budget = _factor_entry(entry, where)
        first, settings = len(points), []
        for value in values:
            overrides = dict(value) if isinstance(value, dict) else {factor: value}
            shown = str(overrides.pop("label")) if "label" in overrides else _sweep_value_label(factor, overrides)
            _fields(overrides, where)
            settings.append(dict(overrides))
            overrides.update(budget)
            cfg = _config({**baseline, **overrides}, f"{where} value {label_of(value)!r}")
            # A value equal to the baseline runs once, as the baseline point; a factor with a budget
            # of its own runs all its values, its baseline value included, at that budget.
            if cfg == base_cfg and not budget:
                baseline_values[factor] = shown
                continue
            label = f"{factor}={shown}"
            if any(p.label == label for p in points):
                raise SpecError(f"{where}: value {label_of(value)!r} appears twice")
            points.append(SweepPoint(label, factor, shown, overrides))
        if budget or _share_a_setting(settings, base_cfg):
            points[first:] = [dataclasses.replace(p, own_baseline=True) for p in points[first:]]
    return baseline, tuple(points), baseline_values


def _share_a_setting(overrides: list[dict[str, Any]], base: TrainConfig) -> bool:
    """Whether a factor's values (two or more) all set one field to one value the baseline lacks."""
    if len(overrides) < 2:
        return False
    shared = {k: v for k, v in overrides[0].items() if all(k in o and o[k] == v for o in overrides)}
    return any(TrainConfig.from_dict({**base.to_dict(), k: v}) != base for k, v in shared.items())


def _factor_entry(entry: Any, where: str) -> tuple[list[Any], dict[str, Any]]:
    """A factor's values, and the budget fields of ``{values: [...], budget: {epochs: N}}``."""
    budget: dict[str, Any] = {}
    if isinstance(entry, dict):
        unknown = set(entry) - {"values", "budget"}
        if unknown or "values" not in entry:
            raise SpecError(f"{where} must be a list of values or {{values: [...], budget: {{epochs: N}}}}; got keys {sorted(entry)}")
        if "budget" in entry:
            amount, unit = parse_budget(entry["budget"], f"{where}.budget")
            budget = {"budget": amount, "budget_unit": unit}
        entry = entry["values"]
    if not isinstance(entry, list) or not entry:
        raise SpecError(f"{where} must be a non-empty list of values; got {entry!r}")
    return entry, budget


def parse_budget(value: Any, where: str = "budget") -> tuple[float, str]:
    """``{steps: N}`` or ``{epochs: N}`` as (amount, unit)."""
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("steps", "epochs"):
        raise SpecError(f"{where} must be {{steps: N}} or {{epochs: N}}; got {where}={value!r}")
    unit, amount = next(iter(value.items()))
    ok = isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0
    if not ok or (unit == "steps" and not isinstance(amount, int)):
        raise SpecError(f"{where}.{unit} must be a {'whole ' if unit == 'steps' else ''}number > 0; got {amount!r}")
    return amount, unit


def _sweep_value_label(factor: str, overrides: dict[str, Any]) -> str:
    """'both' for {arch: dcgan, self_attention: both}; 'k=v,...' where the factor is no field."""
    return _fmt(overrides[factor]) if factor in overrides else label_of(overrides)


def _config(values: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def condition_bases(space: tuple[Param, ...], p: Param) -> list[dict[str, Any]]:
    """Config overrides under which ``p`` is drawn: one per combination of its conditions' values
    (with each parent's own first condition met too)."""
    if not p.when:
        return [{}]
    by_name = {q.name: q for q in space}
    options = []
    for parent, allowed in p.when:
        base = condition_bases(space, by_name[parent])[0]
        options.append([{**base, **by_name[parent].decode(label)} for label in allowed])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*options)]


def check_values(spec: StudySpec) -> None:
    """Both bounds of every range and every choice must pass TrainConfig's rules.

    Each value is tried with the fixed values alone (and its conditions met), then beside each
    choice of the other parameters (a rule may tie fields together: self_attention needs
    arch=dcgan, ...); it is an error when no such config is valid. Linear in the number of
    values, so it also covers spaces too large for :func:`check_combinations`.
    """
    others = [(p.name, p.decode(label)) for p in spec.space if p.choices is not None for label in p.labels()]
    for p in spec.space:
        if p.choices is None:
            values = [(f"space.{p.name}: {end}={getattr(p, end)} is invalid", {p.name: getattr(p, end)}) for end in ("low", "high")]
        else:
            values = [(f"space.{p.name}: value {label!r} is invalid in every combination", p.decode(label)) for label in p.labels()]
        conditions = condition_bases(spec.space, p)
        for shown, overrides in values:
            first_error = None
            for base in [{**b, **c} for b in [{}] + [b for name, b in others if name != p.name] for c in conditions]:
                try:
                    spec.config_for({**base, **overrides}, seed=0)
                    break
                except ConfigError as exc:
                    first_error = first_error or exc
            else:
                raise SpecError(f"{shown}: {first_error}")


def check_combinations(spec: StudySpec) -> None:
    """Every choice must be valid in some combination where it is drawn (with the ranges at both
    ends); on a grid, every combination must be. A parameter's conditions decide where it is
    drawn: an inactive parameter keeps the fixed or default value."""
    check_values(spec)
    choice_params = [p for p in spec.space if p.choices is not None]
    range_params = [p for p in spec.space if p.choices is None]
    ends = ("low", "high") if range_params else ("low",)
    combos = math.prod(len(p.choices) for p in choice_params) if choice_params else 1
    if combos * len(ends) > MAX_CHECKED_COMBINATIONS:
        return
    valid_labels: set[tuple[str, Any]] = set()
    drawn: set[str] = set()
    seen: set[tuple] = set()
    first_error = None
    for combo in itertools.product(*(p.labels() for p in choice_params)):
        active = active_labels(tuple(choice_params), {p.name: label for p, label in zip(choice_params, combo)})
        key = tuple((k, repr(v)) for k, v in active.items())
        if key in seen:
            continue
        seen.add(key)
        drawn.update(active)
        choices = {}
        for p in choice_params:
            if p.name in active:
                choices.update(p.decode(active[p.name]))
        try:
            for end in ends:
                corner = {p.name: getattr(p, end) for p in range_params if p.active(active)}
                spec.config_for({**corner, **choices}, seed=0)
        except ConfigError as exc:
            if spec.is_grid:
                labels = ", ".join(f"{k}={v}" for k, v in active.items())
                raise SpecError(f"grid point ({labels}) is invalid: {exc}") from exc
            first_error = first_error or exc
            continue
        valid_labels.update((name, repr(label)) for name, label in active.items())
    for p in choice_params:
        if p.name not in drawn:
            raise SpecError(f"space.{p.name}: its conditions {dict(p.when)} never hold together, so it is never drawn: fix its when")
        for label in p.labels():
            if (p.name, repr(label)) not in valid_labels:
                raise SpecError(f"space.{p.name}: value {label!r} is invalid in every combination: {first_error}")
    if not choice_params:
        for end in ends:
            try:
                spec.config_for({p.name: getattr(p, end) for p in range_params}, seed=0)
            except ConfigError as exc:
                raise SpecError(f"space: {exc}") from exc
