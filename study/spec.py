"""Study specs: a YAML file (or a built-in name) -> a validated :class:`StudySpec`.

Everything is checked before anything trains; errors name the key, the bad value and what
is allowed.
"""

from __future__ import annotations

import itertools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gan import FIELDS, ConfigError, TrainConfig
from gan.errors import GanStudyError

from .names import NameRuleError, check_name

SPEC_DIR = Path(__file__).parent / "specs"
SAMPLERS = ("tpe", "random", "grid", "nsga2", "cmaes")
PRUNERS = ("none", "median", "hyperband")
EVAL_METRICS = ("fd", "modes", "kl_uniform", "is", "confidence", "precision", "recall", "d_acc_generated")
OBJECTIVE_METRICS = (*EVAL_METRICS, "train_seconds")
DEFAULT_DIRECTION = {
    "fd": "minimize",
    "kl_uniform": "minimize",
    "train_seconds": "minimize",
    "modes": "maximize",
    "is": "maximize",
    "confidence": "maximize",
    "precision": "maximize",
    "recall": "maximize",
}
# Set by the study itself, never by a spec's fixed values or space.
RESERVED = ("seed", "device", "budget", "budget_unit")
SPACE_FIELDS = tuple(f for f in FIELDS if f not in RESERVED)
TOP_KEYS = (
    "name", "description", "objective", "sampler", "pruner", "trials", "budget", "evaluation",
    "repeats", "seed", "fixed", "space", "sweep",
)
MAX_CHECKED_COMBINATIONS = 20_000


class SpecError(GanStudyError):
    """A study spec is invalid."""


# YAML 1.1 reads 2e-4 (no dot) as a string; read every scientific-notation number as a float.
class _Loader(yaml.SafeLoader):
    pass


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


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


@dataclass(frozen=True)
class StudySpec:
    name: str
    description: str = ""
    objectives: tuple[Objective, ...] = (Objective("fd", "minimize"),)
    sampler: str = "tpe"
    sampler_seed: int = 0
    sampler_startup_trials: int = 10
    """TPE and CMA-ES: the first trials are sampled at random (Optuna's n_startup_trials)."""
    pruner: str = "none"
    pruner_warmup_evals: int = 1
    pruner_startup_trials: int = 3
    """Median pruner: no trial is pruned until this many trials have completed."""
    trials: int = 10
    budget: float = 1000
    budget_unit: str = "steps"
    eval_every: int = 500
    eval_samples: int = 2000
    final_samples: int = 10_000
    repeats: int = 1
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    sweep: tuple[SweepPoint, ...] = ()
    baseline_values: dict[str, str] = field(default_factory=dict)
    """For each sweep factor whose values include the baseline: that value's label."""
    source: dict[str, Any] = field(default_factory=dict)
    """The spec as read (for the record in MLflow)."""

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def is_grid(self) -> bool:
        return self.sampler == "grid"

    def grid(self) -> dict[str, list[Any]]:
        """Optuna's grid search space: one dimension per choice param, or the sweep points."""
        if self.sweep:
            return {"point": [p.label for p in self.sweep]}
        return {p.name: list(p.labels()) for p in self.space}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def config_for(self, overrides: dict[str, Any], seed: int, device: str = "auto") -> TrainConfig:
        return TrainConfig.from_dict(
            {**self.fixed, **overrides, "budget": self.budget, "budget_unit": self.budget_unit, "seed": seed, "device": device}
        )

    def with_budget_steps(self, steps: int) -> StudySpec:
        """The same study with every trial trained ``steps`` steps (CLI ``--steps``)."""
        if not isinstance(steps, int) or steps < 1:
            raise SpecError(f"--steps must be an int >= 1, got {steps!r}")
        return _replace(self, budget=steps, budget_unit="steps")

    def with_trials(self, trials: int) -> StudySpec:
        if not isinstance(trials, int) or trials < 1:
            raise SpecError(f"--trials must be an int >= 1, got {trials!r}")
        if self.is_grid and trials > self.grid_size():
            raise SpecError(f"--trials {trials} exceeds the grid of {self.grid_size()} points: use at most {self.grid_size()}")
        return _replace(self, trials=trials)


def _replace(spec: StudySpec, **changes: Any) -> StudySpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def label_of(value: Any) -> Any:
    """Optuna-storable label of a choice: the value itself, or 'k=v,...' for a mapping."""
    if isinstance(value, dict):
        return ",".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return value


def _fmt(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def builtin_specs() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SPEC_DIR.glob("*.yaml"))}


