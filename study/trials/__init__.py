"""study.trials: Running a study's trials: the workers (``runner``), the objective Optuna calls, which trials
are needed (``slots``), training and scoring each run, the checks before a run, the progress shown,
the recovery of trials whose worker died, and Ctrl-C.

Its modules are its public API (imported on use, so the CLI starts without torch).
"""

__all__ = ["evaluation", "interrupt", "objective", "preflight", "progress", "recovery", "runner", "slots", "training"]
