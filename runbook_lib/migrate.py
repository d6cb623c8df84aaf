"""The migrate and host-maintenance phases: pick, pre-check, migrate, watch, verify, drain.

``nova live-migration <id> <host>`` printing nothing is not verification: since API 2.34
the pre-checks run after the API answered, and a failed live migration rolls back and
leaves the server ACTIVE on its source. A migration here is a success only when the
server's compute host changed, its migration record says ``completed`` and the server is
ACTIVE (what Watcher checks). Everything talks to the cloud through :mod:`runbook_lib.cloud.api`.
"""

from __future__ import annotations

import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping

import pandas as pd

from .checks import FAIL, PASS, SKIP, WARN, Check
from .cloud import api
from .errors import ParamsError, RunbookError

ON_TIMEOUT = ("abort", "force-complete")


def connect(cloud: str | None, clouds_yaml: Any = None) -> Any:
    """A connection to the site's cloud (``cloud`` in ``clouds.yaml``; credentials stay there)."""
    if not cloud:
        raise ParamsError("this phase talks to the cloud: set cloud (and clouds_yaml) in the params file", key="cloud")
    return api.connect(cloud, config_file=clouds_yaml or None)


def validate(block_migration: Any, timeout: Any, on_timeout: str, concurrency: int = 1) -> Any:
    """Check the phase's own parameters; returns block_migration in API form."""
    if block_migration not in ("auto", True, False):
        raise ParamsError(f"expected auto, true or false, got {block_migration!r}", key="block_migration")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 10 <= timeout <= 86400:
        raise ParamsError(f"expected seconds from 10 to 86400, got {timeout!r}", key="timeout")
    if on_timeout not in ON_TIMEOUT:
        raise ParamsError(f"expected abort or force-complete, got {on_timeout!r}", key="on_timeout")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= 16:
        raise ParamsError(f"expected 1 to 16, got {concurrency!r}", key="concurrency")
    return block_migration


# ------------------------------------------------------------------------------ pre-checks


def computes(conn: Any) -> pd.DataFrame:
    """Compute services with their state and free capacity (from Placement)."""
    cap = api.host_capacity(conn)
    rows = []
    for s in api.services(conn, "nova-compute"):
        c = cap.get(s.host, {})
        rows.append({"host": s.host, "status": s.status, "state": s.state,
                     "free VCPU": c.get("VCPU", {}).get("free"), "free MEMORY_MB": c.get("MEMORY_MB", {}).get("free"),
                     "free DISK_GB": c.get("DISK_GB", {}).get("free")})
    return pd.DataFrame(rows, columns=["host", "status", "state", "free VCPU", "free MEMORY_MB", "free DISK_GB"])


def prechecks(conn: Any, server: Mapping[str, Any], destination: str | None,
              pair_verdict: str | None = None) -> list[Check]:
    """Can this server be live-migrated (to ``destination``, or anywhere)? Each with a reason."""
    name = server["name"]
    out: list[Check] = []
    ok_state = server["status"] == "ACTIVE" and not server["task_state"]
    out.append(Check(name, "server-state", PASS if ok_state else FAIL,
                     f"{server['status']}" + (f", task {server['task_state']}" if server["task_state"] else ""),
                     "" if ok_state else "live migration needs an ACTIVE server with no task in progress"))
    out.append(Check(name, "server-lock", FAIL if server["locked"] else PASS,
                     "locked" if server["locked"] else "not locked", "unlock the server first" if server["locked"] else ""))
    services = {s.host: s for s in api.services(conn, "nova-compute")}
    src = services.get(server["host"])
    good = src is not None and src.state == "up"
    out.append(Check(server["host"] or "-", "source-service", PASS if good else FAIL,
                     f"nova-compute on {server['host']}: {src.status + '/' + src.state if src else 'absent'}",
                     "" if good else "the source's nova-compute must be up: it runs the migration"))
    cap = api.host_capacity(conn)
    need = {"VCPU": server["vcpus"] or 0, "MEMORY_MB": server["ram"] or 0, "DISK_GB": server["disk"] or 0}

    def fits(host: str) -> list[str]:
        free = cap.get(host, {})
        return [f"{rc} {free.get(rc, {}).get('free', 0):g} < {n}" for rc, n in need.items()
                if n and free.get(rc, {}).get("free", 0) < n]

    if destination:
        d = services.get(destination)
        if d is None:
            out.append(Check(destination, "destination-service", FAIL, "no nova-compute on this host",
                             "choose a compute host from the list"))
        else:
            usable = d.status == "enabled" and d.state == "up" and destination != server["host"]
            reason = ("it is the server's current host" if destination == server["host"]
                      else f"nova-compute {d.status}/{d.state}")
            out.append(Check(destination, "destination-service", PASS if usable else FAIL, reason,
                             "" if usable else "the destination must be another enabled, up compute"))
            short = fits(destination)
            out.append(Check(destination, "destination-capacity", FAIL if short else PASS,
                             "; ".join(short) if short else "room for " + ", ".join(f"{rc} {n}" for rc, n in need.items()),
                             "choose a host with room, or free it" if short else ""))
    else:
        candidates = [h for h, s in services.items() if h != server["host"] and s.status == "enabled"
                      and s.state == "up" and not fits(h)]
        out.append(Check("-", "destination-capacity", PASS if candidates else FAIL,
                         f"the scheduler can choose from {', '.join(sorted(candidates))}" if candidates
                         else "no other enabled, up compute has room for the flavor",
                         "" if candidates else "enable a compute or free capacity"))
    if pair_verdict is not None:
        ok = pair_verdict.startswith("ok")
        out.append(Check(f"{server['host']}→{destination}", "preflight-pair", PASS if ok else FAIL, pair_verdict,
                         "" if ok else "fix what the preflight's pairwise matrix names (00_preflight, 10_configure)"))
    return out


