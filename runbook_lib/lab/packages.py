"""Debian packages this machine needs to run the lab, and installing the missing ones.

``ns`` hosts run the machine's own programs (sshd, libvirtd, qemu, ganesha, the FUSE NFS
client), so those packages must be installed here.  ``nspawn`` hosts boot a Debian rootfs of
their own (see :mod:`runbook_lib.lab.rootfs`); the machine then only needs the tools to build and
start it.  Package scripts must never start daemons on the machine itself: installs run behind a
``policy-rc.d`` that answers 101 ("action forbidden").
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from runbook_lib.lab.errors import LabPrerequisiteError
from runbook_lib.lab.util import run

#: needed in both modes: namespaces/links (iproute2, util-linux, mount), keys and the readiness
#: probe (openssh-client), the host launcher (python3), the guest (busybox-static for its
#: initramfs; apt downloads its kernel)
COMMON_PACKAGES = ("iproute2", "util-linux", "mount", "openssh-client", "python3",
                   "busybox-static")
#: ns hosts run these from the machine's /usr
NS_PACKAGES = (
    "openssh-server", "libvirt-daemon-system", "libvirt-daemon-system-sysv", "libvirt-clients",
    "qemu-system-x86", "nfs-ganesha", "nfs-ganesha-vfs", "nfs-common", "rpcbind", "libnfs-utils",
    "libnfs13", "python3-fusepy", "libfuse2", "procps", "tini",
)
#: nspawn hosts: only what builds and boots their rootfs
NSPAWN_PACKAGES = ("systemd-container", "debootstrap", "debian-archive-keyring")

POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_FORBID = "#!/bin/sh\n# runbook lab: package scripts must not start daemons on this machine\nexit 101\n"


def required_packages(mode: str) -> tuple[str, ...]:
    """The Debian packages mode ``mode`` needs on this machine."""
    return COMMON_PACKAGES + (NS_PACKAGES if mode == "ns" else NSPAWN_PACKAGES)


def missing_packages(packages: Iterable[str]) -> list[str]:
    """Those of ``packages`` that dpkg does not report as installed."""
    names = list(packages)
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\n", *names],
                          capture_output=True, text=True)
    installed = {line.split()[0] for line in proc.stdout.splitlines()
                 if len(line.split()) > 1 and line.split()[1].startswith("ii")}
    return [name for name in names if name not in installed]


class daemons_forbidden:
    """Context manager: a ``policy-rc.d`` answering 101 is in place while it is active.

    An existing policy that already forbids everything is left alone; any other is replaced for
    the duration and put back afterwards.
    """

    def __enter__(self) -> "daemons_forbidden":
        self._saved: str | None = None
        self._created = False
        if POLICY_RC_D.exists():
            current = POLICY_RC_D.read_text(errors="replace")
            if current.rstrip().endswith("exit 101"):
                return self
            self._saved = current
        else:
            self._created = True
        POLICY_RC_D.write_text(_FORBID)
        POLICY_RC_D.chmod(0o755)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            POLICY_RC_D.write_text(self._saved)
        elif self._created:
            POLICY_RC_D.unlink(missing_ok=True)


def apt_install(packages: Iterable[str], *, root: Path | None = None) -> None:
    """``apt-get install --no-install-recommends`` with daemons forbidden.

    Parameters
    ----------
    packages
        Debian package names.
    root
        Install into this chroot instead of the machine (used for the nspawn rootfs, which has
        its own policy-rc.d while it is built).
    """
    names = list(packages)
    if not names:
        return
    prefix = ["chroot", str(root)] if root else []
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *names]
    with daemons_forbidden():
        proc = run(install, check=False, env=env, timeout=1800)
        if proc.returncode != 0:
            # most often stale or absent package lists: refresh once and retry
            run([*prefix, "apt-get", "update", "-q"], env=env, timeout=600)
            run(install, env=env, timeout=1800)


def ensure_host_packages(mode: str) -> list[str]:
    """Install the Debian packages mode ``mode`` needs that are missing on this machine.

    Parameters
    ----------
    mode
        ``"nspawn"`` or ``"ns"``.

    Returns
    -------
    list of str
        The packages that were installed (empty when nothing was missing).

    Raises
    ------
    LabPrerequisiteError
        When not root, or apt-get fails.
    """
    missing = missing_packages(required_packages(mode))
    if not missing:
        return []
    if os.geteuid() != 0:
        raise LabPrerequisiteError(f"missing Debian packages {', '.join(missing)}; "
                                   "run as root so the lab can install them")
    try:
        apt_install(missing)
    except Exception as exc:
        raise LabPrerequisiteError(f"could not install {', '.join(missing)}: {exc}") from exc
    return missing
