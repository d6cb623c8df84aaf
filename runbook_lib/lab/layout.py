"""Where the lab keeps its files and what its hosts, links and namespaces are called.

Naming
------
Every kernel object the lab creates carries the prefix ``rblab<ID>-``, where ``<ID>`` is a small
number the lab picks when it comes up (the lowest one no other lab on this machine uses) and
records in its state file.  So two labs (a demo lab and a test lab, say) can be up at once, and
``lab down`` never touches anything outside its own prefix:

==============  ==========================  =====================================
object          name                        example
==============  ==========================  =====================================
bridge          ``rblab<ID>-br0``           ``rblab0-br0``
netns           ``rblab<ID>-<host>``        ``rblab0-compute1``
veth (machine)  ``rblab<ID>-ctl|c<K>``      ``rblab0-c1`` (at most 15 characters)
veth (host)     ``eth0``                    inside the host's netns
nspawn machine  ``rblab<ID>-<host>``        never registered with machined
==============  ==========================  =====================================

Addresses: the bridge takes the network's first address, the controller the 10th, and compute
*K* the (10+K)th, so 198.18.0.0/24 gives .1, .10, .11, .12, ...
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from runbook_lib.lab.errors import LabError

DEFAULT_LAB_DIR = Path("/var/lib/runbook-lab")
DEFAULT_NET = "198.18.0.0/24"
MODES = ("nspawn", "ns")
NAME_PREFIX = "rblab"
MAX_LAB_ID = 999
#: nova's uid/gid on every host but the last compute, and on the last compute: the drift the
#: runbook must find and fix (Debian's nova package picks a dynamic system uid, so it happens).
NOVA_UID = 64060
NOVA_UID_DRIFTED = 64061
#: the controller and the computes start at this offset in the network
HOST_OFFSET = 10


def resolve_lab_dir(lab_dir: str | os.PathLike[str] | None) -> Path:
    """The lab directory: the argument, else ``$RUNBOOK_LAB_DIR``, else the default."""
    if lab_dir is None:
        lab_dir = os.environ.get("RUNBOOK_LAB_DIR") or DEFAULT_LAB_DIR
    return Path(lab_dir).absolute()


def resolve_cache_dir(lab_dir: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """The cache directory: the argument, else ``$RUNBOOK_LAB_CACHE``, else ``<lab_dir>/cache``."""
    if cache_dir is None:
        cache_dir = os.environ.get("RUNBOOK_LAB_CACHE") or lab_dir / "cache"
    return Path(cache_dir).absolute()


@dataclass(frozen=True)
class LabPaths:
    """Files of one lab directory (runtime files) and its cache (kept across ``down``)."""

    root: Path
    cache: Path

    @property
    def state(self) -> Path:
        """JSON record of what ``up`` created: the only thing ``down`` trusts."""
        return self.root / "state.json"

    @property
    def lock(self) -> Path:
        """Serialises ``up``/``down``/``status`` on this lab directory."""
        return self.root / ".lock"

    @property
    def params(self) -> Path:
        """The runbooks' parameter file for this lab."""
        return self.root / "params.yaml"

    @property
    def ssh_config(self) -> Path:
        """OpenSSH client config for humans (``ssh -F <this> compute1``)."""
        return self.root / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        """The hosts' real ed25519 host keys, by address and by name."""
        return self.root / "known_hosts"

    @property
    def key(self) -> Path:
        """The private key root logs in with on every host."""
        return self.root / "id_ed25519"

    @property
    def hosts(self) -> Path:
        """Per-host runtime directories (overlay layers, logs, host keys)."""
        return self.root / "hosts"

    @property
    def share(self) -> Path:
        """Helper programs bound read-only into every host at ``/usr/local/lib/rblab``."""
        return self.root / "share"

    @property
    def rootfs(self) -> Path:
        """The cached Debian rootfs every nspawn host boots from (as an overlay's lower layer)."""
        return self.cache / "rootfs"

    @property
    def guest(self) -> Path:
        """The cached guest kernel, initramfs and domain XML."""
        return self.cache / "guest"

    def host_dir(self, name: str) -> Path:
        """Runtime directory of host ``name``."""
        return self.hosts / name


@dataclass(frozen=True)
class HostSpec:
    """One lab host: its name, role, address and kernel object names."""

    name: str
    role: str
    address: str
    netns: str
    veth: str
    nova_uid: int


def prefix_for(lab_id: int) -> str:
    """The name prefix of lab ``lab_id``, e.g. ``rblab0-``."""
    if not 0 <= lab_id <= MAX_LAB_ID:
        raise LabError(f"lab id {lab_id} is out of range 0..{MAX_LAB_ID}")
    return f"{NAME_PREFIX}{lab_id}-"


def parse_net(net: str) -> ipaddress.IPv4Network:
    """Parse and check the lab's network (IPv4, big enough for the bridge and 1 + N hosts)."""
    try:
        network = ipaddress.ip_network(net, strict=True)
    except ValueError as exc:
        raise LabError(f"--net {net!r} is not a network in CIDR form (like {DEFAULT_NET}): {exc}") from exc
    if not isinstance(network, ipaddress.IPv4Network):
        raise LabError(f"--net {net!r}: the lab needs an IPv4 network")
    if network.prefixlen > 28:
        raise LabError(f"--net {net!r} is too small; use a /24 like {DEFAULT_NET}")
    return network


def plan_hosts(network: ipaddress.IPv4Network, computes: int, lab_id: int) -> list[HostSpec]:
    """The hosts of a lab: a controller and ``computes`` compute nodes.

    The last compute gets a drifted nova uid/gid (:data:`NOVA_UID_DRIFTED`), the others
    :data:`NOVA_UID`, so the lab starts with the inconsistency the runbook has to fix.
    """
    if computes < 1:
        raise LabError("a lab needs at least one compute (--computes 1 or more)")
    usable = network.num_addresses - 2 - HOST_OFFSET
    if computes + 1 > usable:
        raise LabError(f"{network} has room for {usable - 1} computes, not {computes}")
    prefix = prefix_for(lab_id)
    base = network.network_address + HOST_OFFSET
    hosts = [HostSpec("controller", "controller", str(base), f"{prefix}controller",
                      f"{prefix}ctl", NOVA_UID)]
    for k in range(1, computes + 1):
        uid = NOVA_UID_DRIFTED if (k == computes and computes > 1) else NOVA_UID
        hosts.append(HostSpec(f"compute{k}", "compute", str(base + k), f"{prefix}compute{k}",
                              f"{prefix}c{k}", uid))
    for host in hosts:
        if len(host.veth) > 15:   # IFNAMSIZ - 1
            raise LabError(f"interface name {host.veth!r} is longer than 15 characters")
    return hosts


def bridge_name(lab_id: int) -> str:
    """The lab's bridge in the machine's network namespace."""
    return f"{prefix_for(lab_id)}br0"


def bridge_address(network: ipaddress.IPv4Network) -> str:
    """The machine's address on the lab bridge (the network's first address)."""
    return str(network.network_address + 1)
