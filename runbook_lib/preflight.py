"""The preflight phase: read-only readiness checks across the site's hosts.

Each function here is one notebook cell's call. Nothing in this module changes a host.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import pandas as pd

from . import checks, facts
from .checks import Check
from .facts import HostFacts
from .params import Host, Site
from .remote import Remote


def inventory(site: Site) -> pd.DataFrame:
    """The inventory as a table: name, role, SSH endpoint, management address."""
    return pd.DataFrame(
        [
            {
                "host": h.name,
                "role": h.role,
                "ssh": f"{h.user}@{h.address}:{h.port}",
                "management_address": h.management_address,
            }
            for h in site.hosts
        ]
    ).set_index("host")


def gather(site: Site, targets: Iterable[Host] | None = None) -> dict[str, HostFacts]:
    """Gather the preflight facts from ``targets`` (every host by default), in parallel."""
    names = [h.name for h in (targets if targets is not None else site.hosts)]
    with Remote(site) as remote:
        return facts.gather(remote, facts.basic(site), names)


def facts_table(gathered: Mapping[str, HostFacts]) -> pd.DataFrame:
    """Hosts × facts, as gathered (an unreachable host shows its error)."""
    rows = []
    for name, hf in gathered.items():
        row: dict[str, object] = {"host": name}
        if hf.error:
            row["error"] = hf.error
        else:
            ids = hf.get("nova_ids")
            row.update(
                hostname=hf.get("hostname") or None,
                nova_uid=ids["uid"] if ids else None,
                nova_gid=ids["gid"] if ids else None,
                libvirt=hf.get("libvirt_version") or None,
                unresolved=", ".join(sorted(k for k, v in (hf.get("resolution") or {}).items() if not v)) or "",
            )
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("host")
    for col in ("nova_uid", "nova_gid"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")  # ids stay whole numbers beside a missing one
    return frame


def evaluate(site: Site, gathered: Mapping[str, HostFacts]) -> list[Check]:
    """Verdicts of every preflight check on every gathered host."""
    return checks.preflight_basic(site, gathered)


def matrix(results: Iterable[Check]) -> pd.DataFrame:
    """Hosts × checks, each cell pass / warn / fail / skip."""
    return checks.matrix(results)
