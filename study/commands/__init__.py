"""study.commands: The CLI's commands beyond ``run``: the argument parser, ``status``, ``studies``, ``dashboard``,
``sample``, the run's summary lines and the evaluator card; each reads the stores and prints.

Its modules are its public API (imported on use, so the CLI starts without torch).
"""

__all__ = ["dashboard", "evaluator_card", "parser", "sample", "status", "studies", "summary"]
