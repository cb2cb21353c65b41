"""What a store's failure is called and how it is told: ``StoreError``, messages with their
passwords masked, and the chain of exceptions behind one (every store module reads these)."""

from __future__ import annotations

import re

from gan.errors import GanStudyError

__all__ = ["StoreError", "exception_chain", "first_line", "mask_url"]


class StoreError(GanStudyError):
    """A storage URL or tracking URI cannot be used, or a study does not exist."""


def mask_url(text: str) -> str:
    """``postgresql://user:***@host/db``: passwords never reach a log or the terminal.

    Works on any text that contains URLs (error messages too); a password holding '@' is
    masked up to the last '@' before the host, and ``password=...`` of a DSN likewise.
    """
    text = re.sub(r"(://[^:/@\s'\"]*:)[^\s/'\"]*@", r"\1***@", text)
    return re.sub(r"(password=)[^\s&'\"]+", r"\1***", text, flags=re.IGNORECASE)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, passwords masked."""
    text = str(exc).strip() or type(exc).__name__
    return mask_url(text.splitlines()[0])


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (explicit cause first)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 10:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out
