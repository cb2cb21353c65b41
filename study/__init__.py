"""study: Optuna studies of ``gan`` training, tracked in MLflow, and the ``gan-study`` CLI.

Names are imported on first use, so ``gan-study --help`` and input errors answer before torch,
Optuna and MLflow load.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "RunOptions": "runner", "StudyFailed": "runner", "StudyOutcome": "runner", "run_study": "runner",
    "StudyAttrs": "record", "Tag": "record", "TrialRecord": "record",
    "SpecError": "spec", "StudySpec": "spec", "builtin_specs": "spec", "load_spec": "spec", "parse_spec": "spec",
    "StoreError": "tracking", "Stores": "tracking",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'study' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
