"""study/'s layout: its packages import one another in one direction and no two modules import
each other (not even lazily, inside a function; an import for type annotations only does not
count), every module says its job, and none grows past 400 lines."""

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


def _name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` but those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue
        yield node
        yield from _runtime_nodes(node)


def _imports(path: Path) -> set[str]:
    """The study modules (and packages) ``path`` imports when it runs, at the top or inside a function."""
    here = _name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found |= {module, *(f"{module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m.startswith("study.")}


def test_no_two_modules_import_each_other():
    paths = {_name(p): p for p in (REPO / "study").rglob("*.py") if p.name != "__init__.py"}
    graph = {name: _imports(path) & set(paths) - {name} for name, path in paths.items()}
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                cycles.append(" -> ".join([*trail[trail.index(other):], other]))
            elif other not in state:
                visit(other, [*trail, other])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(cycles)


def test_packages_import_in_one_direction():
    wrong = []
    for path in sorted((REPO / "study").rglob("*.py")):
        mine = _package(_name(path))
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
