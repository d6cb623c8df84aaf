"""Errors raised by the lab (``runbook lab up|down|status``)."""

from __future__ import annotations

from runbook_lib.errors import RunbookError


class LabError(RunbookError):
    """The lab could not be brought up, taken down or inspected."""


class LabPrerequisiteError(LabError):
    """This machine lacks something the lab needs (root, a Debian package, a kernel feature)."""


class LabConflictError(LabError):
    """The lab's address range or names are used by something that is not this lab."""


class LabBootError(LabError):
    """A lab host did not come up; the message names its log file."""
