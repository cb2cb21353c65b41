"""study/'s layout: its packages import one another in one direction (no cycle, not even a lazy
import inside a function), every module says its job, and none grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ORDER = ["storage", "spec", "trials", "commands", "cli"]
"""Each package may import only those before it."""


def _package(module: str) -> str | None:
    """``study.trials.runner`` -> ``trials``; ``study.cli`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if parts[0] == "study" and len(parts) > 1 and parts[1] in ORDER else None


def _imports(path: Path) -> set[str]:
    """The study modules ``path`` imports, at the top or inside a function."""
    here = ".".join(path.relative_to(REPO).with_suffix("").parts)
    package = here.rsplit(".", 1)[0] if path.name != "__init__.py" else here.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {f"{module}.{a.name}" for a in node.names} if node.module is None else {module}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("study.")}


def test_packages_import_in_one_direction():
    wrong = []
    for path in sorted((REPO / "study").rglob("*.py")):
        mine = _package(".".join(path.relative_to(REPO).with_suffix("").parts))
        if mine is None:
            continue
        for module in sorted(_imports(path)):
            theirs = _package(module)
            if theirs is not None and ORDER.index(theirs) > ORDER.index(mine):
                wrong.append(f"{path.relative_to(REPO)} ({mine}) imports {module} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_modules_say_their_job_and_stay_short():
    for folder in ("gan", "study", "reports"):
        for path in sorted((REPO / folder).rglob("*.py")):
            text = path.read_text()
            assert ast.get_docstring(ast.parse(text)), f"{path.relative_to(REPO)} has no docstring saying its job"
            assert text.count("\n") <= 400, f"{path.relative_to(REPO)} has {text.count(chr(10))} lines: split it by concept"
