"""gan: train GANs on MNIST with plain PyTorch (no Optuna, no MLflow here)."""

__version__ = "0.1.0"

import os

# OpenMP threads that spin while they wait lose half of torch's CPU speed when another process
# holds a core (evaluator training on 2 cores, one busy: 4.1 -> 8.7 steps/s; idle: no loss).
# libgomp reads this once, when torch loads it, so it is set before the first `import torch`;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import CheckpointError, ConfigError, DataError, DivergenceError, GanStudyError

# The rest loads on first use (PEP 562), so `gan.errors` costs no torch import (2.5 s): the
# CLI refuses bad input, and reads the stores, without it.
_LAZY = {
    "checkpoint": ("Checkpoint", "environment", "load_checkpoint", "save_checkpoint"),
    "config": ("FIELDS", "TrainConfig"),
    "data": ("MNIST", "load_mnist", "resolve_data_dir"),
    "loop": ("EvalPoint", "TrainResult", "train"),
    "models": ("build_models",),
    "population": ("MEMBER_FIELDS", "batching_pays", "population_support", "populations", "shape_key", "train_population"),
    "records": ("Records",),
    "sampling": ("arithmetic_rows", "generate", "interpolate", "interpolation_rows", "latent_arithmetic"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    if name not in _HOME:  # a submodule (gan.metrics) or a typo: the import system takes over
        raise AttributeError(f"module 'gan' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "FIELDS",
    "MEMBER_FIELDS",
    "MNIST",
    "Checkpoint",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DivergenceError",
    "EvalPoint",
    "GanStudyError",
    "Records",
    "TrainConfig",
    "TrainResult",
    "arithmetic_rows",
    "batching_pays",
    "build_models",
    "environment",
    "generate",
    "interpolate",
    "interpolation_rows",
    "latent_arithmetic",
    "load_checkpoint",
    "load_mnist",
    "resolve_data_dir",
    "population_support",
    "populations",
    "save_checkpoint",
    "shape_key",
    "train",
    "train_population",
]
