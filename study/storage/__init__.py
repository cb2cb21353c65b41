"""study.storage: What a study writes and reads back: the Optuna and MLflow stores and their checks, the trial
record and tags, the MLflow runs, the model registry, the best-trial rule, store names, the gRPC
proxy, disk faults, and (in ``compat``) every private Optuna or MLflow API the package uses.

Its modules are its public API (imported on use, so the CLI starts without torch).
"""

__all__ = ["best", "compat", "faults", "names", "proxy", "record", "registry", "runs", "store_checks", "tracking"]
