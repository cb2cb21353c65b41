"""study: Optuna studies of ``gan`` training, tracked in MLflow, and the ``gan-study`` CLI.

A study's spec is read and checked in ``study.spec``, its trials run in ``study.trials``, what
they write lives in ``study.storage``, and the CLI's commands that read it are ``study.commands``
(``study.cli`` dispatches). Each package imports only those before it in this order:
storage <- spec <- trials <- commands <- cli.

Names are imported on first use, so ``gan-study --help`` and input errors answer before torch,
Optuna and MLflow load.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "RunOptions": "trials.runner", "StudyFailed": "trials.runner", "StudyOutcome": "trials.runner", "run_study": "trials.runner",
    "StudyAttrs": "storage.record", "Tag": "storage.record", "TrialRecord": "storage.record",
    "SpecError": "spec.spec", "StudySpec": "spec.spec", "builtin_specs": "spec.spec", "load_spec": "spec.spec", "parse_spec": "spec.spec",
    "StoreError": "storage.errors", "Stores": "storage.tracking",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
