"""Study specs: a YAML file (or a built-in name) -> a validated :class:`StudySpec`.

Everything is checked before anything trains; errors name the key, the bad value and what
is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gan import TrainConfig
from gan import metrics as gm
from gan.evaluator import SOURCES

from .claims import Claim, parse_claims, read_claims_file
from .enqueue import parse_enqueue
from .limits import MAX_TRIALS, TRAIN_IMAGES, spec_problem
from ..storage.names import NameRuleError, check_name
from .space import (
    Param,
    SpecError,
    SweepPoint,
    _fields,
    _mapping,
    check_combinations,
    parse_space,
    parse_budget,
    parse_sweep,
)

SPEC_DIR = Path(__file__).parent.parent / "specs"
SAMPLERS = ("tpe", "random", "grid", "nsga2", "cmaes")
PRUNERS = ("none", "median", "hyperband")
__all__ = ["Objective", "SpecError", "StudySpec", "builtin_specs", "load_spec", "parse_spec"]

AUTO_POPULATION = 8  # a trial's repeats at once, unless the spec says: docs/performance.md

TOP_KEYS = (
    "name", "description", "objective", "sampler", "pruner", "trials", "budget", "evaluation",
    "repeats", "population", "seed", "fixed", "space", "sweep", "enqueue", "claims", "only_factors",
)


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
    evaluator: str = "pinned"
    """Which evaluator scores: ``pinned`` (shipped weights, the same on every machine) or
    ``retrained`` (the recipe trained on this machine; see :mod:`gan.evaluator`)."""
    repeats: int = 1
    population: int | None = None
    """Training runs trained at once as one batched model (``gan.train_population``), where the
    configs allow. Unset (``auto``): a trial's repeats, up to 8 at once (DCGANs on the CPU one
    at a time: no faster there), and trials one at a time. K: up to K runs at once, from
    ``K // repeats`` trials asked of Optuna together (a search's TPE then uses its constant
    liar; a sweep's or grid's are its next points, grouped by shape). 1: everything one at a
    time."""
    seed: int = 0
    fixed: dict[str, Any] = field(default_factory=dict)
    space: tuple[Param, ...] = ()
    sweep: tuple[SweepPoint, ...] = ()
    enqueue: tuple[dict[str, Any], ...] = ()
    """Configurations tried first (Optuna parameter values, as in ``trial.params``), in order."""
    baseline_values: dict[str, str] = field(default_factory=dict)
    """For each sweep factor whose values include the baseline: that value's label."""
    claims: tuple[Claim, ...] = ()
    """Observations the report judges (see :mod:`study.spec.claims`); they do not change training."""
    source: dict[str, Any] = field(default_factory=dict)
    """The spec as read (for the record in MLflow)."""

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def runs_at_once(self) -> int:
        """How many training runs may train as one population."""
        return self.population or AUTO_POPULATION

    @property
    def trials_at_once(self) -> int:
        """How many trials a worker trains together: with ``population: K``, as many as K runs
        hold; with ``auto``, one (its repeats still train as one population)."""
        if self.population is None:
            return 1
        return max(1, self.population // self.repeats)

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
            # A sweep factor's own budget (in its points' overrides) wins over the spec's.
            {**self.fixed, "budget": self.budget, "budget_unit": self.budget_unit, **overrides, "seed": seed, "device": device}
        )

    def with_budget_steps(self, steps: int) -> StudySpec:
        """The same study with every trial trained ``steps`` steps (CLI ``--steps``)."""
        if not isinstance(steps, int) or steps < 1:
            raise SpecError(f"--steps must be an int >= 1, got {steps!r}")
        # Parsed again from the text, so the points and the stored spec cannot disagree. A factor's own
        # budget keeps its identity (compared within itself) and its unit: in epochs, it becomes the
        # epochs that ``steps`` make at the baseline's batch, so batch sizes still train equal epochs
        # (report 000's batch-size study fixes epochs, not iterations).
        per_epoch = TRAIN_IMAGES // TrainConfig.from_dict(self.fixed).real_batch
        return parse_spec({**_factor_budgets_in_steps(self.source, steps, per_epoch), "budget": {"steps": steps}})

    def with_factors(self, names: list[str]) -> StudySpec:
        """The study run on the baseline and these sweep factors only (CLI ``--factors``); the
        other factors' points are not trained, and their claims are reported as not run."""
        return parse_spec({**self.source, "only_factors": list(names)})

    def with_trials(self, trials: int) -> StudySpec:
        if not isinstance(trials, int) or trials < 1:
            raise SpecError(f"--trials must be an int >= 1, got {trials!r}")
        if trials > MAX_TRIALS:
            raise SpecError(f"--trials {trials} is more trials than a study holds: use --trials <= {MAX_TRIALS}")
        if self.is_grid and trials > self.grid_size():
            raise SpecError(f"--trials {trials} exceeds the grid of {self.grid_size()} points: use at most {self.grid_size()}")
        if trials < len(self.enqueue):
            raise SpecError(f"--trials {trials} is fewer than the spec's {len(self.enqueue)} enqueued configurations: use at least {len(self.enqueue)}")
        return _replace(self, trials=trials)


