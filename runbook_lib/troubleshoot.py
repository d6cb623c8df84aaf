"""The troubleshoot phase: fetch the right log slices from the right hosts and explain them.

A failed live migration leaves its reasons in nova-conductor (controller), the source and
destination nova-compute logs, libvirtd's journal (or log file) and the destination's QEMU
log for the instance. This module knows where each lives, fetches the tail of each from
exactly the hosts involved (one SSH round trip per host), keeps the lines inside the time
window, and runs the signature catalogue (:mod:`runbook_lib.diagnose`) over them.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

import pandas as pd

from .archive import parse_utc
from .diagnose import Match, diagnose_text
from .errors import ParamsError
from .params import Site
from .remote import Remote, sh

#: where each log lives by default; ``log_paths`` parameters override by name
DEFAULT_PATHS = {
    "nova-compute": "/var/log/nova/nova-compute.log",
    "nova-conductor": "/var/log/nova/nova-conductor.log",
    "libvirtd": "/var/log/libvirt/libvirtd.log",
    "qemu": "/var/log/libvirt/qemu/{instance}.log",
}
_MARK = "@@runbook-log@@"


@dataclass(frozen=True)
class LogSlice:
    """The text fetched from one log source on one host."""

    host: str
    role: str
    source: str
    where: str
    text: str
    error: str | None = None


def window(since: str = "", until: str = "") -> tuple[dt.datetime | None, dt.datetime | None]:
    """Parse the time window parameters (ISO 8601; naive times are UTC)."""
    def parse(value: str, key: str) -> dt.datetime | None:
        if not value:
            return None
        try:
            return parse_utc(value)
        except ValueError:
            raise ParamsError(f"expected an ISO 8601 time like 2026-11-26T10:00:00Z, got {value!r}", key=key) from None

    return parse(since, "since"), parse(until, "until")


def _commands(sources: Iterable[tuple[str, str]], max_lines: int, journal_since: str) -> str:
    parts = []
    for name, path in sources:
        if name == "libvirtd":
            # the journal when the host runs systemd, else libvirt's own log file
            body = (f"if [ -d /run/systemd/system ]; then journalctl -u libvirtd -u virtqemud -u virtproxyd "
                    f"-o short-iso --no-pager {journal_since} -n {max_lines} 2>&1; "
                    f"else tail -n {max_lines} {sh(path)} 2>&1; fi")
        else:
            body = f"tail -n {max_lines} {sh(path)} 2>&1"
        parts.append(f"echo {sh(_MARK)} {sh(name)} {sh(path)}; {body}")
    return "; ".join(parts)


def collect(
    site: Site,
    source_host: str,
    destination_host: str,
    *,
    instance: str = "",
    controller: str | None = None,
    log_paths: Mapping[str, str] | None = None,
    max_lines: int = 5000,
    since: dt.datetime | None = None,
) -> list[LogSlice]:
    """Fetch the log tails that matter from the source, the destination and the controller."""
    paths = {**DEFAULT_PATHS, **(log_paths or {})}
    unknown = set(log_paths or {}) - set(DEFAULT_PATHS)
    if unknown:
        raise ParamsError(f"unknown log source(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULT_PATHS)}",
                          key="log_paths")
    if not 1 <= int(max_lines) <= 1_000_000:
        raise ParamsError("expected 1 to 1000000", key="max_lines")
    controller = controller or next((h.name for h in site.hosts if h.role == "controller"), None)
    plan: dict[str, list[tuple[str, str, str]]] = {}

    def want(host: str | None, role: str, name: str) -> None:
        if not host:
            return
        path = paths[name].format(instance=instance or "*")
        if name == "qemu" and not instance:
            return
        plan.setdefault(host, []).append((role, name, path))

    want(source_host, "source", "nova-compute")
    want(source_host, "source", "libvirtd")
    want(destination_host, "destination", "nova-compute")
    want(destination_host, "destination", "libvirtd")
    want(destination_host, "destination", "qemu")
    want(controller, "controller", "nova-conductor")
    journal_since = f"--since {sh(since.strftime('%Y-%m-%d %H:%M:%S UTC'))}" if since else ""
    commands = {h: _commands([(n, p) for _, n, p in items], int(max_lines), journal_since) for h, items in plan.items()}
    slices: list[LogSlice] = []
    with Remote(site) as remote:
        results = remote.run_each(commands)
    for host, items in plan.items():
        r = results[host]
        roles = {n: role for role, n, _ in items}
        if not r.reached:
            slices += [LogSlice(host, role, n, p, "", r.error) for role, n, p in items]
            continue
        for name, where, text in _split(r.stdout):
            err = None
            if re.match(r"^tail: cannot open .*No such file", text.strip()):
                err, text = f"{where}: no such file", ""
            slices.append(LogSlice(host, roles.get(name, "?"), name, where, text, err))
    return slices


def _split(out: str) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    current: tuple[str, str] | None = None
    buf: list[str] = []
    for line in out.splitlines():
        if line.startswith(_MARK + " "):
            if current:
                found.append((current[0], current[1], "\n".join(buf) + "\n"))
            _, name, where = line.split(" ", 2)
            current, buf = (name, where), []
        else:
            buf.append(line)
    if current:
        found.append((current[0], current[1], "\n".join(buf) + "\n" if buf else ""))
    return found


def explain(slices: Iterable[LogSlice], since: dt.datetime | None = None, until: dt.datetime | None = None) -> list[Match]:
    """Run the catalogue over every slice; keep matches inside the window (untimed ones too)."""
    matches: list[Match] = []
    for s in slices:
        if not s.text:
            continue
        for m in diagnose_text(s.text, f"{s.host}:{s.source}", host=s.host):
            t = _when(m)
            if t is not None and ((since and t < since) or (until and t > until)):
                continue
            matches.append(m)
    matches.sort(key=lambda m: (_when(m) or dt.datetime.max.replace(tzinfo=dt.timezone.utc), m.source, m.lineno))
    return matches


def _when(m: Match) -> dt.datetime | None:
    if not m.timestamp:
        return None
    try:
        return parse_utc(m.timestamp)
    except ValueError:
        return None


def sources_table(slices: Iterable[LogSlice]) -> pd.DataFrame:
    """What was fetched from where: host, role, source, path, lines, or why nothing."""
    return pd.DataFrame([
        {"host": s.host, "role": s.role, "source": s.source, "where": s.where,
         "lines": len(s.text.splitlines()), "problem": s.error or ""}
        for s in slices
    ], columns=["host", "role", "source", "where", "lines", "problem"])


def findings(matches: Iterable[Match]) -> pd.DataFrame:
    """When, where, what, why, and what to do — one row per finding."""
    rows = [{"when": m.timestamp or "", "where": m.source, "what": f"[{m.category}] {m.signature}",
             "line": m.line[:300], "why": m.cause, "what to do": m.remediation} for m in matches]
    return pd.DataFrame(rows, columns=["when", "where", "what", "line", "why", "what to do"])


def as_checks(slices: Iterable[LogSlice], matches: Iterable[Match]) -> list:
    """Findings as verdicts for the run summary: each known failure cause is a ``fail``."""
    from .checks import FAIL, PASS, WARN, Check

    out = [Check(m.host or "-", m.category, FAIL, m.line[:200], m.remediation) for m in matches]
    slices = list(slices)
    for s in slices:
        if s.error:
            out.append(Check(s.host, f"log {s.source}", WARN, s.error))
    if not out:
        out.append(Check("-", "logs", PASS, f"no known failure signature in {len(slices)} log slices"))
    return out


@dataclass(frozen=True)
class Case:
    """Where and when to look, as the cloud recorded it."""

    server_id: str
    instance_name: str
    source_host: str
    destination_host: str
    since: str
    until: str
    migration_id: int | None
    status: str


def case_from_cloud(conn, server: str, migration_id: int | None = None, margin_s: int = 120) -> Case:
    """The source, destination and time window of a server's (latest, or given) live migration.

    The window is the migration record's creation to its last update, widened by
    ``margin_s`` on each side (clocks of the hosts and the API may differ a little).
    """
    from .cloud import api

    s = api.find_server(conn, server)
    state = api.server_state(conn, s.id)
    records = [m for m in conn.compute.migrations(instance_uuid=s.id) if m.migration_type == "live-migration"]
    if migration_id is not None:
        records = [m for m in records if m.id == int(migration_id)]
        if not records:
            raise ParamsError(f"server {server} has no live migration {migration_id}", key="migration_id")
    if not records:
        raise ParamsError(f"server {server} has no live migration on record", key="server")
    m = max(records, key=lambda r: r.id)

    def stamp(value, delta: int) -> str:
        return (parse_utc(value) + dt.timedelta(seconds=delta)).isoformat()

    return Case(s.id, state.get("instance_name") or "", m.source_compute, m.dest_compute or "",
                stamp(m.created_at, -margin_s), stamp(m.updated_at or m.created_at, margin_s), m.id, m.status)


def resolve(site: Site, cloud: str | None, clouds_yaml, server: str, migration_id, source_host: str,
            destination_host: str, instance_name: str, since: str, until: str) -> dict[str, str]:
    """The hosts, instance and window to examine: from the cloud when a server is named,
    else from the parameters. Parameters given explicitly win over the cloud's records."""
    found: dict[str, str] = {"source_host": source_host, "destination_host": destination_host,
                             "instance_name": instance_name, "since": since, "until": until,
                             "server_id": "", "migration": ""}
    if server:
        from . import migrate

        conn = migrate.connect(cloud, clouds_yaml)
        c = case_from_cloud(conn, server, migration_id or None)
        found.update({k: v for k, v in {"source_host": c.source_host, "destination_host": c.destination_host,
                                        "instance_name": c.instance_name, "since": c.since, "until": c.until}.items()
                      if not found[k]})
        found["server_id"], found["migration"] = c.server_id, f"{c.migration_id} ({c.status})"
    if not found["source_host"]:
        raise ParamsError("name the server (with a cloud), or give source_host (and destination_host)", key="server")
    from .params import check_host_names

    # a migration the scheduler could not place has no destination: source and conductor then
    check_host_names(site, [h for h in (found["source_host"], found["destination_host"]) if h],
                     "source_host/destination_host")
    return found


def events(cloud: str | None, clouds_yaml, server_id: str, since: str) -> pd.DataFrame:
    """The server's instance actions and events with Nova's fault details (API ≥ 2.84)."""
    if not server_id:
        return pd.DataFrame(columns=["action", "request_id", "start", "event", "result", "host", "details"])
    from . import migrate

    return migrate.events_table(migrate.connect(cloud, clouds_yaml), server_id, since[:19] if since else None)
