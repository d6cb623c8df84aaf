"""The lab's network: one bridge in the machine's namespace, one netns and veth pair per host.

Hosts get no default route: they reach each other and the bridge address, nothing else, so lab
traffic never leaves the bridge.  Before anything is created, :func:`conflicts` checks that no
address or route of this machine (other than this lab's own bridge) overlaps the lab's network.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

from runbook_lib.lab.util import run

#: written into the bridge's interface alias: recognises the lab's own bridge after a crash
ALIAS_PREFIX = "runbook-lab:"


@dataclass(frozen=True)
class Conflict:
    """Something on this machine that overlaps the lab network."""

    kind: str       # "address" or "route"
    what: str       # e.g. "192.0.2.2/24 on eth0"

    def __str__(self) -> str:
        return f"{self.kind} {self.what}"


def _ip_json(*args: str) -> list[dict]:
    out = run(["ip", "-j", *args]).stdout.strip()
    return json.loads(out) if out else []


def links(prefix: str = "") -> dict[str, dict]:
    """Links of the machine's network namespace whose name starts with ``prefix``."""
    return {link["ifname"]: link for link in _ip_json("link", "show")
            if link.get("ifname", "").startswith(prefix)}


def netns_names(prefix: str = "") -> list[str]:
    """Named network namespaces (``ip netns``) starting with ``prefix``."""
    return [entry["name"] for entry in _ip_json("netns", "list")
            if entry.get("name", "").startswith(prefix)]


def netns_pids(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is the named netns ``name``."""
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(pid) for pid in out.split() if pid.isdigit()]


def conflicts(network: ipaddress.IPv4Network, own_bridge: str | None = None) -> list[Conflict]:
    """Addresses and routes of this machine that overlap ``network`` and are not the lab's.

    Parameters
    ----------
    network
        The lab network.
    own_bridge
        This lab's bridge: its address and connected route are the lab's, not a conflict.
    """
    found: list[Conflict] = []
    for link in _ip_json("-4", "addr", "show"):
        name = link.get("ifname", "?")
        for info in link.get("addr_info", []):
            iface_net = ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network
            if iface_net.overlaps(network) and name != own_bridge:
                found.append(Conflict("address", f"{info['local']}/{info['prefixlen']} on {name}"))
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("type") in ("broadcast", "local", "multicast"):
            continue
        try:
            dst_net = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        except ValueError:
            continue
        if dst_net.prefixlen and dst_net.overlaps(network) and route.get("dev") != own_bridge:
            found.append(Conflict("route", f"{dst} dev {route.get('dev', '?')} "
                                           f"table {route.get('table', 'main')}"))
    return found


def bridge_alias(lab_dir: str) -> str:
    """The alias the lab writes on its bridge (names the lab directory that owns it)."""
    return f"{ALIAS_PREFIX}{lab_dir}"[:255]


def create_bridge(name: str, address: str, prefixlen: int, alias: str) -> None:
    """Create the lab bridge with the machine's lab address and bring it up."""
    run(["ip", "link", "add", name, "type", "bridge"])
    run(["ip", "link", "set", "dev", name, "alias", alias])
    run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def create_host_link(bridge: str, netns: str, veth: str, address: str, prefixlen: int) -> None:
    """Create ``netns`` with ``eth0`` at ``address``, wired to ``bridge`` through ``veth``."""
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns])
    run(["ip", "link", "set", veth, "master", bridge, "up"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])


def delete_netns(name: str) -> None:
    """Delete a named netns if it exists (its veth end goes with it)."""
    if name in netns_names(name):
        run(["ip", "netns", "del", name], check=False)


def delete_link(name: str) -> None:
    """Delete a link of the machine's namespace if it exists."""
    if name in links(name):
        run(["ip", "link", "del", name], check=False)
