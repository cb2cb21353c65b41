"""The one rule for user-supplied names, and the checks on paths the project builds from them.

A study name becomes a path (``<workdir>/reports/<name>/``, the MLflow artifact folder
``<workdir>/mlartifacts/<name>``) and a store key (the Optuna study, the MLflow experiment), so
every name given by a user -- a spec's ``name``, ``--study-name``, the study named to ``status``,
``report`` and ``worker`` -- passes :func:`check_name` before any store is touched.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from gan.errors import GanStudyError

__all__ = [
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "NameRuleError",
    "UnsafePathError",
    "check_name",
    "inside",
    "refuse_links",
]

MAX_NAME_LENGTH = 100
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
"""A letter or digit, then letters, digits, '_', '.', '-' (and never '..', see :func:`check_name`)."""
_RULE = f"use 1-{MAX_NAME_LENGTH} letters, digits, '_', '.' or '-', starting with a letter or digit, e.g. 'tiny-2'"


class NameRuleError(GanStudyError):
    """A user-supplied study name breaks the name rule."""


class UnsafePathError(GanStudyError):
    """A path the project builds would leave its folder, or pass through a planted symlink."""


def check_name(name: object, what: str = "study name") -> str:
    """``name`` if it is a safe study name; otherwise a one-line :class:`NameRuleError`.

    Safe: 1 to :data:`MAX_NAME_LENGTH` characters matching :data:`NAME_PATTERN`, without '..'.
    So no path separators ('/', '\\'), no absolute paths, no control characters, no empty name.
    """
    if not isinstance(name, str):
        raise NameRuleError(f"{what} must be text, got {what}={name!r}: {_RULE}")
    shown = repr(name if len(name) <= 60 else name[:57] + "...")
    reason = None
    if not name:
        reason = "it is empty"
    elif len(name) > MAX_NAME_LENGTH:
        reason = f"it has {len(name)} characters, more than {MAX_NAME_LENGTH}"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "it contains a control character"
    elif name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        reason = "it is an absolute path"
    elif "/" in name or "\\" in name:
        reason = "it contains a path separator"
    elif ".." in name:
        reason = "it contains '..'"
    elif not NAME_PATTERN.fullmatch(name):
        reason = "it has a character outside the allowed set" if name[0].isalnum() else "it does not start with a letter or digit"
    if reason:
        raise NameRuleError(f"{what} {shown} is not allowed ({reason}): {_RULE}")
    return name


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str) -> Path:
    """``path`` resolved (symlinks followed), if it stays under ``root`` resolved; else an error."""
    real_root = Path(root).resolve()
    real = Path(path).resolve()
    if not _under(real, real_root):
        raise UnsafePathError(f"{what} {path} resolves to {real}, outside {real_root}: remove the link or '..' that leads out of it")
    return real


def refuse_links(root: str | os.PathLike, path: str | os.PathLike, what: str) -> None:
    """Refuse ``path`` where any of its parts inside ``root`` is a symlink.

    ``path`` itself is the user's choice (symlinks outside ``root`` are followed), but a link
    planted inside ``root`` (the work folder) must not redirect what the project writes there.
    """
    real_root = Path(root).resolve()
    absolute = Path(os.path.abspath(path))
    here = Path(absolute.anchor)
    for part in absolute.parts[1:]:
        step = here / part
        if step.is_symlink():
            if _under(here, real_root):
                raise UnsafePathError(
                    f"{what} {path} passes through the symlink {step} (to {os.readlink(step)}) inside {real_root}: "
                    "remove the link, or give a real folder"
                )
            step = step.resolve()
        here = step
