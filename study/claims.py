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
- ``CURVE.STAT`` for a logged curve (``g_loss``, ``d_loss``, ``d_acc``, ``d_acc_real``,
  ``d_acc_fake``, ``fd``) and a statistic over the last ``window`` of training: ``end_mean``,
  ``end_sd``, ``end_slope`` (per 1,000 steps), ``end_max``; or over the whole curve:
  ``explodes`` (1 when the end mean exceeds ``times`` × the mean over 10-20 % of training, or the
  curve is not finite; else 0), ``late_rise`` (the last value minus the curve's minimum: a late
  collapse of a lower-is-better curve), ``steps_below:X`` / ``steps_above:X`` (the first step
  at which the curve is at or beyond X; a run that never gets there counts its last step).

Relations: with two levels A, B, ``>``/``<`` claim A − B > 0 / < 0 and ``≈`` claims
|A − B| ≤ tolerance; with one level A and ``value``, the same against the number; ``lowest`` /
``highest`` claim the first level beats every other listed level (all of the factor's levels
when only one is listed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gan import metrics as gm

from .space import SpecError, SweepPoint

__all__ = ["CURVES", "Claim", "RELATIONS", "STATS", "parse_claims", "read_claims_file"]

CURVES = ("g_loss", "d_loss", "d_acc", "d_acc_real", "d_acc_fake", "fd")
STATS = ("end_mean", "end_sd", "end_slope", "end_max", "explodes", "late_rise", "steps_below", "steps_above")
RELATIONS = (">", "<", "≈", "lowest", "highest")
_KEYS = ("id", "source", "claim", "factor", "compare", "quantity", "relation", "value", "tolerance", "window", "times")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")


@dataclass(frozen=True)
class Claim:
    id: str
    source: str
    claim: str
    factor: str
    compare: tuple[str, ...]
    quantity: str
    relation: str
    value: float | None = None
    tolerance: float | None = None
    window: float = 0.1
    times: float = 2.0

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
    check_quantity(entry["quantity"], where)
    return Claim(entry["id"], entry["source"].strip(), " ".join(entry["claim"].split()), factor, tuple(compare), entry["quantity"],
                 relation, value, tolerance, window if window is not None else Claim.window, times if times is not None else Claim.times)


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


def check_quantity(quantity: str, where: str) -> None:
    """Raise SpecError unless ``quantity`` is one of the forms in the module docstring."""
    finals = [m.name for m in gm.metrics_of("score", "run")]
    if quantity in finals:
        return
    if quantity.startswith("share:"):
        if quantity[6:] in [str(d) for d in range(10)]:
            return
        raise SpecError(f"{where}: share:D needs a digit 0-9, got {quantity!r}")
    curve, _, stat = quantity.partition(".")
    if curve in CURVES and stat:
        name, _, arg = stat.partition(":")
        if name in ("steps_below", "steps_above"):
            try:
                float(arg)
                return
            except ValueError:
                raise SpecError(f"{where}: {name} needs a threshold, e.g. {curve}.{name}:0.5; got {quantity!r}") from None
        if name in STATS and not arg:
            return
    raise SpecError(f"{where}: unknown quantity {quantity!r}: use a final metric ({', '.join(finals)}), share:D, or "
                    f"CURVE.STAT with CURVE one of {', '.join(CURVES)} and STAT one of {', '.join(STATS)}")