def blocking(checks: Iterable[Check]) -> list[Check]:
    """The pre-checks that forbid migrating."""
    return [c for c in checks if c.verdict == FAIL]


# ------------------------------------------------------------------------------ migrating


@dataclass
class Outcome:
    """One live migration, as verified."""

    server: str
    server_id: str
    source: str
    requested: str | None
    destination: str | None = None
    migration_id: int | None = None
    status: str = "not started"
    verified: bool = False
    reason: str = ""
    start: str = ""
    end: str = ""
    seconds: float = 0.0
    on_timeout_action: str | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def migrate(conn: Any, server: Mapping[str, Any], destination: str | None, *, block_migration: Any = "auto",
            timeout: float = 300, on_timeout: str = "abort", interval: float = 0.25,
            progress: Callable[[Mapping[str, Any]], None] | None = None) -> Outcome:
    """Start a live migration, watch it, act on timeout, and verify the result."""
    o = Outcome(server["name"], server["id"], server["host"], destination or None, start=_now())
    t0 = time.monotonic()
    try:
        before = api.start_live_migration(conn, server["id"], destination or None, block_migration)
    except api.CloudAPIError as exc:
        o.status, o.reason, o.end = "refused", str(exc), _now()
        return o
    record = None
    deadline = t0 + timeout
    acted = False
    while True:
        record = api.new_migration(conn, server["id"], before) or record
        state = api.server_state(conn, server["id"])
        if record is not None:
            o.migration_id = record.id
            if record.status == "running":  # the only state with memory counters to read
                p = api.migration_progress(conn, server["id"], record.id)
                if p:
                    sample = {"t": round(time.monotonic() - t0, 2), **p}
                    o.samples.append(sample)
                    if progress:
                        progress(sample)
        settled = not state["task_state"] and state["status"] in ("ACTIVE", "ERROR")
        if record is not None and record.status in api.MIGRATION_DONE and settled:
            break
        if time.monotonic() > deadline and not acted and record is not None:
            acted = True
            o.on_timeout_action = on_timeout
            try:
                if on_timeout == "abort":
                    api.abort_migration(conn, server["id"], record.id)
                else:
                    api.force_complete_migration(conn, server["id"], record.id)
            except api.CloudAPIError as exc:
                o.reason = f"{on_timeout} after {timeout:g} s failed: {exc}"
            deadline = time.monotonic() + 120  # for the abort / completion to settle
        elif time.monotonic() > deadline:
            o.status, o.end = "did not settle", _now()
            o.reason = (o.reason + "; " if o.reason else "") + \
                f"nothing settled in time (server {state['status']}/{state['task_state']})"
            o.seconds = time.monotonic() - t0
            return o
        time.sleep(interval)
    final = api.server_state(conn, server["id"])
    o.status, o.destination, o.end, o.seconds = record.status, final["host"], _now(), time.monotonic() - t0
    o.verified = (final["host"] != o.source and record.status == "completed" and final["status"] == "ACTIVE"
                  and (not destination or final["host"] == destination))
    if not o.verified:
        why = [f"migration {record.status}", f"server {final['status']} on {final['host']}"]
        if o.on_timeout_action:
            why.insert(0, f"timed out after {timeout:g} s, {o.on_timeout_action} requested")
        try:
            faults = [e["details"] for e in api.instance_events(conn, server["id"]) if e.get("details")]
        except api.CloudAPIError:
            faults = []
        if final["status"] == "ERROR" and final["host"] == o.source:
            # Nova may leave the server in ERROR after a failed live migration although the guest
            # still runs on the source: say so, and how to recover once that is checked
            why.append(f"the guest should still run on {o.source}: check it, then "
                       f"`openstack server set --state active {server['id']}`")
        o.reason = "; ".join(why + faults[:2])
    return o


