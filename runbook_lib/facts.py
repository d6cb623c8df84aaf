"""Facts about hosts: each fact is a shell command plus a pure parser of its output.

Facts are gathered in one SSH round trip per host: the commands of all requested facts
are joined into a single batch script whose output is split back per fact by marker
lines. Parsers never touch the network, so they are tested on recorded real outputs.
A parser returns :data:`MISSING` when the thing it reads does not exist on the host (no
``nova`` user, no libvirt), which is different from an empty value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .params import Site
from .remote import Remote, Result, sh

MARK = "@@runbook-fact@@"


class _Missing:
    """Sentinel: the thing a fact reads is absent on the host."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Fact:
    """A named command and the pure function that parses its output."""

    name: str
    command: str
    parse: Callable[[str, int], Any]


@dataclass
class HostFacts:
    """Every fact gathered from one host, or the reason none could be."""

    host: str
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration: float = 0.0
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        """Whether the host answered."""
        return self.error is None

    def get(self, name: str, default: Any = MISSING) -> Any:
        """The value of fact ``name``, ``default`` when absent."""
        return self.values.get(name, default)


# ------------------------------------------------------------------------------- parsers


def parse_hostname(out: str, rc: int) -> Any:
    """``hostname`` → the short host name."""
    name = out.strip().splitlines()[0].strip() if out.strip() else ""
    return name.split(".")[0] if name else MISSING


def parse_resolution(out: str, rc: int) -> dict[str, str | None]:
    """Lines ``NAME [ADDRESS ALIASES...]`` → ``{name: first address or None}``."""
    resolved: dict[str, str | None] = {}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        resolved[words[0]] = words[1] if len(words) > 1 else None
    return resolved


def parse_user_ids(out: str, rc: int) -> dict[str, Any]:
    """``getent passwd nova; getent group nova`` → ``{uid, gid, group_gid}``, MISSING if no user."""
    uid = gid = group_gid = None
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit():
            uid, gid = int(parts[2]), int(parts[3])
        elif len(parts) == 4 and parts[2].isdigit():
            group_gid = int(parts[2])
    if uid is None:
        return MISSING
    return {"uid": uid, "gid": gid, "group_gid": group_gid}


_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")


def parse_libvirt_version(out: str, rc: int) -> Any:
    """``libvirtd --version`` (``libvirtd (libvirt) 9.0.0``) or ``virsh --version`` → ``'9.0.0'``."""
    for line in out.splitlines():
        m = _VERSION_RE.search(line)
        if m:
            return m.group(1)
    return MISSING


# --------------------------------------------------------------------------- fact builders


def hostname() -> Fact:
    """The host's own name."""
    return Fact("hostname", "hostname", parse_hostname)


def resolution(names: Iterable[str]) -> Fact:
    """How this host resolves each of ``names`` (through NSS: /etc/hosts, DNS...)."""
    words = " ".join(sh(n) for n in names)
    command = f'for n in {words}; do a=$(getent ahostsv4 "$n" | awk \'NR==1{{print $1}}\'); echo "$n $a"; done'
    return Fact("resolution", command, parse_resolution)


def user_ids(user: str = "nova") -> Fact:
    """uid/gid of ``user`` (and of the group of the same name)."""
    return Fact(f"{user}_ids", f"getent passwd {sh(user)}; getent group {sh(user)}", parse_user_ids)


def libvirt_version() -> Fact:
    """The installed libvirt daemon's version."""
    command = "libvirtd --version 2>/dev/null || virtqemud --version 2>/dev/null || virsh --version"
    return Fact("libvirt_version", command, parse_libvirt_version)


def basic(site: Site) -> list[Fact]:
    """The first-cut preflight facts."""
    return [hostname(), resolution(site.names), user_ids("nova"), libvirt_version()]


# ------------------------------------------------------------------------------ gathering


def batch_script(facts: Iterable[Fact]) -> str:
    """One shell script that runs every fact's command and marks where each output ends."""
    parts = []
    for f in facts:
        # each fact in a subshell: a failing or exiting command cannot stop the batch
        parts.append(f"( {f.command} ) 2>/dev/null; rc=$?; echo; echo {sh(MARK)} {sh(f.name)} $rc")
    return "\n".join(parts) + "\n"


def split_batch(out: str) -> dict[str, tuple[str, int]]:
    """Batch output → ``{fact name: (output, exit code)}``."""
    sections: dict[str, tuple[str, int]] = {}
    buf: list[str] = []
    for line in out.splitlines():
        if line.startswith(MARK + " "):
            _, name, rc = line.rsplit(" ", 2)
            # the batch adds a newline after each output so that the marker starts a line
            text = "\n".join(buf).strip("\n")
            sections[name] = (text + "\n" if text else "", int(rc))
            buf = []
        else:
            buf.append(line)
    return sections


def parse_batch(host: str, facts: Iterable[Fact], result: Result) -> HostFacts:
    """Parse one host's batch result into :class:`HostFacts`."""
    hf = HostFacts(host=host, duration=result.duration)
    if not result.reached:
        hf.error = result.error
        return hf
    sections = split_batch(result.stdout)
    for f in facts:
        if f.name not in sections:
            hf.values[f.name] = MISSING
            continue
        text, rc = sections[f.name]
        hf.raw[f.name] = text
        hf.values[f.name] = f.parse(text, rc)
    return hf


def gather(
    remote: Remote,
    facts: Iterable[Fact],
    hosts: Iterable[str] | None = None,
) -> dict[str, HostFacts]:
    """Gather ``facts`` from ``hosts`` (all by default), one SSH round trip per host."""
    facts = list(facts)
    script = batch_script(facts)
    results = remote.run(script, hosts)
    return {name: parse_batch(name, facts, r) for name, r in results.items()}


def as_records(gathered: Mapping[str, HostFacts]) -> list[dict[str, Any]]:
    """Flat rows (host, fact, value) for a table."""
    rows = []
    for name, hf in gathered.items():
        if hf.error:
            rows.append({"host": name, "fact": "error", "value": hf.error})
            continue
        for k, v in hf.values.items():
            rows.append({"host": name, "fact": k, "value": None if v is MISSING else v})
    return rows
