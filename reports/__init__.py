"""Reports of gan-study studies: Optuna + MLflow -> ``report.md``, ``report.pdf``, ``figures/*.png``.

``write_report(study, stores, out, formats=["md", "pdf"])`` is what ``gan-study report`` calls.
"""

from .data import ReportError
from .report import write_report

__all__ = ["ReportError", "write_report"]
