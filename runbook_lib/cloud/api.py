"""The project's one door to an OpenStack cloud: the only module that imports ``openstack``.

Everything else receives a :class:`openstack.connection.Connection` from :func:`connect` (or a
test double of it).  Asynchronous calls are verified, never assumed: :func:`live_migrate`
returns only when the server's host changed *and* the migration record says ``completed``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
from openstack import exceptions as sdk_exceptions
from openstack.config import loader

from runbook_lib.cloud.errors import CloudAPIError

#: Microversion of live migrations: 2.30 is the first where a requested host goes through the
#: scheduler unless ``force`` is given (and we never force); 2.68 removed ``force`` altogether.
LIVE_MIGRATE_MICROVERSION = "2.30"
#: The last microversion whose ``os-hypervisors`` still reports vcpus/memory_mb (2.88 dropped them).
HYPERVISOR_SIZES_MICROVERSION = "2.87"
MIGRATION_DONE = ("completed", "error", "failed", "cancelled", "done")

HttpError = sdk_exceptions.HttpException


def connect(cloud: str = "lab", config_file: str | Path | None = None) -> Any:
    """Open a connection to ``cloud`` as described in a ``clouds.yaml``.

    Parameters
    ----------
    cloud
        The entry in ``clouds.yaml`` (the lab's is ``lab``).
    config_file
        The ``clouds.yaml`` to read; default: the usual search (``$OS_CLIENT_CONFIG_FILE``,
        ``./clouds.yaml``, ``~/.config/openstack/``, ``/etc/openstack/``).

    Returns
    -------
    openstack.connection.Connection
    """
    try:
        if config_file is None:
            return openstack.connect(cloud=cloud)
        config = loader.OpenStackConfig(config_files=[str(config_file)])
        return openstack.connection.Connection(config=config.get_one(cloud=cloud))
    except sdk_exceptions.SDKException as exc:
        raise CloudAPIError(f"cannot connect to cloud {cloud!r}"
                            + (f" from {config_file}" if config_file else "")
                            + f": {exc}") from exc


# ---------------------------------------------------------------------- identity (lab setup)
def register_services(conn: Any, passwords: Mapping[str, str],
                      catalog: Iterable[tuple[str, str, str]], region: str) -> None:
    """Create the service users and the public catalog entries (idempotent).

    Parameters
    ----------
    conn
        An admin connection.
    passwords
        Service user name -> password; each user gets ``admin`` and ``service`` on project
        ``service``.
    catalog
        ``(name, type, url)`` of each service.
    region
        Region of the endpoints.
    """
    idn = conn.identity
    project = idn.find_project("service", ignore_missing=True) or idn.create_project(
        name="service", domain_id="default")
    # "service": Nova sends its own token as X-Service-Token; a real Neutron or Cinder rejects
    # it unless that token carries this role.  The stand-ins do not care; keep it realistic.
    roles = [idn.find_role("admin", ignore_missing=False),
             idn.find_role("service", ignore_missing=True) or idn.create_role(name="service")]
    for name, password in passwords.items():
        user = idn.find_user(name, domain_id="default", ignore_missing=True) or idn.create_user(
            name=name, password=password, domain_id="default")
        for role in roles:
            idn.assign_project_role_to_user(project, user, role)
    for name, kind, url in catalog:
        service = idn.find_service(name, ignore_missing=True) or idn.create_service(
            name=name, type=kind)
        have = {(e.interface, e.url) for e in idn.endpoints(service_id=service.id)}
        if ("public", url) not in have:
            idn.create_endpoint(service_id=service.id, interface="public", url=url,
                                region_id=region)


def ensure_flavors(conn: Any, flavors: Iterable[tuple[str, int, int, int]]) -> None:
    """Create the ``(name, vcpus, ram_mb, disk_gb)`` flavors that do not exist yet."""
    have = {f.name for f in conn.compute.flavors()}
    for name, vcpus, ram, disk in flavors:
        if name not in have:
            conn.compute.create_flavor(name=name, vcpus=vcpus, ram=ram, disk=disk)


# -------------------------------------------------------------------------------- inspection
@dataclass(frozen=True)
class ServiceRow:
    """One row of ``os-services``."""

    binary: str
    host: str
    status: str        # "enabled" / "disabled"
    state: str         # "up" / "down"
    id: str


def services(conn: Any, binary: str | None = None) -> list[ServiceRow]:
    """Compute services (``openstack compute service list``)."""
    query = {"binary": binary} if binary else {}
    return [ServiceRow(s.binary, s.host, s.status, s.state, s.id)
            for s in conn.compute.services(**query)]


@dataclass(frozen=True)
class HypervisorRow:
    """One hypervisor with its size and use."""

    name: str
    state: str
    status: str
    vcpus: int
    vcpus_used: int
    memory_mb: int
    memory_mb_used: int
    running_vms: int


def hypervisors(conn: Any) -> list[HypervisorRow]:
    """Hypervisors with vCPU and RAM totals (asks at microversion 2.87, the last that has them)."""
    response = conn.compute.get("/os-hypervisors/detail",
                                microversion=HYPERVISOR_SIZES_MICROVERSION)
    _raise_for(response, "listing hypervisors")
    return [HypervisorRow(h["hypervisor_hostname"], h["state"], h["status"], h["vcpus"],
                          h["vcpus_used"], h["memory_mb"], h["memory_mb_used"], h["running_vms"])
            for h in response.json()["hypervisors"]]


def placement_inventories(conn: Any) -> dict[str, dict[str, int]]:
    """Resource provider name -> {resource class: total} from Placement."""
    return {rp.name: {inv.resource_class: inv.total
                      for inv in conn.placement.resource_provider_inventories(rp)}
            for rp in conn.placement.resource_providers()}


def _raise_for(response: Any, what: str) -> None:
    if response.status_code >= 400:
        raise CloudAPIError(f"{what} failed: HTTP {response.status_code} {response.text[:300]}")


# ---------------------------------------------------------------------------- servers, moves
def boot(conn: Any, name: str, image_id: str, flavor: str, *, host: str | None = None,
         timeout: float = 120) -> Any:
    """Boot a port-less server (``networks='none'``) and wait until it is ACTIVE.

    Parameters
    ----------
    host
        Ask the scheduler for this compute host (admin only; microversion 2.74).
    """
    found = conn.compute.find_flavor(flavor, ignore_missing=False)
    attrs: dict[str, Any] = dict(name=name, image_id=image_id, flavor_id=found.id,
                                 networks="none")
    if host:
        attrs["host"] = host
    try:
        server = conn.compute.create_server(**attrs)
        return conn.compute.wait_for_server(server, interval=0.5, wait=timeout)
    except sdk_exceptions.SDKException as exc:
        raise CloudAPIError(f"booting {name} failed: {exc}") from exc


@dataclass(frozen=True)
class MigrationResult:
    """The outcome of one verified live migration."""

    server_id: str
    source: str
    destination: str
    migration_id: int | None
    status: str
    seconds: float

    @property
    def ok(self) -> bool:
        """Host changed and the migration record says completed."""
        return self.status == "completed" and self.source != self.destination


def live_migrate(conn: Any, server: Any, host: str | None = None, *, timeout: float = 120,
                 interval: float = 0.2) -> MigrationResult:
    """Live-migrate ``server`` (through the scheduler, never forced) and verify the outcome.

    Parameters
    ----------
    server
        A server object or ID.
    host
        Requested destination; ``None`` lets the scheduler choose.

    Returns
    -------
    MigrationResult
        ``ok`` only if the compute host changed and the migration record is ``completed``.  A
        refused or failed migration returns a result with the record's status (a failed live
        migration rolls the server back to ACTIVE on its source).

    Raises
    ------
    CloudAPIError
        The API refused the request outright (the HTTP error is the ``__cause__``), or nothing
        settled within ``timeout``.
    """
    server = conn.compute.get_server(getattr(server, "id", server))
    source = server.compute_host
    before = {m.id for m in conn.compute.migrations(instance_uuid=server.id)}
    started = time.monotonic()
    body = {"os-migrateLive": {"host": host, "block_migration": "auto"}}
    response = conn.compute.post(f"/servers/{server.id}/action", json=body,
                                 microversion=LIVE_MIGRATE_MICROVERSION)
    if response.status_code >= 400:
        try:
            response.raise_for_status()
        except Exception as exc:
            raise CloudAPIError(f"live migration of {server.name} to {host or 'any host'} "
                                f"refused: HTTP {response.status_code} "
                                f"{_fault(response)}") from exc
    while True:
        now = conn.compute.get_server(server.id)
        records = [m for m in conn.compute.migrations(instance_uuid=server.id)
                   if m.id not in before and m.migration_type == "live-migration"]
        record = max(records, key=lambda m: m.id) if records else None
        settled = not now.task_state and now.status in ("ACTIVE", "ERROR")
        if record is not None and record.status in MIGRATION_DONE and settled:
            return MigrationResult(server.id, source, now.compute_host, record.id, record.status,
                                   time.monotonic() - started)
        if time.monotonic() - started > timeout:
            raise CloudAPIError(f"live migration of {server.name} did not settle in {timeout:.0f} "
                                f"s (server {now.status}/{now.task_state}, migration "
                                f"{record.status if record else 'not recorded'})")
        time.sleep(interval)


def _fault(response: Any) -> str:
    try:
        data = response.json()
        inner = next(iter(data.values()))
        return inner.get("message", response.text[:300])
    except Exception:
        return response.text[:300]


def set_compute_service(conn: Any, host: str, enabled: bool, reason: str | None = None) -> None:
    """Enable or disable the nova-compute service of ``host``."""
    for service in conn.compute.services(binary="nova-compute", host=host):
        if enabled:
            conn.compute.enable_service(service, host, "nova-compute")
        else:
            conn.compute.disable_service(service, host, "nova-compute", disabled_reason=reason)
        return
    raise CloudAPIError(f"no nova-compute service on host {host!r}")


# ----------------------------------------------------------------- migrate and maintenance calls
#: Server migration details with memory counters: 2.23 (in-progress), abort 2.24, force-complete 2.22
SERVER_MIGRATIONS_MICROVERSION = "2.23"
ABORT_MICROVERSION = "2.24"
FORCE_COMPLETE_MICROVERSION = "2.22"
#: instance action events carry ``details`` (the fault message) from 2.84
ACTION_DETAILS_MICROVERSION = "2.84"


def find_server(conn: Any, name_or_id: str) -> Any:
    """A server by name or ID, across projects (admin); CloudAPIError when none or several."""
    try:
        return conn.compute.find_server(name_or_id, ignore_missing=False, all_projects=True)
    except sdk_exceptions.DuplicateResource as exc:
        raise CloudAPIError(f"several servers are called {name_or_id!r}: give its ID") from exc
    except sdk_exceptions.SDKException as exc:
        raise CloudAPIError(f"no server {name_or_id!r}: {exc}") from exc


def server_state(conn: Any, server_id: str) -> dict[str, Any]:
    """What the pre-checks and the verification read about a server."""
    s = conn.compute.get_server(server_id)
    flavor = s.flavor or {}
    return {
        "id": s.id, "name": s.name, "status": s.status, "task_state": s.task_state,
        "locked": bool(getattr(s, "is_locked", False)), "host": s.compute_host,
        "instance_name": getattr(s, "instance_name", None),
        "vcpus": flavor.get("vcpus"), "ram": flavor.get("ram"), "disk": flavor.get("disk"),
        "flavor": flavor.get("original_name") or flavor.get("name"),
    }


def servers_on_host(conn: Any, host: str) -> list[dict[str, Any]]:
    """Every server on a compute host, in every project."""
    return [server_state(conn, s.id) for s in conn.compute.servers(all_projects=True, compute_host=host)
            if s.compute_host == host]


def list_servers(conn: Any) -> list[dict[str, Any]]:
    """Every server (for pickers)."""
    return [{"id": s.id, "name": s.name, "status": s.status, "host": s.compute_host}
            for s in conn.compute.servers(all_projects=True)]


def host_capacity(conn: Any) -> dict[str, dict[str, dict[str, float]]]:
    """Per resource provider (compute host): total, used and free VCPU / MEMORY_MB / DISK_GB.

    Free = (total - reserved) * allocation_ratio - used: what the scheduler can still place
    (hypervisor size fields left the compute API in 2.88; Placement is the source).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for rp in conn.placement.resource_providers():
        usages = conn.placement.get(f"/resource_providers/{rp.id}/usages").json().get("usages", {})
        per: dict[str, dict[str, float]] = {}
        for inv in conn.placement.resource_provider_inventories(rp):
            cap = (inv.total - (inv.reserved or 0)) * (inv.allocation_ratio or 1.0)
            used = usages.get(inv.resource_class, 0)
            per[inv.resource_class] = {"total": inv.total, "used": used, "free": cap - used}
        out[rp.name] = per
    return out


