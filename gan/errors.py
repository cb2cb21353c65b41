"""The exceptions of gan-study: one base class, a few specific ones.

The CLI turns any :class:`GanStudyError` into a one-line message and exit code 2.
"""


class GanStudyError(Exception):
    """Base class of every error gan-study raises on purpose."""


class ConfigError(GanStudyError, ValueError):
    """A training configuration (or a value inside one) is invalid."""


class DataError(GanStudyError):
    """The dataset is missing, truncated or corrupt."""


class CheckpointError(GanStudyError):
    """A checkpoint or cache file cannot be read."""


class DivergenceError(GanStudyError):
    """Training produced a non-finite or out-of-bound loss.

    ``step`` is the first training step at which it was seen.
    """

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step
