"""A spec's ``claims:``: observations of earlier reports, each with a test the study can judge.

``claims:`` is a list of entries, or the name of a YAML file holding that list (relative to the
spec; it is read once and stored inline with the study). Claims are checked with the spec but are
not part of what must match between invocations: editing them and running again replaces the
stored claims without retraining anything. ``reports.verdicts`` measures and judges them.

An entry::

    - id: lr-too-low-d-wins          # a word (letters, digits, - _ .), unique
      source: "000 §C.1"             # where the observation is: report file and section
      claim: "At lr 2e-5 the discriminator wins: its accuracy ends near 1."   # in your own words
      factor: lr                     # a factor of the spec's sweep
      compare: [2e-5, 2e-4]          # level labels ('baseline' names the baseline point)
      quantity: d_acc.end_mean       # see below
      relation: ">"                  # >, <, ≈ (or ~), lowest, highest
      value: 0.9                     # with one level in compare: the number it is compared with
      tolerance: 0.05                # ≈ only: the largest difference that still counts as equal
      window: 0.1                    # curve statistics: the fraction of training at the end
      times: 2                       # explodes only: the factor over the early level

Quantities, measured per run (repeat) and averaged over the runs of a level:

- a final metric of the registry (``fd``, ``modes``, ``kl_uniform``, ``d_acc_generated`` ...);
- ``share:D``: the share of digit D among the final samples;
- ``CURVE.STAT`` for a logged curve (:func:`gan.metrics.over_training`: the registry's curves,
  ``g_loss``, ``d_loss``, ``d_acc`` ..., and the scores it draws over training, ``fd``) and a statistic over the last ``window`` of training: ``end_mean``,
  ``end_sd``, ``end_slope`` (per 1,000 steps), ``end_max``; or over the whole curve:
  ``explodes`` (1 when the end mean exceeds ``times`` × the mean over 10-20 % of training, or the
  curve is not finite; else 0), ``late_rise`` (the last value minus the curve's minimum: a late
  collapse of a lower-is-better curve), ``steps_below:X`` / ``steps_above:X`` (the first step
  at which the curve is at or beyond X; a run that never gets there counts its last step).

Relations: with two levels A, B, ``>``/``<`` claim A − B > 0 / < 0 and ``≈`` claims
|A − B| ≤ tolerance; with one level A and ``value``, the same against the number; ``lowest`` /
``highest`` claim the first level beats every other listed level (all of the factor's levels
when only one is listed).

Optional keys that say what kind of claim it is and when it can be judged::

      kind: observed                 # observed (default), cited, intent or extrapolation
      epochs: 10                     # the budget the source reports it at, where it says
      note: "Run on the MLP ..."     # how our test differs from the source's setup
      requires:                      # preconditions on the runs, checked at each judged step
        learned: {modes: 9, kl_uniform: 0.25}   # every run covers >= 9 digits with KL <= 0.25
        levels: [0.0002]             # whose runs must have learned (default: the compared levels)
        after: {epochs: 5}           # judged only from this budget on ({steps: N} also works)

``kind``: ``observed`` is what the source measured in its own runs; ``cited`` is advice it quotes
from elsewhere (an article, a review); ``intent`` is a change it made and said why, with no
outcome reported; ``extrapolation`` is ours, the source's observation carried to another setup.
Every kind is judged; only observed claims count in the report's headline.

``requires``: a claim about the state after training ("once the generator has learned") says
nothing on runs that have not learned. Where a precondition is unmet at a judged step the
verdict is *not reached*, with the measured values, never *contradicted*. ``learned`` needs at
least one of ``modes`` (digits covered, the registry's metric) and ``kl_uniform`` (at most).

A statistic needs enough points of its curve up to the judged step (:data:`study.spec.quantities.STATISTICS`:
``late_rise`` and ``steps_below`` need 4, ``explodes`` 10, ``end_sd`` and ``end_slope`` 3 in
the window ...); with fewer the verdict is *unmeasurable*. :func:`claim_warnings` says so for
a spec's schedule before anything trains.
"""

