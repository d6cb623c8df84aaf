"""The lab's record of itself (``<lab_dir>/state.json``) and what it says about the machine now.

``up`` writes the record *before* it creates anything and updates it as hosts start, so whatever
a killed ``up`` or a killed session leaves behind is named in it: ``down`` (and the next ``up``)
trust only this record, the ``rblab<ID>-`` names derived from it, and the bridge alias that names
the lab directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.lab import net
from runbook_lib.lab.layout import LabPaths
from runbook_lib.lab.util import pid_namespace, process_start_time, same_process, write_json

STATE_VERSION = 1


def read_state(paths: LabPaths) -> dict[str, Any] | None:
    """The lab's record, or ``None`` when the lab directory holds none."""
    try:
        data = json.loads(paths.state.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"version": STATE_VERSION, "broken": True, "hosts": []}
    return data


def write_state(paths: LabPaths, state: dict[str, Any]) -> None:
    """Record ``state`` atomically."""
    write_json(paths.state, state)


def proc_ref(pid: int) -> dict[str, int] | None:
    """A reference to a running process that survives PID reuse: its PID and start time."""
    start = process_start_time(pid)
    return None if start is None else {"pid": pid, "start": start}


def alive(ref: dict[str, int] | None) -> bool:
    """Whether the referenced process is still the one recorded."""
    return bool(ref) and same_process(ref["pid"], ref["start"])


def namespace_pids(init_ref: dict[str, int] | None) -> list[int]:
    """All processes in the PID namespace whose init is ``init_ref`` (empty if it is gone)."""
    if not alive(init_ref):
        return []
    target = pid_namespace(init_ref["pid"])
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and pid_namespace(int(entry)) == target:
            found.append(int(entry))
    return found


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """Summed RSS and PSS (KiB) of ``pids``, from ``/proc/PID/smaps_rollup``."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


@dataclass(frozen=True)
class HostStatus:
    """One host as the machine shows it now."""

    name: str
    role: str
    address: str
    netns: str
    running: bool
    processes: int = 0
    rss_kib: int = 0
    pss_kib: int = 0


@dataclass(frozen=True)
class LabStatus:
    """What :func:`runbook_lib.lab.status` found.

    ``state`` is ``"down"`` (nothing recorded, nothing left), ``"up"`` (every host running) or
    ``"broken"`` (a record or kernel objects without a complete running lab: ``lab up`` clears
    them, ``lab down`` removes them).
    """

    state: str
    lab_dir: str
    mode: str | None = None
    net: str | None = None
    lab_id: int | None = None
    params_file: str | None = None
    hosts: tuple[HostStatus, ...] = ()
    problems: tuple[str, ...] = ()
    leftovers: tuple[str, ...] = field(default=())

    @property
    def rss_kib(self) -> int:
        """RSS of every lab process, summed (KiB)."""
        return sum(h.rss_kib for h in self.hosts)

    @property
    def pss_kib(self) -> int:
        """PSS of every lab process, summed (KiB): shared pages counted once overall."""
        return sum(h.pss_kib for h in self.hosts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (``runbook lab status --json``)."""
        data = asdict(self)
        data.update(rss_kib=self.rss_kib, pss_kib=self.pss_kib)
        return data


def leftover_objects(state: dict[str, Any] | None, paths: LabPaths) -> list[str]:
    """Kernel objects of this lab that exist now: its netns, veths, bridge, mounts."""
    found: list[str] = []
    prefixes = set()
    if state and state.get("prefix"):
        prefixes.add(state["prefix"])
    alias = net.bridge_alias(str(paths.root))
    for name, link in net.links("rblab").items():
        if link.get("ifalias") == alias:
            prefixes.add(name[: -len("br0")])   # our bridge, even if the record is lost
    for prefix in sorted(prefixes):
        found += [f"netns {n}" for n in net.netns_names(prefix)]
        found += [f"link {n}" for n in net.links(prefix)]
    found += [f"mount {m}" for m in mounts_under(paths.root)]
    return found


def mounts_under(root: Path) -> list[str]:
    """Mount points in this mount namespace at or below ``root``, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point == str(root) or point.startswith(str(root) + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def inspect(paths: LabPaths, state: dict[str, Any] | None, *, memory: bool = False) -> LabStatus:
    """Compare the record with the machine: which hosts run, what is left over."""
    leftovers = tuple(leftover_objects(state, paths))
    if state is None:
        return LabStatus("broken" if leftovers else "down", str(paths.root), leftovers=leftovers,
                         problems=("kernel objects of this lab exist but no record",)
                         if leftovers else ())
    problems: list[str] = []
    hosts = []
    netns_now = set(net.netns_names(state.get("prefix", "rblab-none-")))
    for host in state.get("hosts", []):
        running = alive(host.get("launcher")) and alive(host.get("init"))
        if not running:
            problems.append(f"{host['name']} is not running")
        if host["netns"] not in netns_now:
            problems.append(f"netns {host['netns']} is missing")
        pids: list[int] = []
        rss = pss = 0
        if memory and running:
            pids = namespace_pids(host["init"]) + [host["launcher"]["pid"]]
            rss, pss = memory_kib(pids)
        hosts.append(HostStatus(host["name"], host["role"], host["address"], host["netns"],
                                running, len(pids), rss, pss))
    if state.get("phase") != "up":
        problems.append(f"`lab up` did not finish (phase {state.get('phase', '?')})")
    if not hosts:
        problems.append("the record lists no hosts")
    params = str(paths.params) if paths.params.exists() else None
    return LabStatus("broken" if problems else "up", str(paths.root), state.get("mode"),
                     state.get("net"), state.get("lab_id"), params, tuple(hosts), tuple(problems),
                     leftovers)