def start_live_migration(conn: Any, server_id: str, host: str | None, block_migration: Any = "auto") -> set[int]:
    """POST os-migrateLive (2.30, never forced); returns the migration ids that existed before.

    Raises CloudAPIError when the API refuses outright (the HTTP error is the cause).
    """
    before = {m.id for m in conn.compute.migrations(instance_uuid=server_id)}
    body = {"os-migrateLive": {"host": host or None, "block_migration": block_migration}}
    response = conn.compute.post(f"/servers/{server_id}/action", json=body, microversion=LIVE_MIGRATE_MICROVERSION)
    if response.status_code >= 400:
        try:
            response.raise_for_status()
        except Exception as exc:
            raise CloudAPIError(f"live migration to {host or 'any host'} refused: HTTP "
                                f"{response.status_code} {_fault(response)}") from exc
    return before


def new_migration(conn: Any, server_id: str, before: set[int]) -> Any | None:
    """The live-migration record started after ``before`` (None until Nova has made it)."""
    records = [m for m in conn.compute.migrations(instance_uuid=server_id)
               if m.id not in before and m.migration_type == "live-migration"]
    return max(records, key=lambda m: m.id) if records else None


def migration_progress(conn: Any, server_id: str, migration_id: int) -> dict[str, Any] | None:
    """Memory counters of an in-progress migration (None once it is no longer in progress)."""
    response = conn.compute.get(f"/servers/{server_id}/migrations/{migration_id}",
                                microversion=SERVER_MIGRATIONS_MICROVERSION)
    if response.status_code >= 400:
        return None
    m = response.json().get("migration", {})
    return {k: m.get(k) for k in ("status", "memory_total_bytes", "memory_processed_bytes",
                                  "memory_remaining_bytes", "disk_total_bytes", "disk_remaining_bytes")}