def load_spec(spec: str | Path) -> StudySpec:
    """A built-in spec by name, or a YAML file by path."""
    path = builtin_specs().get(str(spec)) or Path(spec)
    if not path.is_file():
        raise SpecError(f"no spec file {str(spec)!r} and no built-in spec of that name; built-in: {', '.join(builtin_specs())}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): a spec is a YAML file saved as UTF-8"
        ) from exc
    except OSError as exc:
        raise SpecError(f"cannot read the spec file {path} ({exc.strerror or exc}): check that it is a readable file") from exc
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}: YAML syntax error{where}: {problem}") from exc
    return parse_spec(raw, where=str(path))


def parse_spec(raw: Any, where: str = "spec") -> StudySpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: a spec must be a mapping of keys {', '.join(TOP_KEYS)}; got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(TOP_KEYS)}")
    try:
        name = check_name(raw.get("name"), "name")
    except NameRuleError as exc:
        raise SpecError(f"{where}: {exc}") from exc
    objectives = _objectives(raw.get("objective", "fd"))
    # Option defaults are the StudySpec field defaults (one place for each).
    sampler, sampler_opts = _named(raw.get("sampler", "tpe"), "sampler", SAMPLERS,
                                   {"seed": StudySpec.sampler_seed, "startup_trials": StudySpec.sampler_startup_trials})
    _only_for(raw, "sampler", "startup_trials", sampler, ("tpe", "cmaes"))
    pruner, pruner_opts = _named(raw.get("pruner", "none"), "pruner", PRUNERS,
                                 {"warmup_evals": StudySpec.pruner_warmup_evals, "startup_trials": StudySpec.pruner_startup_trials})
    _only_for(raw, "pruner", "startup_trials", pruner, ("median",))
    budget, unit = _budget(raw.get("budget", {"steps": 1000}))
    evaluation = _mapping(raw.get("evaluation", {}), "evaluation", {"every": 500, "samples": 2000, "final_samples": 10000})
    for key, value in evaluation.items():
        _positive_int(f"evaluation.{key}", value)
    trials = raw.get("trials", 10)
    _positive_int("trials", trials)
    repeats = raw.get("repeats", 1)
    _positive_int("repeats", repeats)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"seed must be an int >= 0, got seed={seed!r}")
    fixed = _fields(raw.get("fixed", {}) or {}, "fixed")
    if "space" in raw and "sweep" in raw:
        raise SpecError("use either space (a search) or sweep (one factor at a time), not both")
    space = _space(raw.get("space", {}) or {})
    sweep: tuple[SweepPoint, ...] = ()
    baseline_values: dict[str, str] = {}
    if "sweep" in raw:
        if sampler != "grid" and "sampler" in raw:
            raise SpecError(f"a sweep runs every point once: use sampler: grid (or leave it out), got sampler={sampler!r}")
        sampler = "grid"
        fixed, sweep, baseline_values = _sweep(raw["sweep"], fixed)
    if len(objectives) > 1:
        if pruner != "none":
            raise SpecError(f"pruner={pruner!r} cannot act on a multi-objective study: set pruner: none")
        if sampler in ("cmaes",):
            raise SpecError("sampler=cmaes is single-objective: use nsga2, tpe or random for several objectives")
    elif sampler == "nsga2":
        raise SpecError("sampler=nsga2 is for several objectives: use tpe for one")
    if pruner != "none" and objectives[0].metric not in EVAL_METRICS:
        raise SpecError(
            f"pruner={pruner!r} acts on intermediate values of the objective, but {objectives[0].metric!r} is not "
            f"measured during training: use one of {', '.join(EVAL_METRICS)} or pruner: none"
        )
    if sampler == "grid" and not sweep:
        ranges = [p.name for p in space if p.choices is None]
        if ranges:
            raise SpecError(f"sampler=grid needs choices, but space.{ranges[0]} is a range: give it choices: [...]")
        if not space:
            raise SpecError("sampler=grid needs a space of choices or a sweep")
    spec = StudySpec(
        name=name,
        description=str(raw.get("description", "")),
        objectives=objectives,
        sampler=sampler,
        sampler_seed=sampler_opts["seed"],
        sampler_startup_trials=sampler_opts["startup_trials"],
        pruner=pruner,
        pruner_warmup_evals=pruner_opts["warmup_evals"],
        pruner_startup_trials=pruner_opts["startup_trials"],
        trials=trials,
        budget=budget,
        budget_unit=unit,
        eval_every=evaluation["every"],
        eval_samples=evaluation["samples"],
        final_samples=evaluation["final_samples"],
        repeats=repeats,
        seed=seed,
        fixed=fixed,
        space=space,
        sweep=sweep,
        baseline_values=baseline_values,
        source=raw,
    )
    if spec.is_grid:
        spec = _replace(spec, trials=spec.grid_size() if "trials" not in raw else min(trials, spec.grid_size()))
    _check_combinations(spec)
    return spec