def outcome_table(outcomes: Iterable[Outcome]) -> pd.DataFrame:
    """Server, source, destination, start, end, duration and outcome, one row per migration."""
    rows = [{"server": o.server, "source": o.source, "destination": o.destination or "", "start": o.start,
             "end": o.end, "seconds": round(o.seconds, 1),
             "outcome": "verified" if o.verified else o.status, "reason": o.reason}
            for o in outcomes]
    return pd.DataFrame(rows, columns=["server", "source", "destination", "start", "end", "seconds", "outcome", "reason"])


def samples_table(o: Outcome) -> pd.DataFrame:
    """Memory processed / remaining over time (empty when the migration was too quick to sample)."""
    return pd.DataFrame(o.samples, columns=["t", "status", "memory_total_bytes", "memory_processed_bytes",
                                            "memory_remaining_bytes", "disk_total_bytes", "disk_remaining_bytes"])


def as_checks(outcomes: Iterable[Outcome]) -> list[Check]:
    """Migrations as verdicts for the summary: only a verified migration passes."""
    return [Check(o.server, "live-migration", PASS if o.verified else FAIL,
                  f"{o.source} → {o.destination or o.requested or '?'}: {'verified' if o.verified else o.status}"
                  + (f" ({o.reason})" if o.reason and not o.verified else ""),
                  "" if o.verified else "see 30_troubleshoot with the source and destination hosts")
            for o in outcomes]


def troubleshoot_hint(o: Outcome, instance_name: str | None = None) -> str:
    """The troubleshoot notebook's parameters for a failed migration."""
    if o.verified:
        return "verified: nothing to troubleshoot"
    dest = o.requested or o.destination or ""
    parts = ["runbook run 30_troubleshoot -p PARAMS", f"-P source_host={o.source}"]
    if dest and dest != o.source:
        parts.append(f"-P destination_host={dest}")
    if instance_name:
        parts.append(f"-P instance_name={instance_name}")
    if o.start:
        parts.append(f"-P since={o.start}")
    return " ".join(parts)


def events_table(conn: Any, server_id: str, since: str | None = None) -> pd.DataFrame:
    """The server's instance actions and events, with Nova's fault details (API 2.84)."""
    return pd.DataFrame(api.instance_events(conn, server_id, since),
                        columns=["action", "request_id", "start", "event", "result", "host", "details"])


# ------------------------------------------------------------------------------ host maintenance


@dataclass
class Drain:
    """What a host drain did."""

    host: str
    disabled: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    reenabled: bool = False
    timeline: list[dict[str, Any]] = field(default_factory=list)


def drain(conn: Any, host: str, *, reason: str, concurrency: int = 1, timeout: float = 300,
          on_timeout: str = "abort", retries: int = 1, reenable: bool = False,
          block_migration: Any = "auto", progress: Any = None) -> Drain:
    """Disable ``host``'s compute service, live-migrate every server away, verify each.

    At most ``concurrency`` migrations run at once (Nova's own
    ``max_concurrent_live_migrations`` is 1 per host by default); a failed one is retried
    ``retries`` times. The service is re-enabled at the end only if ``reenable``.
    ``progress`` is a tqdm-like bar: its total grows by each attempt's servers, and it
    advances as each migration settles.
    """
    d = Drain(host)
    service = api.compute_service(conn, host)
    if service is None:
        raise RunbookError(f"no nova-compute service on {host!r}")
    api.set_compute_service(conn, host, False, reason)
    d.disabled = True
    d.timeline.append({"t": _now(), "event": f"disabled nova-compute on {host}: {reason}"})
    for attempt in range(retries + 1):
        servers = [s for s in api.servers_on_host(conn, host) if s["status"] == "ACTIVE" and not s["task_state"]]
        if not servers:
            break
        if progress is not None:
            progress.total = (progress.total or 0) + len(servers)
            progress.refresh()
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="runbook-drain") as pool:
            futures = [pool.submit(migrate, conn, s, None, block_migration=block_migration,
                                   timeout=timeout, on_timeout=on_timeout) for s in servers]
            if progress is not None:
                for f in futures:
                    f.add_done_callback(lambda _f: progress.update(1))
            results = [f.result() for f in futures]
        for o in results:
            d.timeline.append({"t": o.end, "event": f"{o.server}: {'verified' if o.verified else o.status}"
                               + f" → {o.destination}" + (f" (attempt {attempt + 1})" if attempt else "")})
        d.outcomes += results
    d.left = api.servers_on_host(conn, host)
    if reenable:
        api.set_compute_service(conn, host, True)
        d.reenabled = True
        d.timeline.append({"t": _now(), "event": f"re-enabled nova-compute on {host}"})
    return d


