"""The Optuna side of a study: its sampler, its pruner, and opening (or creating) it.

A study remembers the spec it was first run with (with ``--steps`` applied): running it again
with another spec is refused, naming the fields that differ, so one study never mixes trials of
two experiments. ``--trials`` may change: it is the study's total, raised to continue it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage

from ..storage.compat import RetryingGridSampler
from ..storage.record import StudyAttrs
from .spec import SpecError, StudySpec
from ..storage.tracking import retry

__all__ = ["effective_spec", "make_pruner", "make_sampler", "open_study", "spec_hash"]


def make_sampler(spec: StudySpec, offset: int, storage: BaseStorage | None = None) -> optuna.samplers.BaseSampler:
    """The spec's sampler; ``offset`` keeps workers and resumed runs from repeating draws. A grid
    needs the study's ``storage`` (to give a retry its original's point)."""
    seed = spec.sampler_seed + offset
    if spec.sampler == "grid":
        assert storage is not None, "a grid sampler needs the study's storage"
        # Every worker and every resumed run must shuffle the grid alike: Optuna maps trial
        # number n to the n-th grid point, so differently shuffled workers would repeat points.
        return RetryingGridSampler(spec.grid(), storage, seed=spec.sampler_seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=spec.sampler_startup_trials, warn_independent_sampling=False)
    if spec.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # A conditional space changes from trial to trial: group=True models each set of parameters
    # drawn together jointly, instead of falling back to independent sampling for all of them.
    conditional = any(p.when for p in spec.space)
    with warnings.catch_warnings():  # group and constant_liar: "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Several trials at a time (population): the running ones count as bad, so TPE spreads them.
        liar = spec.trials_at_once > 1
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.sampler_startup_trials, multivariate=True,
                                          group=conditional, constant_liar=liar)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.pruner == "median":
        # The first warmup_evals evaluations of every trial never prune it.
        return optuna.pruners.MedianPruner(n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_evals * spec.eval_every + 1)
    if spec.pruner == "hyperband":  # max_resource: the last step the first trial reports
        return optuna.pruners.HyperbandPruner(min_resource=spec.eval_every, max_resource="auto")
    return optuna.pruners.NopPruner()


def effective_spec(spec: StudySpec) -> dict[str, Any]:
    """The spec as this invocation runs it: the file with the CLI's ``--steps`` and ``--trials``."""
    return {**spec.source, "budget": {spec.budget_unit: spec.budget}, "trials": spec.trials}


# What may change between invocations of one study: the trial count, and what changes no
# training: the claims the report judges and the description.
_MAY_CHANGE = ("trials", "claims", "description")


def spec_hash(effective: dict[str, Any]) -> str:
    """What must match between invocations of one study: everything but ``_MAY_CHANGE``."""
    fixed = {k: v for k, v in effective.items() if k not in _MAY_CHANGE}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two spec mappings differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [f"{path or 'spec'} ({old!r} -> {new!r})"]


def _check_same_experiment(study: optuna.Study, spec: StudySpec, name: str) -> None:
    directions = [d.name.lower() for d in study.directions]
    if directions != [o.direction for o in spec.objectives]:
        raise SpecError(
            f"study {name!r} exists with directions {directions}, the spec asks for {[o.direction for o in spec.objectives]}: "
            "use another --study-name"
        )
    stored = study.user_attrs.get(StudyAttrs.SPEC)
    if not stored:
        return
    effective = effective_spec(spec)
    if StudyAttrs.SPEC_HASH not in study.user_attrs:  # a study of an older version stored the file as read
        effective = spec.source
    fields = _differences({k: v for k, v in stored.items() if k not in _MAY_CHANGE}, {k: v for k, v in effective.items() if k not in _MAY_CHANGE})
    if fields:
        shown = "; ".join(fields[:4]) + (f"; and {len(fields) - 4} more" if len(fields) > 4 else "")
        raise SpecError(
            f"study {name!r} was run with another spec ({shown}): run the changed spec as a new study with "
            f"--study-name NEW_NAME, or run the original spec (and --steps) to continue this one"
        )


def open_study(spec: StudySpec, study_name: str, storage: BaseStorage, offset: int = 0) -> optuna.Study:
    """The study, created on first use with the spec recorded; refused if its spec differs."""
    sampler, pruner = make_sampler(spec, offset, storage), make_pruner(spec)
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:  # a new study (load_if_exists: another worker may be creating it too)
        study = retry(lambda: optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
                                                  directions=[o.direction for o in spec.objectives], load_if_exists=True))
    else:  # loading writes nothing, so a refused spec leaves the store as it was
        study = retry(lambda: optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner))
    _check_same_experiment(study, spec, study_name)
    if StudyAttrs.SPEC not in study.user_attrs:
        effective = effective_spec(spec)
        study.set_user_attr(StudyAttrs.SPEC, effective)
        study.set_user_attr(StudyAttrs.SPEC_HASH, spec_hash(effective))
        study.set_user_attr(StudyAttrs.OBJECTIVES, [o.metric for o in spec.objectives])
        study.set_user_attr(StudyAttrs.SWEEP_BASELINE_VALUES, spec.baseline_values)
        study.set_user_attr(StudyAttrs.REPEATS, spec.repeats)
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what dashboards read
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([o.metric for o in spec.objectives])  # "fd", not "Objective 0"
    else:
        stored = study.user_attrs[StudyAttrs.SPEC]
        if stored.get("claims") != spec.source.get("claims"):  # edited claims: the report judges these
            updated = {k: v for k, v in stored.items() if k != "claims"}
            if "claims" in spec.source:
                updated["claims"] = spec.source["claims"]
            study.set_user_attr(StudyAttrs.SPEC, updated)
    return study