from __future__ import annotations

import re
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from gan.errors import ConfigError

from .quantities import Quantity, parse_quantity
from .space import SpecError, SweepPoint

__all__ = ["Claim", "ClaimKind", "KINDS", "N_TRAIN", "RELATIONS", "Requirement", "claim_warnings", "parse_claims",
           "read_claims_file"]

RELATIONS = (">", "<", "≈", "lowest", "highest")
ClaimKind = Literal["observed", "cited", "intent", "extrapolation"]
KINDS: tuple[str, ...] = get_args(ClaimKind)
_KEYS = ("id", "source", "claim", "factor", "compare", "quantity", "relation", "value", "tolerance", "window", "times",
         "kind", "epochs", "note", "requires")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
N_TRAIN = 60_000
"""MNIST training images: an epoch is ``N_TRAIN // real batch`` iterations (gan.TrainConfig)."""

@dataclass(frozen=True)
class Requirement:
    """A claim's preconditions (``requires:``), met or not by every run at a judged step."""

    modes: float | None = None
    """Each run covers at least this many digits (``learned.modes``)."""
    kl_uniform: float | None = None
    """Each run's KL to uniform is at most this (``learned.kl_uniform``)."""
    levels: tuple[str, ...] = ()
    """The levels whose runs must have learned; empty: the compared levels."""
    after: float | None = None
    """Judged only at budgets of at least this many ``after_unit``."""
    after_unit: Literal["epochs", "steps"] = "epochs"

    @property
    def learned(self) -> bool:
        return self.modes is not None or self.kl_uniform is not None

    def text(self) -> str:
        parts = []
        if self.learned:
            bounds = [f"modes ≥ {_num(self.modes)}" if self.modes is not None else "",
                      f"KL ≤ {_num(self.kl_uniform)}" if self.kl_uniform is not None else ""]
            who = f" at {', '.join(self.levels)}" if self.levels else ""
            parts.append(f"learned{who} ({' and '.join(b for b in bounds if b)})")
        if self.after is not None:
            parts.append(f"after {_num(self.after)} {self.after_unit}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    claim: str
    factor: str
    compare: tuple[str, ...]
    quantity: Quantity
    """Parsed once: given as its text (``"fd.end_mean"``), the claim holds the parsed value."""
    relation: str
    value: float | None = None
    tolerance: float | None = None
    window: float = 0.1
    times: float = 2.0
    kind: ClaimKind = "observed"
    epochs: float | None = None
    """The budget (epochs) the source reports the observation at, where it says."""
    note: str = ""
    requires: Requirement | None = None

    def __post_init__(self) -> None:
        if isinstance(self.quantity, str):
            object.__setattr__(self, "quantity", parse_quantity(self.quantity, f"claim {self.id}"))

    @property
    def binary(self) -> bool:
        """The quantity is 0/1 per run (exact tests apply)."""
        return self.quantity.binary

    @property
    def required_levels(self) -> tuple[str, ...]:
        """Every level whose runs a judgement reads: compared, then those of the precondition."""
        extra = self.requires.levels if self.requires is not None else ()
        return tuple(dict.fromkeys(self.compare + extra))

    def test_text(self) -> str:
        """The test in one line, e.g. ``d_acc.end_mean(2e-5) > d_acc.end_mean(2e-4)``."""
        q = self.quantity
        a = f"{q}({self.compare[0]})"
        if self.relation in ("lowest", "highest"):
            others = "every other level" if len(self.compare) == 1 else ", ".join(self.compare[1:])
            return f"{a} {self.relation} of {others}"
        b = f"{q}({self.compare[1]})" if len(self.compare) == 2 else _num(self.value)
        tol = f" (± {_num(self.tolerance)})" if self.relation == "≈" else ""
        return f"{a} {self.relation} {b}{tol}"


def _num(x: float | None) -> str:
    return f"{x:g}" if x is not None else ""


def read_claims_file(name: str, spec_path: Path | None) -> Any:
    """The list in a claims file named by a spec (relative to the spec's folder)."""
    path = Path(name)
    if not path.is_absolute() and spec_path is not None:
        path = spec_path.parent / path
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"claims: cannot read the claims file {path} ({getattr(exc, 'strerror', None) or exc}): "
                        "give a readable YAML file next to the spec, or the list itself") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"claims: {path} is not valid YAML ({str(exc).splitlines()[0]})") from exc


