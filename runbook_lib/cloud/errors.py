"""Errors raised by the lab's cloud (Keystone, Placement, Nova and their helpers)."""

from __future__ import annotations

from runbook_lib.errors import RunbookError


class CloudError(RunbookError):
    """The lab's cloud could not be installed, started, stopped or reached."""


class CloudPrerequisiteError(CloudError):
    """This machine lacks something the cloud needs (root, a package, a free address)."""


class CloudStartError(CloudError):
    """A cloud service did not come up; the message names its log file."""


class CloudAPIError(CloudError):
    """A call to the cloud's API failed or did not have the effect it promised."""
