"""The lab's guest: a Debian kernel and a busybox initramfs, booted diskless under QEMU TCG.

The guest prints ``rblab-guest booted`` once and then ``rblab-guest tick N up SECONDS`` every
second on its serial console, which libvirt logs to :data:`SERIAL_LOG` on whichever compute runs
it.  A live migration shows as a tick sequence that continues on the destination with no new
``booted`` line; a reboot or a cold migration would start over.

The kernel comes from Debian's ``linux-image-*-cloud-amd64`` package (downloaded, unpacked, never
installed); the initramfs is written here as a ``newc`` cpio archive around the machine's static
busybox.  Both are cached; the domain XML points at their path, which every compute sees at the
same place (bind-mounted read-only).
"""

from __future__ import annotations

import fcntl
import gzip
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

from runbook_lib.lab.errors import LabError, LabPrerequisiteError
from runbook_lib.lab.util import run, write_atomic

GUEST_NAME = "rblab-guest"
SERIAL_LOG = f"/var/log/libvirt/qemu/{GUEST_NAME}-serial.log"
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev 2>/dev/null
echo "{GUEST_NAME} booted"
i=0
while true; do
  i=$((i+1))
  echo "{GUEST_NAME} tick $i up $(cut -d' ' -f1 /proc/uptime)"
  sleep 1
done
"""


def domain_xml(kernel: Path, initrd: Path, memory_mib: int = 128) -> str:
    """libvirt domain XML of the guest (TCG, ``qemu64`` CPU so both computes accept it, no disk)."""
    return f"""<domain type='qemu'>
  <name>{GUEST_NAME}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_reboot>destroy</on_reboot>
  <devices>
    <serial type='pty'>
      <log file='{SERIAL_LOG}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 1) -> bytes:
    """One ``newc`` cpio record (the format the kernel unpacks an initramfs from)."""
    name_b = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0]
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    pad = lambda n: b"\0" * ((4 - n % 4) % 4)   # noqa: E731 - header+name and data are 4-aligned
    return header + name_b + pad(len(header) + len(name_b)) + data + pad(len(data))


def build_initramfs(busybox: Path = BUSYBOX) -> bytes:
    """The guest's initramfs (gzip-compressed cpio) as bytes."""
    if not busybox.exists():
        raise LabPrerequisiteError(f"{busybox} is missing; install the Debian package busybox-static")
    entries = [
        ("bin", stat.S_IFDIR | 0o755, b""), ("dev", stat.S_IFDIR | 0o755, b""),
        ("proc", stat.S_IFDIR | 0o755, b""), ("sys", stat.S_IFDIR | 0o755, b""),
        ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()),
        ("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode()),
    ]
    body = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(entries))
    body += _cpio_entry("TRAILER!!!", 0, b"", 0)
    return gzip.compress(body, compresslevel=9, mtime=0)


def _kernel_package() -> str:
    """The versioned kernel package behind Debian's cloud kernel meta-package."""
    def depends() -> str:
        return run(["apt-cache", "depends", KERNEL_META_PACKAGE], check=False).stdout
    out = depends()
    if "linux-image-" not in out.replace(KERNEL_META_PACKAGE, ""):
        run(["apt-get", "update", "-q"], timeout=600)
        out = depends()
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise LabPrerequisiteError(f"apt knows no kernel behind {KERNEL_META_PACKAGE}; "
                               "check /etc/apt/sources.list.d and run apt-get update")


def ensure_guest(guest_dir: Path, *, echo=print) -> Path:
    """Make sure the guest kernel, initramfs and domain XML are cached in ``guest_dir``.

    Returns
    -------
    Path
        The domain XML file.
    """
    guest_dir.mkdir(parents=True, exist_ok=True)
    kernel, initrd, xml = guest_dir / "vmlinuz", guest_dir / "initrd.gz", guest_dir / "domain.xml"
    with open(guest_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not kernel.exists():
            package = _kernel_package()
            echo(f"fetching the guest kernel ({package}, one time)")
            with tempfile.TemporaryDirectory(dir=guest_dir) as tmp:
                # apt's download sandbox user must be able to write here
                Path(tmp).chmod(0o777)
                proc = subprocess.run(["apt-get", "download", "-q", package], cwd=tmp,
                                      capture_output=True, text=True, timeout=600)
                debs = list(Path(tmp).glob("*.deb"))
                if not debs:
                    raise LabError(f"apt-get download {package} failed: {proc.stderr.strip()}")
                run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")])
                found = sorted((Path(tmp) / "x/boot").glob("vmlinuz-*"))
                if not found:
                    raise LabError(f"{package} holds no /boot/vmlinuz-*")
                shutil.copyfile(found[0], kernel.with_suffix(".part"))
                kernel.with_suffix(".part").chmod(0o644)
                kernel.with_suffix(".part").rename(kernel)
        if not initrd.exists():
            tmp_initrd = initrd.with_suffix(".part")
            tmp_initrd.write_bytes(build_initramfs())
            tmp_initrd.chmod(0o644)
            tmp_initrd.rename(initrd)
        write_atomic(xml, domain_xml(kernel, initrd))
    guest_dir.chmod(0o755)
    return xml
