"""The lab: a controller and N compute hosts on this one machine, made of real parts.

Each host has its own network, mount, UTS and PID namespaces, its own ``/etc`` and ``/var``, a
real OpenSSH sshd, Debian's libvirt (QEMU TCG), nfs-ganesha on the controller and a libnfs+FUSE
NFS client on the computes.  It starts as a realistic, not yet configured deployment, so the
runbooks have real work to do.  ``up`` writes ``<lab_dir>/params.yaml`` for them.

>>> from runbook_lib import lab
>>> info = lab.up(computes=2, mode="ns")          # doctest: +SKIP
>>> lab.status().state                            # doctest: +SKIP
'up'
>>> lab.down()                                    # doctest: +SKIP
"""

from runbook_lib.lab.errors import (LabBootError, LabConflictError, LabError,
                                    LabPrerequisiteError)
from runbook_lib.lab.lifecycle import LabHost, LabInfo, down, status, up
from runbook_lib.lab.packages import ensure_host_packages
from runbook_lib.lab.state import HostStatus, LabStatus

__all__ = [
    "up", "down", "status", "ensure_host_packages", "LabInfo", "LabHost", "LabStatus",
    "HostStatus", "LabError", "LabBootError", "LabConflictError", "LabPrerequisiteError",
]
