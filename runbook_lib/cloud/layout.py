"""Where the lab's cloud keeps its files, which ports it uses, and what its hosts are sized.

Everything lives under ``<lab_dir>/cloud`` (configs, data, logs, the record of its processes),
except the services venv, which is cached with the lab's other caches (``<cache>/cloud-venv``)
and ``<lab_dir>/clouds.yaml``, which the runbooks and the ``openstack`` CLI read.

Addresses
---------
Every network service listens on one address only, :attr:`CloudPlan.listen`: the lab's bridge
address (``198.18.0.1`` for the default network) when the cloud serves a lab, so that the lab
hosts' nova-compute reach it and two labs never share a port; ``127.0.0.1`` for a cloud without
a lab.  MariaDB has no TCP listener at all (a Unix socket: only the controller-side services use
it), and RabbitMQ's Erlang port mapper (epmd) and distribution port bind to ``127.0.0.1`` on ports
picked free at start (epmd adds the IPv6 loopback ``[::1]`` by itself), because RabbitMQ needs
them but nothing outside the machine ever should.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from runbook_lib.cloud.errors import CloudError

#: The OpenStack-standard ports, so URLs look like a real deployment's.
PORTS = {"keystone": 5000, "nova-api": 8774, "placement": 8778, "glance": 9292,
         "neutron": 9696, "rabbitmq": 5672}
CLOUD_NAME = "lab"
REGION = "RegionOne"
#: The image the Glance stand-in serves (the fake driver never reads its bytes).
IMAGE_ID = "6c3e1ef6-5b6c-4a3b-9a86-3a9a4f2c1b01"
IMAGE_NAME = "cirros-fake"
#: Flavors every lab cloud has: small enough for any lab compute, and one that only fits the
#: larger compute of the source procedure's case (4 cores / 8 GB vs 2 cores / 4 GB).
FLAVORS = (("m1.tiny", 1, 512, 1), ("m1.small", 1, 2048, 5), ("m1.medium", 2, 4096, 10),
           ("m1.large", 3, 6144, 10))

#: Virt drivers a lab cloud's computes can run: Nova's fake driver (the default) or the libvirt
#: driver against each compute's own libvirtd (QEMU TCG: ``[libvirt] virt_type = qemu``).
VIRT_DRIVERS = ("fake", "libvirt")
#: The bootable guest the Glance stand-in serves when the computes run the libvirt driver: the
#: lab's guest kernel and busybox initramfs as kernel/ramdisk images, and a small raw machine
#: image whose ``kernel_id``/``ramdisk_id`` properties point at them (Nova boots the kernel
#: directly; the root disk it makes from the machine image stays unused by the guest).
GUEST_IMAGE_ID = "8d1f5c2e-7a4b-4e0c-9c1d-2b7e5a9f3c11"
GUEST_KERNEL_ID = "8d1f5c2e-7a4b-4e0c-9c1d-2b7e5a9f3c12"
GUEST_RAMDISK_ID = "8d1f5c2e-7a4b-4e0c-9c1d-2b7e5a9f3c13"
GUEST_IMAGE_NAME = "rblab-guest"
#: The guest's kernel command line (Nova's default adds ``root=/dev/vda``, which it ignores)
GUEST_CMDLINE = "console=ttyS0 quiet panic=-1"
#: Size of the (all-zero) raw machine image
GUEST_DISK_BYTES = 1024 * 1024
#: The flavor that fits the guest: 1 vCPU, 128 MiB, a 1 GB root disk (a sparse qcow2 overlay)
GUEST_FLAVOR = ("rblab.guest", 1, 128, 1)


@dataclass(frozen=True)
class ComputeSize:
    """What the fake virt driver reports for one compute host."""

    vcpus: int
    memory_mb: int
    disk_gb: int = 100

    @classmethod
    def parse(cls, text: str) -> "ComputeSize":
        """Parse ``"4:8192"`` or ``"4:8192:100"`` (vCPUs, MiB of RAM, GiB of disk)."""
        try:
            parts = [int(p) for p in text.split(":")]
        except ValueError as exc:
            raise CloudError(f"compute size {text!r} is not VCPUS:MEMORY_MB[:DISK_GB]") from exc
        if len(parts) not in (2, 3) or min(parts) < 1:
            raise CloudError(f"compute size {text!r} is not VCPUS:MEMORY_MB[:DISK_GB] "
                             "(positive integers)")
        return cls(*parts)


#: The source procedure's case: compute1 is twice compute2.  Hosts past the list get the last.
DEFAULT_SIZES = (ComputeSize(4, 8192), ComputeSize(2, 4096))


def size_for(index: int, sizes: tuple[ComputeSize, ...] = DEFAULT_SIZES) -> ComputeSize:
    """The size of compute number ``index`` (1-based)."""
    if not sizes:
        sizes = DEFAULT_SIZES
    return sizes[min(index, len(sizes)) - 1]


@dataclass(frozen=True)
class CloudPaths:
    """The files of one lab's cloud."""

    lab_dir: Path
    venv: Path

    @property
    def root(self) -> Path:
        """Runtime directory of the cloud (removed by ``down``)."""
        return self.lab_dir / "cloud"

    @property
    def etc(self) -> Path:
        """Generated configuration files."""
        return self.root / "etc"

    @property
    def data(self) -> Path:
        """MariaDB, RabbitMQ, Keystone key repositories, Nova state."""
        return self.root / "data"

    @property
    def log(self) -> Path:
        """One log per service."""
        return self.root / "log"

    @property
    def run(self) -> Path:
        """Sockets."""
        return self.root / "run"

    @property
    def state(self) -> Path:
        """JSON record of the processes ``up`` started: the only thing ``down`` trusts."""
        return self.root / "state.json"

    @property
    def secrets(self) -> Path:
        """Generated passwords (mode 0600)."""
        return self.root / "secrets.json"

    @property
    def clouds_yaml(self) -> Path:
        """``clouds.yaml`` with the ``lab`` cloud (mode 0600: it holds the admin password)."""
        return self.lab_dir / "clouds.yaml"

    @property
    def mysql_socket(self) -> Path:
        """MariaDB's only listener."""
        return self.run / "mysqld.sock"

    @property
    def bin(self) -> Path:
        """The venv's programs."""
        return self.venv / "bin"


def default_venv(cache_dir: Path) -> Path:
    """The services venv: ``$RUNBOOK_CLOUD_VENV``, else ``<cache>/cloud-venv``."""
    env = os.environ.get("RUNBOOK_CLOUD_VENV")
    return Path(env).absolute() if env else cache_dir / "cloud-venv"


@dataclass(frozen=True)
class CloudPlan:
    """Addresses, ports and compute hosts of one cloud; everything config generation needs."""

    listen: str
    epmd_port: int
    dist_port: int
    computes: tuple[tuple[str, str, ComputeSize], ...] = field(default=())
    ports: dict[str, int] = field(default_factory=lambda: dict(PORTS))

    def __post_init__(self) -> None:
        address = ipaddress.ip_address(self.listen)
        # the rule of the lab: the cloud is reachable from this machine and the lab only
        if not (address.is_loopback and self.listen == "127.0.0.1"
                or address in ipaddress.ip_network("198.18.0.0/15")):
            raise CloudError(f"the cloud listens on 127.0.0.1 or a lab bridge address in "
                             f"198.18.0.0/15, not {self.listen}")

    def url(self, service: str) -> str:
        """Base URL of ``service`` (``keystone``, ``nova-api``, ``placement``, ...)."""
        return f"http://{self.listen}:{self.ports[service]}"