def parse_claims(raw: Any, sweep: tuple[SweepPoint, ...], baseline_values: dict[str, str]) -> tuple[Claim, ...]:
    """The checked claims of a sweep spec: factors and levels exist, quantities and relations parse."""
    if not sweep:
        raise SpecError("claims compare the levels of a sweep's factors: add a sweep, or remove claims")
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise SpecError("claims must be a non-empty list of mappings (id, source, claim, factor, compare, quantity, relation), "
                        "or the name of a YAML file holding one")
    levels: dict[str, list[str]] = {}
    own = {p.factor for p in sweep if p.own_baseline}
    for p in sweep:
        if p.factor != "baseline":
            levels.setdefault(p.factor, []).append(p.value)
    out: list[Claim] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"claims[{i}]" + (f" ({entry['id']})" if isinstance(entry.get("id"), str) else "")
        claim = _parse_one(entry, where, levels, baseline_values, own)
        if claim.id in seen:
            raise SpecError(f"{where}: id {claim.id!r} is used twice: give each claim its own id")
        seen.add(claim.id)
        out.append(claim)
    return tuple(out)


def _parse_one(entry: dict[str, Any], where: str, levels: dict[str, list[str]], baseline_values: dict[str, str],
               own: set[str]) -> Claim:
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(_KEYS)}")
    for key in ("id", "source", "claim", "factor", "quantity", "relation"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise SpecError(f"{where}: {key} must be a non-empty string, got {key}={entry.get(key)!r}")
    if not _ID.match(entry["id"]):
        raise SpecError(f"{where}: id must be a word of letters, digits, '_', '.', '-' (at most 80), got {entry['id']!r}")
    factor = entry["factor"]
    if factor not in levels:
        raise SpecError(f"{where}: factor {factor!r} is not a factor of the sweep; factors: {', '.join(levels)}")
    # A factor with a baseline of its own is compared within itself: the common baseline is no level of it.
    known = list(levels[factor]) + ([] if factor in own else ["baseline"]) + ([baseline_values[factor]] if factor in baseline_values else [])
    compare = entry.get("compare")
    if isinstance(compare, (str, int, float)) and not isinstance(compare, bool):
        compare = [compare]
    if not isinstance(compare, list) or not compare:
        raise SpecError(f"{where}: compare must list the level labels to compare, e.g. [2e-5, 2e-4]; got {compare!r}")
    compare = [_level(c, known, f"{where}: {factor}") for c in compare]
    compare = [baseline_values.get(factor, c) if c == "baseline" else c for c in compare]
    relation = "≈" if entry["relation"] == "~" else entry["relation"]
    if relation not in RELATIONS:
        raise SpecError(f"{where}: relation must be one of {', '.join(RELATIONS)} (or ~), got {entry['relation']!r}")
    value = _number(entry, "value", where)
    tolerance = _number(entry, "tolerance", where)
    if relation in ("lowest", "highest"):
        if value is not None or tolerance is not None:
            raise SpecError(f"{where}: relation {relation!r} compares levels only: remove value and tolerance")
    elif len(compare) == 1 and value is None:
        raise SpecError(f"{where}: one level with relation {relation!r} needs a value to compare with, or list two levels")
    elif len(compare) == 2 and value is not None:
        raise SpecError(f"{where}: two levels are compared with each other: remove value, or list one level")
    elif len(compare) > 2:
        raise SpecError(f"{where}: relation {relation!r} compares two levels (or one with a value); got {len(compare)}")
    if relation == "≈" and (tolerance is None or tolerance < 0):
        raise SpecError(f"{where}: relation ≈ needs a tolerance >= 0 (the largest difference that counts as equal)")
    if relation != "≈" and tolerance is not None:
        raise SpecError(f"{where}: tolerance applies to relation ≈ only: remove it")
    window = _number(entry, "window", where)
    if window is not None and not 0 < window <= 1:
        raise SpecError(f"{where}: window is a fraction of training in (0, 1], got window={window}")
    times = _number(entry, "times", where)
    if times is not None and times <= 1:
        raise SpecError(f"{where}: times must be > 1 (the end level over the early level), got times={times}")
    quantity = parse_quantity(entry["quantity"], where)
    kind = entry.get("kind", "observed")
    if kind not in KINDS:
        raise SpecError(f"{where}: kind must be one of {', '.join(KINDS)}, got kind={kind!r}")
    epochs = _number(entry, "epochs", where)
    if epochs is not None and epochs <= 0:
        raise SpecError(f"{where}: epochs is the source's budget in epochs, > 0; got epochs={epochs}")
    note = entry.get("note", "")
    if not isinstance(note, str):
        raise SpecError(f"{where}: note must be a string, got note={note!r}")
    requires = _requirement(entry.get("requires"), where, known, baseline_values.get(factor))
    return Claim(entry["id"], entry["source"].strip(), " ".join(entry["claim"].split()), factor, tuple(compare), quantity,
                 relation, value, tolerance, window if window is not None else Claim.window, times if times is not None else Claim.times,
                 kind, epochs, " ".join(note.split()), requires)


def _requirement(raw: Any, where: str, known: list[str], baseline_label: str | None) -> Requirement | None:
    """``requires: {learned: {modes, kl_uniform}, levels: [...], after: {epochs|steps: N}}``."""
    if raw is None:
        return None
    where = f"{where}: requires"
    if not isinstance(raw, dict) or not raw or set(raw) - {"learned", "levels", "after"}:
        raise SpecError(f"{where} must be a mapping of learned: {{modes: N, kl_uniform: X}}, levels: [...] and/or "
                        f"after: {{epochs: N}}; got {raw!r}")
    learned = raw.get("learned", {})
    if not isinstance(learned, dict) or set(learned) - {"modes", "kl_uniform"} or ("learned" in raw and not learned):
        raise SpecError(f"{where}.learned must be a mapping with modes (digits covered, at least) and/or kl_uniform "
                        f"(at most); got {learned!r}")
    modes, kl = _number(learned, "modes", f"{where}.learned"), _number(learned, "kl_uniform", f"{where}.learned")
    if modes is not None and not 0 < modes <= 10:
        raise SpecError(f"{where}.learned: modes is a number of digits in (0, 10], got modes={modes:g}")
    if kl is not None and kl < 0:
        raise SpecError(f"{where}.learned: kl_uniform is an upper bound >= 0, got kl_uniform={kl:g}")
    levels = raw.get("levels", [])
    if not isinstance(levels, list) or (levels and "learned" not in raw):
        raise SpecError(f"{where}.levels lists the levels whose runs must have learned (with learned:); got {levels!r}")
    levels = [_level(v, known, where) for v in levels]
    levels = [baseline_label if v == "baseline" and baseline_label else v for v in levels]
    after, unit = None, "epochs"
    if "after" in raw:
        spec = raw["after"]
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("epochs", "steps"):
            raise SpecError(f"{where}.after must be {{epochs: N}} or {{steps: N}}; got {spec!r}")
        unit = next(iter(spec))
        after = _number(spec, unit, f"{where}.after")
        if after is None or after <= 0:
            raise SpecError(f"{where}.after: {unit} must be > 0, got {spec!r}")
    return Requirement(modes, kl, tuple(levels), after, unit)


def _level(value: Any, known: list[str], where: str) -> str:
    """The level label ``value`` names: the label itself, or one equal as a number (2e-5 is 2e-05)."""
    text = str(value)
    if text in known:
        return text
    try:
        number = float(text)
    except ValueError:
        number = None
    for label in known:
        try:
            if number is not None and float(label) == number:
                return label
        except ValueError:
            continue
    raise SpecError(f"{where} has no level {value!r}; levels: {', '.join(dict.fromkeys(known))}")


def _number(entry: dict[str, Any], key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{where}: {key} must be a number, got {key}={value!r}")
    return float(value)


# -- what a schedule can measure ----------------------------------------------------------------
def claim_warnings(spec: Any, n_train: int = N_TRAIN) -> list[str]:
    """Warnings for the claims a spec's budget and evaluation schedule cannot judge: a statistic
    with too few points of its curve at the full budget, a precondition's ``after`` beyond the
    budget, a 0/1 quantity no outcome of ``repeats`` runs could decide. ``spec`` is a
    :class:`study.spec.spec.StudySpec`; levels the spec does not train are skipped (not run)."""
    out = []
    points = {(p.factor, p.value): p for p in spec.sweep}
    for claim in spec.claims:
        schedules = []
        for label in claim.required_levels:
            point = points.get((claim.factor, label))
            if point is None and spec.baseline_values.get(claim.factor) == label:
                point = next((p for p in spec.sweep if p.factor == "baseline"), None)
            if point is None:
                continue
            try:
                cfg = spec.config_for(point.overrides, seed=spec.seed, device="cpu")
            except ConfigError:  # the point cannot train at all: the run says so
                continue
            total = cfg.total_steps(n_train)
            evals = len(range(0, total, spec.eval_every)) + 1  # step 0, every `every` steps, the end
            schedules.append((label, total, evals, total / max(1, n_train // cfg.real_batch)))
        if not schedules:
            continue
        stat, curve = claim.quantity.statistic, claim.quantity.name
        if stat is not None:
            for label, total, evals, _ in schedules:
                n = evals if curve == "fd" else min(total, 500)  # training curves: at most 500 points a run
                have = stat.points(n, claim.window)
                if have < stat.min_points:
                    where = "in its end window" if stat.windowed else "up to the end"
                    out.append(f"claim {claim.id}: {claim.quantity} needs {stat.min_points} points of {curve} {where}; at {claim.factor}="
                               f"{label} the schedule gives {have} ({total} steps, evaluations every {spec.eval_every}): "
                               "it will be unmeasurable")
                    break
        req = claim.requires
        if req is not None and req.after is not None:
            budget = min(s[3] if req.after_unit == "epochs" else s[1] for s in schedules)
            if budget < req.after:
                out.append(f"claim {claim.id}: its precondition holds after {req.after:g} {req.after_unit}, the budget is "
                           f"{budget:.3g} {req.after_unit}: it will be not reached")
        if claim.binary and spec.repeats and not _binary_decidable(claim, spec.repeats):
            out.append(f"claim {claim.id}: {claim.quantity} is 0 or 1 per run, and no outcome of {spec.repeats} runs per "
                       "level reaches a verdict with an exact test at 95 %: it will be inconclusive whatever happens")
    return out


def _binary_decidable(claim: Claim, n: int) -> bool:
    """Whether the most extreme outcome of ``n`` runs per level decides a 0/1 claim at 5 %."""
    if claim.value is None:  # two levels, Fisher's exact test: n of n against 0 of n
        return 2 / math.comb(2 * n, n) < 0.05
    p0 = min(max(claim.value, 0.0), 1.0)  # one level: the exact binomial test against value
    return claim.relation == "≈" or 2 * min(p0**n, (1 - p0) ** n) < 0.05