def drain_checks(d: Drain) -> list[Check]:
    """A drain as verdicts: every final migration verified and the host empty."""
    final: dict[str, Outcome] = {}
    for o in d.outcomes:
        final[o.server_id] = o  # the last attempt counts
    out = as_checks(final.values())
    out.append(Check(d.host, "host-empty", PASS if not d.left else FAIL,
                     "no servers left" if not d.left else "left: " + ", ".join(f"{s['name']} ({s['status']})" for s in d.left),
                     "" if not d.left else "see each failed migration's reason; 30_troubleshoot explains the logs"))
    out.append(Check(d.host, "service", WARN if d.reenabled else PASS,
                     "re-enabled (reenable = True)" if d.reenabled else "left disabled for the maintenance"))
    return out


def plan_drain(conn: Any, host: str) -> pd.DataFrame:
    """What a drain would move (apply = False)."""
    return pd.DataFrame(api.servers_on_host(conn, host),
                        columns=["name", "id", "status", "task_state", "host", "flavor", "vcpus", "ram"])


def records(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """Outcomes as plain data for the archive."""
    return [{k: v for k, v in asdict(o).items() if k != "samples"} | {"samples": len(o.samples)} for o in outcomes]


def skipped(reason: str) -> list[Check]:
    """The summary of a plan-only run."""
    return [Check("-", "live-migration", SKIP, reason)]


# ------------------------------------------------------------------------------ notebook calls


def server(conn: Any, name_or_id: str) -> dict[str, Any]:
    """The server to move, by name or ID."""
    if not name_or_id:
        raise ParamsError("name the server to migrate (its name or ID)", key="server")
    return api.server_state(conn, api.find_server(conn, name_or_id).id)


def server_table(s: Mapping[str, Any]) -> pd.DataFrame:
    """One server as a two-column table."""
    return pd.DataFrame([{"field": k, "value": v} for k, v in s.items()])


def checks_table(checks: Iterable[Check]) -> pd.DataFrame:
    """Pre-checks as a table."""
    return pd.DataFrame([asdict(c) for c in checks], columns=["host", "check", "verdict", "detail", "remediation"])


def run_if(conn: Any, s: Mapping[str, Any], destination: str | None, checks: Iterable[Check], apply: bool,
           **kwargs: Any) -> Outcome:
    """Migrate when ``apply`` is true and no pre-check failed; otherwise say why not."""
    stop = blocking(checks)
    if not apply:
        return Outcome(s["name"], s["id"], s["host"], destination or None, status="planned (apply = False)")
    if stop:
        return Outcome(s["name"], s["id"], s["host"], destination or None, status="not started",
                       reason="pre-checks failed: " + "; ".join(f"{c.check}: {c.detail}" for c in stop))
    bar = _progress_bar(s["name"])
    try:
        return migrate(conn, s, destination, progress=bar.update if bar else None, **kwargs)
    finally:
        if bar:
            bar.close()


class _Bar:
    """A tqdm bar over the migrated share of guest memory (in a notebook or a terminal)."""

    def __init__(self, name: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=100, desc=f"migrating {name}", unit="%")

    def update(self, sample: Mapping[str, Any]) -> None:
        total = sample.get("memory_total_bytes") or 0
        remaining = sample.get("memory_remaining_bytes") or 0
        if total:
            self.bar.n = round(100 * (total - remaining) / total)
            self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _progress_bar(name: str) -> _Bar | None:
    try:
        return _Bar(name)
    except ImportError:
        return None


def as_checks_if(o: Outcome) -> list[Check]:
    """The migration's verdict, or a skip when only pre-checks ran."""
    if o.status.startswith("planned"):
        return skipped("pre-checks only (apply = False)")
    return as_checks([o])


def drain_if(conn: Any, host: str, apply: bool, **kwargs: Any) -> Drain:
    """Drain the host when ``apply`` is true; otherwise an empty record."""
    if not apply:
        return Drain(host)
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return drain(conn, host, **kwargs)
    bar = tqdm(total=0, desc=f"draining {host}", unit="server")
    try:
        return drain(conn, host, progress=bar, **kwargs)
    finally:
        bar.close()


def drain_checks_if(d: Drain, apply: bool) -> list[Check]:
    """The drain's verdicts, or a skip when it only showed what would move."""
    return drain_checks(d) if apply else skipped("showed what would move (apply = False)")


def timeline_table(d: Drain) -> pd.DataFrame:
    """When what happened during the drain."""
    return pd.DataFrame(d.timeline, columns=["t", "event"])
