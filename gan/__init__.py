"""gan: train GANs on MNIST with plain PyTorch (no Optuna, no MLflow here)."""

__version__ = "0.1.0"

from .checkpoint import Checkpoint, environment, load_checkpoint, save_checkpoint
from .config import FIELDS, TrainConfig
from .data import MNIST, load_mnist, resolve_data_dir
from .errors import CheckpointError, ConfigError, DataError, DivergenceError, GanStudyError
from .models import build_models
from .sampling import arithmetic_rows, generate, interpolate, interpolation_rows, latent_arithmetic
from .train import RECORD_KEYS, EvalPoint, Records, TrainResult, train

__all__ = [
    "FIELDS",
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
    "save_checkpoint",
    "train",
]
