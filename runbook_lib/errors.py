"""The project's exception hierarchy.

Every error an operator can meet says what is wrong and what to do about it; the
underlying library error, when there is one, is kept as ``__cause__``.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class of every error this library raises on purpose."""


class ParamsError(RunbookError, ValueError):
    """A parameter set (file or override) is invalid; nothing was sent to any host."""

    def __init__(self, message: str, *, source: str = "", key: str = "") -> None:
        self.source = source
        self.key = key
        where = ", ".join(p for p in (source, f"key '{key}'" if key else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


class RemoteError(RunbookError):
    """A command could not be run on a host (connection, authentication, timeout)."""


class RunError(RunbookError):
    """A runbook run could not be started or archived."""
