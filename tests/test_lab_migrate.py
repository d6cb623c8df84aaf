"""Migrate and host maintenance against the lab's real OpenStack API (Keystone, Placement, Nova).

The lab's computes run nova-compute with Nova's fake virt driver (real API, scheduler,
conductor and Placement; fake guests), sized as in the source procedure: compute1 4 cores /
8 GB, compute2 2 cores / 4 GB. Everything runs through papermill; assertions are on the
archived output. The pairwise SSH check is off (check_hosts = False): these fake guests do not
use libvirt; tests/test_lab_runbook.py covers the libvirt side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from runbook_lib import lab, migrate, params
from runbook_lib.cloud import api
from runbook_lib.cloud.layout import IMAGE_ID

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")]
ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("RUNBOOK_LAB_TEST_DIR", "/var/lib/runbook-lab-test")) / "runbook-migrate"
NET = "198.18.5.0/24"


@pytest.fixture(scope="module")
def the_lab():
    info = lab.up(computes=2, mode="ns", net=NET, lab_dir=LAB_DIR, cloud=True)
    yield info
    lab.down(lab_dir=LAB_DIR)


@pytest.fixture(scope="module")
def conn(the_lab):
    site = params.load(the_lab.params_file)
    assert site.cloud == "lab" and site.clouds_yaml is not None
    c = api.connect(site.cloud, site.clouds_yaml)
    api.boot(c, "srv-a", IMAGE_ID, "m1.tiny", host="compute1")
    api.boot(c, "srv-big", IMAGE_ID, "m1.large", host="compute1")  # fits only compute1 (3 cores / 6 GB)
    yield c
    c.close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return tmp_path_factory.mktemp("migrate-archive")


def run(the_lab, archive: Path, phase: str, *overrides: str) -> tuple[subprocess.CompletedProcess, Path, dict]:
    argv = [sys.executable, "-m", "runbook_lib.cli", "run", phase, "-p", str(the_lab.params_file),
            "--archive", str(archive)]
    for o in overrides:
        argv += ["-P", o]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT)
    d = sorted(p for p in archive.iterdir() if p.is_dir())[-1]
    return proc, d, json.loads((d / "summary.json").read_text())


def verdicts(s: dict) -> dict[str, str]:
    return {c["check"]: c["verdict"] for c in s["checks"]}


def test_plan_only_runs_the_prechecks_and_moves_nothing(the_lab, conn, archive):
    proc, d, s = run(the_lab, archive, "20_migrate", "server=srv-a", "destination_host=compute2", "check_hosts=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = verdicts(s)
    assert v["server-state"] == v["destination-service"] == v["destination-capacity"] == "pass"
    assert v["live-migration"] == "skip"
    assert api.server_state(conn, migrate.server(conn, "srv-a")["id"])["host"] == "compute1"


def test_migrate_moves_the_server_and_verifies_it(the_lab, conn, archive):
    proc, d, s = run(the_lab, archive, "20_migrate", "server=srv-a", "destination_host=compute2",
                     "check_hosts=false", "apply=true")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (m,) = s["migrations"]
    assert m["verified"] and m["status"] == "completed" and m["source"] == "compute1" and m["destination"] == "compute2"
    assert api.server_state(conn, m["server_id"])["host"] == "compute2"
    record = api.migration_record(conn, m["server_id"], m["migration_id"])
    assert record["status"] == "completed" and record["destination"] == "compute2"
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "migrate.outcome_table([outcome])" in c.source)
    table = next(o for o in cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]
    assert "verified" in table and "compute1" in table and "compute2" in table


def test_a_disabled_destination_is_refused_with_the_reason(the_lab, conn, archive):
    api.set_compute_service(conn, "compute1", False, "runbook test: disabled")
    try:
        proc, d, s = run(the_lab, archive, "20_migrate", "server=srv-a", "destination_host=compute1",
                         "check_hosts=false", "apply=true")
    finally:
        api.set_compute_service(conn, "compute1", True)
    assert proc.returncode == 1
    details = {c["check"]: c for c in s["checks"]}
    assert details["destination-service"]["verdict"] == "fail" and "disabled" in details["destination-service"]["detail"]
    (m,) = s["migrations"]
    assert m["status"] == "not started" and "destination-service" in m["reason"] and not m["verified"]
    assert api.server_state(conn, m["server_id"])["host"] == "compute2"


def test_a_failing_migration_is_reported_as_failed_not_success(conn):
    """Bypassing the pre-checks: Nova accepts the request (202), then finds no host with room
    for a 3-core / 6 GB guest and rolls back; the outcome must say so."""
    big = migrate.server(conn, "srv-big")
    o = migrate.migrate(conn, big, None, timeout=120)
    assert not o.verified
    assert o.status in ("error", "failed", "refused"), o
    assert api.server_state(conn, big["id"])["host"] == "compute1" == o.source
    assert o.reason  # the record's status and Nova's fault, for the operator


def test_troubleshoot_finds_the_hosts_and_window_from_the_cloud(the_lab, conn, archive):
    """Named by server only: the notebook takes source, destination and the time window from
    the migration record, and shows Nova's instance-action events with their details."""
    proc, d, s = run(the_lab, archive, "30_troubleshoot", "server=srv-big")
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    case_cell = next(c for c in nb.cells if "troubleshoot.resolve(" in c.source)
    case = next(o for o in case_cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]
    assert "'source_host': 'compute1'" in case and "'migration': '" in case
    ev_cell = next(c for c in nb.cells if "troubleshoot.events(" in c.source)
    events = next(o for o in ev_cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]
    assert "live-migration" in events


def test_drain_a_host_at_concurrency_two(the_lab, conn, archive):
    conn.compute.delete_server(migrate.server(conn, "srv-big")["id"])
    conn.compute.delete_server(migrate.server(conn, "srv-a")["id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and list(conn.compute.servers(all_projects=True)):
        time.sleep(0.5)
    for name in ("srv-b", "srv-c"):  # compute2 (2 cores) has room for both
        api.boot(conn, name, IMAGE_ID, "m1.tiny", host="compute1")
    proc, d, s = run(the_lab, archive, "40_maintenance", "host=compute1", "concurrency=2", "apply=true",
                     "reason=runbook test drain")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    v = [c for c in s["checks"] if c["check"] == "live-migration"]
    assert len(v) == 2 and {c["verdict"] for c in v} == {"pass"}
    assert verdicts(s)["host-empty"] == "pass"
    assert api.servers_on_host(conn, "compute1") == []
    svc = api.compute_service(conn, "compute1")
    assert svc.status == "disabled"  # left disabled for the maintenance (reenable = False)
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "migrate.timeline_table(drained)" in c.source)
    timeline = next(o for o in cell.outputs if o.output_type == "execute_result")["data"]["text/plain"]
    assert "disabled nova-compute on compute1: runbook test drain" in timeline