def _replace(spec: StudySpec, **changes: Any) -> StudySpec:
    return dataclasses.replace(spec, **changes)


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
    if isinstance(raw, dict) and isinstance(raw.get("claims"), str):  # stored inline with the study
        raw = {**raw, "claims": read_claims_file(raw["claims"], path)}
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
    # Defaults are the StudySpec field defaults (one place for each).
    objectives = _objectives(raw["objective"]) if "objective" in raw else StudySpec.objectives
    sampler, sampler_opts = _named(raw.get("sampler", StudySpec.sampler), "sampler", SAMPLERS,
                                   {"seed": StudySpec.sampler_seed, "startup_trials": StudySpec.sampler_startup_trials})
    _only_for(raw, "sampler", "startup_trials", sampler, ("tpe", "cmaes"))
    pruner, pruner_opts = _named(raw.get("pruner", StudySpec.pruner), "pruner", PRUNERS,
                                 {"warmup_evals": StudySpec.pruner_warmup_evals, "startup_trials": StudySpec.pruner_startup_trials})
    _only_for(raw, "pruner", "startup_trials", pruner, ("median",))
    budget, unit = parse_budget(raw.get("budget", {StudySpec.budget_unit: StudySpec.budget}))
    evaluation = _mapping(raw.get("evaluation", {}), "evaluation",
                          {"every": StudySpec.eval_every, "samples": StudySpec.eval_samples,
                           "final_samples": StudySpec.final_samples, "evaluator": StudySpec.evaluator})
    evaluator = evaluation.pop("evaluator")
    if evaluator not in SOURCES:
        raise SpecError(f"evaluation.evaluator must be one of {', '.join(SOURCES)} (pinned: the shipped weights, the same "
                        f"on every machine; retrained: the recipe trained here), got {evaluator!r}")
    for key, value in evaluation.items():
        _positive_int(f"evaluation.{key}", value)
    trials = raw.get("trials", StudySpec.trials)
    _positive_int("trials", trials)
    repeats = raw.get("repeats", StudySpec.repeats)
    _positive_int("repeats", repeats)
    population = raw.get("population", "auto")
    if population != "auto" and (not isinstance(population, int) or isinstance(population, bool) or population < 1):
        raise SpecError(f"population must be auto or an int >= 1, got population={population!r}")
    seed = raw.get("seed", StudySpec.seed)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise SpecError(f"seed must be an int >= 0, got seed={seed!r}")
    fixed = _fields(raw.get("fixed", {}) or {}, "fixed")
    if "space" in raw and "sweep" in raw:
        raise SpecError("use either space (a search) or sweep (one factor at a time), not both")
    space = parse_space(raw.get("space", {}) or {})
    sweep: tuple[SweepPoint, ...] = ()
    baseline_values: dict[str, str] = {}
    if "sweep" in raw:
        if sampler != "grid" and "sampler" in raw:
            raise SpecError(f"a sweep runs every point once: use sampler: grid (or leave it out), got sampler={sampler!r}")
        sampler = "grid"
        fixed, sweep, baseline_values = parse_sweep(raw["sweep"], fixed)
    if len(objectives) > 1:
        if pruner != "none":
            raise SpecError(f"pruner={pruner!r} cannot act on a multi-objective study: set pruner: none")
        if sampler in ("cmaes",):
            raise SpecError("sampler=cmaes is single-objective: use nsga2, tpe or random for several objectives")
    elif sampler == "nsga2":
        raise SpecError("sampler=nsga2 is for several objectives: use tpe for one")
    measured = [m.name for m in gm.metrics_of("score")]
    if pruner != "none" and objectives[0].metric not in measured:
        raise SpecError(
            f"pruner={pruner!r} acts on intermediate values of the objective, but {objectives[0].metric!r} is not "
            f"measured during training: use one of {', '.join(measured)} or pruner: none"
        )
    if sampler == "grid" and not sweep:
        ranges = [p.name for p in space if p.choices is None]
        if ranges:
            raise SpecError(f"sampler=grid needs choices, but space.{ranges[0]} is a range: give it choices: [...]")
        if not space:
            raise SpecError("sampler=grid needs a space of choices or a sweep")
        conditional = [p.name for p in space if p.when]
        if conditional:
            raise SpecError(f"sampler=grid runs every combination, so space.{conditional[0]} cannot have a when: "
                            "use sampler tpe or random, or remove the when")
    spec = StudySpec(
        name=name,
        description=str(raw.get("description", StudySpec.description)),
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
        evaluator=evaluator,
        repeats=repeats,
        population=None if population == "auto" else population,
        seed=seed,
        fixed=fixed,
        space=space,
        sweep=sweep,
        baseline_values=baseline_values,
        source=raw,
    )
    if spec.is_grid:
        spec = _replace(spec, trials=spec.grid_size() if "trials" not in raw else min(trials, spec.grid_size()))
    check_combinations(spec)
    if "enqueue" in raw:
        spec = _replace(spec, enqueue=parse_enqueue(raw["enqueue"], spec))
    if "claims" in raw:
        spec = _replace(spec, claims=parse_claims(raw["claims"], spec.sweep, spec.baseline_values))
    if "only_factors" in raw:  # after the claims: a claim on a factor left out is reported as not run
        spec = _only_factors(spec, raw["only_factors"])
    problem = spec_problem(spec)  # a size that would exhaust memory, or fail every trial: study.spec.limits
    if problem:
        raise SpecError(problem)
    return spec