def abort_migration(conn: Any, server_id: str, migration_id: int) -> None:
    """DELETE the running migration (2.24)."""
    response = conn.compute.delete(f"/servers/{server_id}/migrations/{migration_id}", microversion=ABORT_MICROVERSION)
    _raise_for(response, "aborting the migration")


def force_complete_migration(conn: Any, server_id: str, migration_id: int) -> None:
    """Force the running migration to complete (2.22: pauses the guest to finish)."""
    response = conn.compute.post(f"/servers/{server_id}/migrations/{migration_id}/action",
                                 json={"force_complete": None}, microversion=FORCE_COMPLETE_MICROVERSION)
    _raise_for(response, "forcing the migration to complete")


def migration_record(conn: Any, server_id: str, migration_id: int) -> dict[str, Any]:
    """The migration record as the os-migrations API shows it."""
    for m in conn.compute.migrations(instance_uuid=server_id):
        if m.id == migration_id:
            return {"id": m.id, "status": m.status, "source": m.source_compute, "destination": m.dest_compute,
                    "created": str(m.created_at), "updated": str(m.updated_at)}
    return {"id": migration_id, "status": "unknown"}


def instance_events(conn: Any, server_id: str, since: str | None = None) -> list[dict[str, Any]]:
    """Instance actions and their events, with ``details`` (2.84) where Nova recorded a fault."""
    response = conn.compute.get(f"/servers/{server_id}/os-instance-actions", microversion=ACTION_DETAILS_MICROVERSION)
    _raise_for(response, "listing instance actions")
    rows = []
    for action in response.json().get("instanceActions", []):
        if since and str(action.get("start_time", "")) < since:
            continue
        detail = conn.compute.get(f"/servers/{server_id}/os-instance-actions/{action['request_id']}",
                                  microversion=ACTION_DETAILS_MICROVERSION).json().get("instanceAction", {})
        for ev in detail.get("events", []) or [{}]:
            rows.append({"action": action.get("action"), "request_id": action.get("request_id"),
                         "start": action.get("start_time"), "event": ev.get("event"), "result": ev.get("result"),
                         "host": ev.get("host"), "details": ev.get("details")})
    return rows


def compute_service(conn: Any, host: str) -> ServiceRow | None:
    """The nova-compute service of ``host``."""
    for s in services(conn, "nova-compute"):
        if s.host == host:
            return s
    return None
