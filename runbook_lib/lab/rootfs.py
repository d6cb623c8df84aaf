"""The cached Debian 12 rootfs that every ``nspawn`` lab host boots (read-only, under an overlay).

Built once with debootstrap plus an ``apt-get install`` in a chroot (about 70–90 s and ~500 MB),
then reused by every ``lab up`` and by every lab directory pointing at the same cache.  The build
happens in ``rootfs.build`` and is renamed into place only when complete, so an interrupted build
is simply started over.  The chroot's ``/proc`` is mounted in a private mount namespace, so an
interrupted build leaves no mount behind either.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import time
from pathlib import Path

from runbook_lib.lab.errors import LabError
from runbook_lib.lab.packages import _FORBID
from runbook_lib.lab.util import run

SUITE = "bookworm"
#: debootstrap's own set: enough to boot systemd and log in over SSH
BASE_INCLUDE = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps",
                "python3", "ca-certificates", "less")
#: what a Debian compute/controller of the runbook's world has installed
LAB_PACKAGES = ("libvirt-daemon-system", "libvirt-clients", "qemu-system-x86", "nfs-ganesha",
                "nfs-ganesha-vfs", "nfs-common", "libnfs-utils", "libnfs13", "python3-fusepy",
                "libfuse2", "iputils-ping", "netcat-openbsd")
COMPLETE_MARK = ".rblab-complete"
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (so debootstrap reaches the same place)."""
    candidates: list[str] = []
    files = sorted((apt_dir / "sources.list.d").glob("*.sources")) + \
        sorted((apt_dir / "sources.list.d").glob("*.list")) + [apt_dir / "sources.list"]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        candidates += re.findall(r"^\s*URIs:\s*(\S+)", text, flags=re.M)
        candidates += re.findall(r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, flags=re.M)
    for uri in candidates:
        if uri.startswith("http") and uri.rstrip("/").endswith("/debian"):
            return uri.rstrip("/")
    return FALLBACK_MIRROR


def rootfs_ready(rootfs: Path) -> bool:
    """Whether a complete rootfs is cached at ``rootfs``."""
    return (rootfs / COMPLETE_MARK).exists()


def ensure_rootfs(rootfs: Path, log: Path, *, echo=print) -> bool:
    """Build the cached rootfs at ``rootfs`` unless it is already there.

    Parameters
    ----------
    rootfs
        Final location (``<cache>/rootfs``).
    log
        debootstrap and apt output go here.
    echo
        Progress messages.

    Returns
    -------
    bool
        True when it was built now, False when it was cached.
    """
    if rootfs_ready(rootfs):
        return False
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    with open(rootfs.parent / ".rootfs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # two labs sharing a cache build it once
        if rootfs_ready(rootfs):
            return False
        started = time.monotonic()
        build = rootfs.with_name(rootfs.name + ".build")
        shutil.rmtree(build, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        mirror = debian_mirror()
        echo(f"building the Debian {SUITE} rootfs for nspawn hosts from {mirror} "
             f"(one time, ~1.5 min; log {log})")
        with open(log, "w") as out:
            _step(out, ["debootstrap", "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}",
                        SUITE, str(build), mirror], log)
            (build / "usr/sbin/policy-rc.d").write_text(_FORBID)
            (build / "usr/sbin/policy-rc.d").chmod(0o755)
            shutil.copy("/etc/resolv.conf", build / "etc/resolv.conf")
            script = (
                "set -e; mount -t proc rblab-proc \"$1/proc\"; "
                "chroot \"$1\" apt-get update -q; "
                "DEBIAN_FRONTEND=noninteractive chroot \"$1\" apt-get install -y -q "
                f"--no-install-recommends {' '.join(LAB_PACKAGES)}; "
                "chroot \"$1\" apt-get clean; "
                # Debian enables these; a lab host starts as a plain node where nothing is exported
                "chroot \"$1\" systemctl disable nfs-ganesha.service || true; "
                # no sunrpc in this kernel: the rpc_pipefs mount can only fail (and degrade boot)
                "chroot \"$1\" systemctl mask run-rpc_pipefs.mount proc-fs-nfsd.mount || true; "
            )
            # a private mount namespace: the chroot's /proc vanishes with it, even on ^C
            _step(out, ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "rblab-rootfs", str(build)], log)
        (build / "usr/sbin/policy-rc.d").unlink()
        for key in (build / "etc/ssh").glob("ssh_host_*"):
            key.unlink()                         # every host gets its own, made by lab up
        (build / "etc/machine-id").write_text("")
        (build / "etc/resolv.conf").write_text("# lab hosts have no DNS: names are in /etc/hosts\n")
        shutil.rmtree(build / "var/lib/apt/lists", ignore_errors=True)
        (build / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        (build / COMPLETE_MARK).write_text(f"built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
                                           f" from {mirror}\n")
        build.rename(rootfs)
        echo(f"rootfs ready in {time.monotonic() - started:.0f} s")
        return True


def _step(out, argv: list[str], log: Path) -> None:
    out.write(f"$ {' '.join(argv)}\n")
    out.flush()
    proc = run(argv, check=False, timeout=1800)
    out.write(proc.stdout + proc.stderr)
    out.flush()
    if proc.returncode != 0:
        raise LabError(f"building the nspawn rootfs failed at `{argv[0]}` (exit {proc.returncode}); "
                       f"see {log}")
