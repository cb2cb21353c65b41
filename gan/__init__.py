"""gan: train GANs on MNIST with plain PyTorch (no Optuna, no MLflow here)."""

__version__ = "0.1.0"

import os

# OpenMP threads that spin while they wait lose half of torch's CPU speed when another process
# holds a core (evaluator training on 2 cores, one busy: 4.1 -> 8.7 steps/s; idle: no loss).
# libgomp reads this once, when torch loads it, so it is set before the first `import torch`;
# a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .checkpoint import Checkpoint, environment, load_checkpoint, save_checkpoint
from .config import FIELDS, TrainConfig
from .data import MNIST, load_mnist, resolve_data_dir
from .errors import CheckpointError, ConfigError, DataError, DivergenceError, GanStudyError
from .models import build_models
from .population import MEMBER_FIELDS, population_support, shape_key, train_population
from .sampling import arithmetic_rows, generate, interpolate, interpolation_rows, latent_arithmetic
from .train import RECORD_KEYS, EvalPoint, Records, TrainResult, train

__all__ = [
    "FIELDS",
    "MEMBER_FIELDS",
    "MNIST",
    "RECORD_KEYS",
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
    "save_checkpoint",
    "shape_key",
    "train",
    "train_population",
]