def _positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{key} must be an int >= 1, got {key}={value!r}")


def _mapping(value: Any, key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SpecError(f"{key} must be a mapping with keys {', '.join(defaults)}; got {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise SpecError(f"{key}: unknown key(s) {unknown}; allowed: {', '.join(defaults)}")
    return {**defaults, **value}


def _only_for(raw: dict[str, Any], key: str, option: str, name: str, names: tuple[str, ...]) -> None:
    if isinstance(raw.get(key), dict) and option in raw[key] and name not in names:
        raise SpecError(f"{key}.{option} applies to {' and '.join(names)}, not {key}={name!r}: remove it")


def _named(value: Any, key: str, allowed: tuple[str, ...], defaults: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``name`` or ``{name: ..., option: ...}``."""
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        options = dict(value)
        value = options.pop("name", None)
    if value not in allowed:
        raise SpecError(f"{key} must be one of {', '.join(allowed)}; got {key}={value!r}")
    options = _mapping(options, key, defaults)
    for opt, v in options.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise SpecError(f"{key}.{opt} must be an int >= 0, got {opt}={v!r}")
    return value, options


def _objectives(value: Any) -> tuple[Objective, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise SpecError("objective must name at least one metric")
    out = []
    for item in items:
        metric, direction = (item, None) if isinstance(item, str) else (None, None)
        if isinstance(item, dict):
            extra = sorted(set(item) - {"metric", "direction"})
            if extra:
                raise SpecError(f"objective: unknown key(s) {extra}; allowed: metric, direction")
            metric, direction = item.get("metric"), item.get("direction")
        if metric not in OBJECTIVE_METRICS:
            raise SpecError(f"objective metric must be one of {', '.join(OBJECTIVE_METRICS)}; got {metric!r}")
        direction = direction or DEFAULT_DIRECTION.get(metric)
        if direction not in ("minimize", "maximize"):
            raise SpecError(f"objective {metric}: direction must be minimize or maximize; got {direction!r}")
        out.append(Objective(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise SpecError(f"objective names a metric twice: {[o.metric for o in out]}")
    return tuple(out)


def _budget(value: Any) -> tuple[float, str]:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("steps", "epochs"):
        raise SpecError(f"budget must be {{steps: N}} or {{epochs: N}}; got budget={value!r}")
    unit, amount = next(iter(value.items()))
    ok = isinstance(amount, (int, float)) and not isinstance(amount, bool) and amount > 0
    if not ok or (unit == "steps" and not isinstance(amount, int)):
        raise SpecError(f"budget.{unit} must be a {'whole ' if unit == 'steps' else ''}number > 0; got {amount!r}")
    return amount, unit


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


def _space(raw: Any) -> tuple[Param, ...]:
    if not isinstance(raw, dict):
        raise SpecError(f"space must be a mapping of name -> choices or range; got {raw!r}")
    params = []
    for name, value in raw.items():
        where = f"space.{name}"
        if isinstance(value, list):
            value = {"choices": value}
        if not isinstance(value, dict):
            raise SpecError(f"{where} must be a list of choices or {{low, high[, log]}}; got {value!r}")
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
            params.append(Param(name, choices=tuple(choices)))
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
        params.append(Param(name, low=low, high=high, log=log, integer=kind is int))
    return tuple(params)


def field_kind(name: str) -> type | None:
    """``int`` or ``float`` for a numeric training config field (from its type), else None."""
    hint = typing.get_type_hints(TrainConfig)[name]
    kinds = {a for a in typing.get_args(hint) if a is not type(None)} if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    return next(iter(kinds)) if len(kinds) == 1 and next(iter(kinds)) in (int, float) else None


def _sweep(raw: Any, fixed: dict[str, Any]) -> tuple[dict[str, Any], tuple[SweepPoint, ...], dict[str, str]]:
    raw = _mapping(raw, "sweep", {"baseline": {}, "factors": {}})
    baseline = {**fixed, **_fields(raw["baseline"] or {}, "sweep.baseline")}
    factors = raw["factors"]
    if not isinstance(factors, dict) or not factors:
        raise SpecError(f"sweep.factors must map each factor to a non-empty list of values; got {factors!r}")
    base_cfg = _config(baseline, "sweep.baseline")
    points = [SweepPoint("baseline", "baseline", "baseline", {})]
    baseline_values: dict[str, str] = {}
    for factor, values in factors.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"sweep.factors.{factor} must be a non-empty list of values; got {values!r}")
        for value in values:
            overrides = dict(value) if isinstance(value, dict) else {factor: value}
            shown = str(overrides.pop("label")) if "label" in overrides else _sweep_value_label(factor, overrides)
            where = f"sweep.factors.{factor}"
            _fields(overrides, where)
            cfg = _config({**baseline, **overrides}, f"{where} value {label_of(value)!r}")
            if cfg == base_cfg:  # this value is the baseline: it runs once, as the baseline point
                baseline_values[factor] = shown
                continue
            label = f"{factor}={shown}"
            if any(p.label == label for p in points):
                raise SpecError(f"{where}: value {label_of(value)!r} appears twice")
            points.append(SweepPoint(label, factor, shown, overrides))
    return baseline, tuple(points), baseline_values


def _sweep_value_label(factor: str, overrides: dict[str, Any]) -> str:
    """'both' for {arch: dcgan, self_attention: both}; 'k=v,...' where the factor is no field."""
    return _fmt(overrides[factor]) if factor in overrides else label_of(overrides)


def _config(values: dict[str, Any], where: str) -> TrainConfig:
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as exc:
        raise SpecError(f"{where}: {exc}") from exc


def _check_values(spec: StudySpec) -> None:
    """Both bounds of every range and every choice must pass TrainConfig's rules.

    Each value is tried with the fixed values alone, then beside each choice of the other
    parameters (a rule may tie fields together: self_attention needs arch=dcgan, ...); it is
    an error when no such config is valid. Linear in the number of values, so it also covers
    spaces too large for :func:`_check_combinations`.
    """
    others = [(p.name, p.decode(label)) for p in spec.space if p.choices is not None for label in p.labels()]
    for p in spec.space:
        if p.choices is None:
            values = [(f"space.{p.name}: {end}={getattr(p, end)} is invalid", {p.name: getattr(p, end)}) for end in ("low", "high")]
        else:
            values = [(f"space.{p.name}: value {label!r} is invalid in every combination", p.decode(label)) for label in p.labels()]
        for shown, overrides in values:
            first_error = None
            for base in [{}] + [b for name, b in others if name != p.name]:
                try:
                    spec.config_for({**base, **overrides}, seed=0)
                    break
                except ConfigError as exc:
                    first_error = first_error or exc
            else:
                raise SpecError(f"{shown}: {first_error}")


def _check_combinations(spec: StudySpec) -> None:
    """Every choice must be valid in some combination (with the ranges at both ends); on a grid,
    every combination must be."""
    _check_values(spec)
    choice_params = [p for p in spec.space if p.choices is not None]
    range_params = [p for p in spec.space if p.choices is None]
    corners = [{p.name: getattr(p, end) for p in range_params} for end in (("low", "high") if range_params else ("low",))]
    combos = math.prod(len(p.choices) for p in choice_params) if choice_params else 1
    if combos * len(corners) > MAX_CHECKED_COMBINATIONS:
        return
    valid_labels: set[tuple[str, Any]] = set()
    first_error = None
    for combo in itertools.product(*(p.choices for p in choice_params)):
        try:
            for corner in corners:
                overrides = dict(corner)
                for p, choice in zip(choice_params, combo):
                    overrides.update(p.decode(label_of(choice)))
                spec.config_for(overrides, seed=0)
        except ConfigError as exc:
            if spec.is_grid:
                labels = ", ".join(f"{p.name}={label_of(c)}" for p, c in zip(choice_params, combo))
                raise SpecError(f"grid point ({labels}) is invalid: {exc}") from exc
            first_error = first_error or exc
            continue
        valid_labels.update((p.name, repr(label_of(c))) for p, c in zip(choice_params, combo))
    for p in choice_params:
        for c in p.choices:
            if (p.name, repr(label_of(c))) not in valid_labels:
                raise SpecError(f"space.{p.name}: value {label_of(c)!r} is invalid in every combination: {first_error}")
    if not choice_params:
        for corner in corners:
            try:
                spec.config_for(corner, seed=0)
            except ConfigError as exc:
                raise SpecError(f"space: {exc}") from exc
