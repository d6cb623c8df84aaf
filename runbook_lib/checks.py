"""Checks: pure functions from gathered facts to verdicts with a reason and a remedy.

A verdict is one of ``pass``, ``warn``, ``fail``, ``skip`` (not applicable or not
reachable). Each failing or warning verdict carries a one-line remediation that names
what to do (and, where one exists, the runbook phase that does it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import pandas as pd

from .facts import MISSING, HostFacts
from .params import Site

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
VERDICTS = (PASS, WARN, FAIL, SKIP)
#: Verdicts that make a run's outcome "problems found".
PROBLEMS = (FAIL,)


@dataclass(frozen=True)
class Check:
    """One check's verdict on one host."""

    host: str
    check: str
    verdict: str
    detail: str
    remediation: str = ""


def _ssh(site: Site, hf: HostFacts) -> Check:
    h = site.host(hf.host)
    if hf.reached:
        return Check(hf.host, "ssh", PASS, f"{h.user}@{h.address}:{h.port} answered in {hf.duration:.2f} s")
    return Check(
        hf.host, "ssh", FAIL, hf.error or "not reached",
        f"make {h.address}:{h.port} reachable over SSH as {h.user} (sshd running, key in "
        "authorized_keys, host key in known_hosts), then run the preflight again",
    )


def _hostname(site: Site, hf: HostFacts) -> Check:
    name = hf.get("hostname")
    if name is MISSING:
        return Check(hf.host, "hostname", FAIL, "hostname printed nothing", "check the host's hostname")
    if name.lower() == hf.host.lower():
        return Check(hf.host, "hostname", PASS, f"hostname is {name}")
    return Check(
        hf.host, "hostname", FAIL,
        f"hostname is '{name}', the inventory calls it '{hf.host}'",
        f"nova names compute services and migration URIs by host name: set it "
        f"(hostnamectl set-hostname {hf.host}) or fix the inventory",
    )


def _resolution(site: Site, hf: HostFacts) -> Check:
    resolved = hf.get("resolution")
    if resolved is MISSING:
        return Check(hf.host, "name-resolution", FAIL, "could not run getent", "check that getent works on the host")
    wrong = []
    for other in site.hosts:
        if other.name == hf.host:
            continue
        got = resolved.get(other.name)
        if got != other.management_address:
            wrong.append(f"{other.name} → {got or 'unresolved'} (want {other.management_address})")
    if not wrong:
        return Check(hf.host, "name-resolution", PASS, f"resolves all {len(site.hosts) - 1} other hosts")
    fixes = "; ".join(f"'{o.management_address} {o.name}'" for o in site.hosts
                      if o.name != hf.host and resolved.get(o.name) != o.management_address)
    return Check(
        hf.host, "name-resolution", FAIL, "; ".join(wrong),
        f"libvirt connects to the destination by name: add {fixes} to /etc/hosts on {hf.host} "
        "(or fix DNS); a name on 127.0.1.1 is wrong",
    )


def _nova_reference(site: Site, gathered: Mapping[str, HostFacts]) -> tuple[dict | None, str]:
    """The uid/gid every host should have: the controller's, else the most common one."""
    ids = {n: hf.get("nova_ids") for n, hf in gathered.items() if hf.reached and hf.get("nova_ids") is not MISSING}
    for h in site.hosts:
        if h.role == "controller" and h.name in ids:
            return ids[h.name], f"the controller {h.name}"
    if not ids:
        return None, ""
    (uid, gid), _ = Counter((v["uid"], v["gid"]) for v in ids.values()).most_common(1)[0]
    return {"uid": uid, "gid": gid}, "most hosts"


def _nova_ids(site: Site, hf: HostFacts, reference: dict | None, ref_from: str) -> Check:
    ids = hf.get("nova_ids")
    if ids is MISSING:
        return Check(hf.host, "nova-ids", FAIL, "no 'nova' user", "install nova (or create the nova user) on this host")
    here = f"nova uid {ids['uid']} gid {ids['gid']}"
    if reference is None or (ids["uid"], ids["gid"]) == (reference["uid"], reference["gid"]):
        return Check(hf.host, "nova-ids", PASS, here)
    return Check(
        hf.host, "nova-ids", FAIL,
        f"{here}; {ref_from} has uid {reference['uid']} gid {reference['gid']}",
        f"files on shared instance storage are owned by numeric ids: align nova to "
        f"uid {reference['uid']} gid {reference['gid']} (configure phase: identity)",
    )


def _libvirt(site: Site, hf: HostFacts, versions: Mapping[str, str]) -> Check:
    if not site.host(hf.host).is_compute:
        return Check(hf.host, "libvirt", SKIP, "not a compute host")
    ver = hf.get("libvirt_version")
    if ver is MISSING:
        return Check(hf.host, "libvirt", FAIL, "libvirt is not installed", "install libvirt-daemon-system on this compute host")
    others = sorted({v for n, v in versions.items() if n != hf.host and v != ver})
    if others:
        return Check(
            hf.host, "libvirt", WARN, f"libvirt {ver}; other computes run {', '.join(others)}",
            "migrating to an older libvirt/QEMU can fail: upgrade the computes to one version",
        )
    return Check(hf.host, "libvirt", PASS, f"libvirt {ver}")


def preflight_basic(site: Site, gathered: Mapping[str, HostFacts]) -> list[Check]:
    """The first-cut preflight checks for every host, in inventory order."""
    reference, ref_from = _nova_reference(site, gathered)
    versions = {
        n: hf.get("libvirt_version") for n, hf in gathered.items()
        if hf.reached and site.host(n).is_compute and hf.get("libvirt_version") is not MISSING
    }
    checks: list[Check] = []
    for name, hf in gathered.items():
        checks.append(_ssh(site, hf))
        if not hf.reached:
            for c in ("hostname", "name-resolution", "nova-ids", "libvirt"):
                checks.append(Check(name, c, SKIP, "host not reached"))
            continue
        checks += [
            _hostname(site, hf),
            _resolution(site, hf),
            _nova_ids(site, hf, reference, ref_from),
            _libvirt(site, hf, versions),
        ]
    return checks


def to_frame(checks: Iterable[Check]) -> pd.DataFrame:
    """Checks as a long table: host, check, verdict, detail, remediation."""
    rows = [asdict(c) for c in checks]
    return pd.DataFrame(rows, columns=["host", "check", "verdict", "detail", "remediation"])


def matrix(checks: Iterable[Check]) -> pd.DataFrame:
    """Hosts × checks, each cell the verdict (inventory and check order kept)."""
    frame = to_frame(checks)
    hosts = list(dict.fromkeys(frame["host"]))
    names = list(dict.fromkeys(frame["check"]))
    table = frame.pivot(index="host", columns="check", values="verdict")
    return table.reindex(index=hosts, columns=names)


def counts(checks: Iterable[Check]) -> dict[str, int]:
    """How many checks got each verdict."""
    c = Counter(ch.verdict for ch in checks)
    return {v: c.get(v, 0) for v in VERDICTS}