def _only_factors(spec: StudySpec, names: Any) -> StudySpec:
    """The sweep cut to the points of ``names`` (CLI ``--factors``), and the common baseline where
    one of them is compared with it."""
    if not spec.sweep:
        raise SpecError("only_factors (--factors) selects factors of a sweep, and this spec has no sweep")
    factors = list(dict.fromkeys(p.factor for p in spec.sweep if p.factor != "baseline"))
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise SpecError(f"only_factors must be a non-empty list of factor names; got {names!r}")
    unknown = [n for n in names if n not in factors]
    if unknown:
        raise SpecError(f"only_factors: {unknown[0]!r} is not a factor of the sweep; factors: {', '.join(factors)}")
    # The common baseline is the reference of the factors without a baseline of their own only.
    with_baseline = any(p.factor in names and not p.own_baseline for p in spec.sweep)
    sweep = tuple(p for p in spec.sweep if p.factor in names or (p.factor == "baseline" and with_baseline))
    return _replace(spec, sweep=sweep, trials=min(spec.trials, len(sweep)))


def _positive_int(key: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpecError(f"{key} must be an int >= 1, got {key}={value!r}")


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
        allowed = [m.name for m in gm.metrics_of("score", "run")]
        if metric not in allowed:
            raise SpecError(f"objective metric must be one of {', '.join(allowed)}; got {metric!r}")
        direction = direction or gm.METRICS[metric].direction
        if direction not in ("minimize", "maximize"):
            raise SpecError(f"objective {metric}: direction must be minimize or maximize; got {direction!r}")
        out.append(Objective(metric, direction))
    if len({o.metric for o in out}) != len(out):
        raise SpecError(f"objective names a metric twice: {[o.metric for o in out]}")
    return tuple(out)


def _factor_budgets_in_steps(raw: dict[str, Any], steps: int, per_epoch: int) -> dict[str, Any]:
    """The spec's text with each sweep factor's own budget set to ``steps`` (``--steps`` sets every
    budget); a budget in epochs to the epochs of ``steps`` iterations at ``per_epoch`` a pass."""
    factors = (raw.get("sweep") or {}).get("factors")
    if not isinstance(factors, dict):
        return raw

    def budget(old: dict[str, Any]) -> dict[str, Any]:
        return {"epochs": steps / per_epoch} if "epochs" in old else {"steps": steps}

    budgets = {k: {**v, "budget": budget(v["budget"])} if isinstance(v, dict) and isinstance(v.get("budget"), dict) else v
               for k, v in factors.items()}
    return {**raw, "sweep": {**raw["sweep"], "factors": budgets}}
