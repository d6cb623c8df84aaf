"""The lab's cloud against real services: Keystone, Placement, Nova with a nova-compute inside
each lab compute host.  Needs root; brings a lab up in its own directory and network.

One lab per mode (module-scoped, ~1-1.5 min to bring up on a 2-core machine once the services
venv is cached); the last test takes it down and checks nothing is left.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from runbook_lib import cloud, lab
from runbook_lib.cloud import api, procs

pytestmark = pytest.mark.lab

LAB_DIR = Path(os.environ.get("RUNBOOK_CLOUDTEST_LAB_DIR", "/var/lib/runbook-lab-cloudtest"))
NET = os.environ.get("RUNBOOK_CLOUDTEST_NET", "198.18.3.0/24")
#: share the default lab's caches (rootfs, guest, services venv) so they are built once
CACHE = os.environ.get("RUNBOOK_LAB_CACHE", "/var/lib/runbook-lab/cache")
MODES = os.environ.get("RUNBOOK_CLOUDTEST_MODES", "ns,nspawn").split(",")


def _ssh(host: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(LAB_DIR / "ssh_config"), "-o", "BatchMode=yes", host,
                           command], capture_output=True, text=True, timeout=timeout)


def _cloud_state() -> dict:
    return json.loads((LAB_DIR / "cloud/state.json").read_text())


@pytest.fixture(scope="module", params=MODES)
def labcloud(request: pytest.FixtureRequest):
    """A lab with its cloud: (LabInfo, CloudInfo, connection)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: the lab creates namespaces and bridges, the cloud runs MariaDB "
                    "and RabbitMQ")
    mode = request.param
    info = lab.up(computes=2, mode=mode, net=NET, lab_dir=LAB_DIR, cache_dir=CACHE)
    try:
        # a no-op when `lab up` brought the cloud up already
        cloud_info = cloud.up(LAB_DIR, cache_dir=CACHE)
        conn = cloud_info.connect()
        yield info, cloud_info, conn
    finally:
        if cloud.status(LAB_DIR).state != "down":
            cloud.down(LAB_DIR, stop_computes=False)
        lab.down(LAB_DIR, cache_dir=CACHE)
        # not lab.down(purge=True): with cache_dir given it would delete the shared caches
        shutil.rmtree(LAB_DIR, ignore_errors=True)


def test_services_and_hypervisors_have_the_configured_sizes(labcloud) -> None:
    _, cloud_info, conn = labcloud
    rows = {(s.binary, s.host): s for s in api.services(conn)}
    for key in [("nova-conductor", "controller"), ("nova-scheduler", "controller"),
                ("nova-compute", "compute1"), ("nova-compute", "compute2")]:
        assert rows[key].state == "up" and rows[key].status == "enabled", rows
    sizes = {h.name: (h.vcpus, h.memory_mb, h.state) for h in api.hypervisors(conn)}
    assert sizes == {"compute1": (4, 8192, "up"), "compute2": (2, 4096, "up")}
    inventories = api.placement_inventories(conn)
    assert inventories["compute1"]["VCPU"] == 4 and inventories["compute2"]["MEMORY_MB"] == 4096
    # the same cloud through python-openstackclient and clouds.yaml
    out = subprocess.run([str(cloud_info.openstack_cli), "--os-cloud", "lab", "compute",
                          "service", "list", "-f", "json"], capture_output=True, text=True,
                         env={**os.environ, **cloud_info.env}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {r["Host"] for r in json.loads(out.stdout) if r["Binary"] == "nova-compute"} == \
        {"compute1", "compute2"}
    assert (Path(cloud_info.clouds_yaml).stat().st_mode & 0o777) == 0o600


def test_listens_only_on_loopback_and_the_lab_bridge(labcloud) -> None:
    info, cloud_info, _ = labcloud
    state = json.loads(info.lab_dir.joinpath("state.json").read_text())
    assert cloud_info.listen == state["bridge_address"]
    mine = set()
    for ref in _cloud_state()["processes"].values():
        mine.update(procs.session_members(ref))
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pids = {int(p.split("=")[1]) for p in line.split("users:")[-1].replace(")", ",").split(",")
                if p.startswith("pid=")}
        if pids & mine:
            local = line.split()[3].rsplit(":", 1)[0].strip("[]")
            assert local in ("127.0.0.1", "::1", cloud_info.listen), line


def test_boot_and_live_migrate(labcloud) -> None:
    _, cloud_info, conn = labcloud
    server = api.boot(conn, "rbtest-migrate", cloud_info.image_id, "m1.tiny")
    try:
        source = server.compute_host
        target = "compute2" if source == "compute1" else "compute1"
        result = api.live_migrate(conn, server, target)
        assert result.ok, result
        assert (result.source, result.destination) == (source, target)
        assert conn.compute.get_server(server.id).compute_host == target
        records = [m for m in conn.compute.migrations(instance_uuid=server.id)
                   if m.id == result.migration_id]
        assert records[0].status == "completed"
    finally:
        conn.compute.delete_server(server)


def test_migration_to_a_disabled_compute_is_refused(labcloud) -> None:
    _, cloud_info, conn = labcloud
    server = api.boot(conn, "rbtest-disabled", cloud_info.image_id, "m1.tiny")
    source = server.compute_host
    target = "compute2" if source == "compute1" else "compute1"
    api.set_compute_service(conn, target, enabled=False, reason="rbtest maintenance")
    try:
        with pytest.raises(cloud.CloudAPIError, match="No valid host"):
            api.live_migrate(conn, server, target)
        after = conn.compute.get_server(server.id)
        assert after.compute_host == source and after.status == "ACTIVE"
    finally:
        api.set_compute_service(conn, target, enabled=True)
        conn.compute.delete_server(server)


def test_restart_nova_compute_through_the_hosts_service_manager(labcloud) -> None:
    _, _, conn = labcloud
    before = {h.name: h for h in conn.compute.hypervisors()}["compute2"]
    pid_before = _ssh("compute2", "pgrep -u nova -f rblab-nova-compute").stdout.split()
    restarted = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    result = _ssh("compute2", "service nova-compute restart", timeout=90)
    assert result.returncode == 0, result.stderr
    pid_after = _ssh("compute2", "pgrep -u nova -f rblab-nova-compute").stdout.split()
    assert pid_after and pid_after != pid_before
    deadline = time.monotonic() + 90
    while True:     # a fresh report from the new process, not the old one's last heartbeat
        row = [s for s in conn.compute.services(binary="nova-compute", host="compute2")][0]
        updated = dt.datetime.fromisoformat(row.updated_at.rstrip("Z")) if row.updated_at else None
        if row.state == "up" and updated and updated > restarted + dt.timedelta(seconds=1):
            break
        assert time.monotonic() < deadline, f"compute2 did not report after restart: {row}"
        time.sleep(1)
    log = _ssh("compute2", "cat /var/log/nova/nova-compute.log").stdout
    assert "Refusing to start" not in log
    after = {h.name: h for h in conn.compute.hypervisors()}["compute2"]
    assert after.id == before.id          # the same compute node: its identity survived


def test_lab_down_leaves_nothing(labcloud) -> None:
    info, _, _ = labcloud
    refs = _cloud_state()["processes"]
    bridge_address = json.loads(info.lab_dir.joinpath("state.json").read_text())["bridge_address"]
    ports = [_cloud_state()["epmd_port"], _cloud_state()["dist_port"]]
    lab.down(LAB_DIR, cache_dir=CACHE)
    assert cloud.status(LAB_DIR).state == "down"
    assert not any(procs.session_members(ref) for ref in refs.values())
    leftovers = subprocess.run(["pgrep", "-f", str(LAB_DIR)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    listening = procs.listening([bridge_address, "127.0.0.1", "::1"])
    assert not [l for l in listening if l.startswith(bridge_address)
                or int(l.rsplit(":", 1)[1]) in ports], listening
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(LAB_DIR) not in mounts and str(Path(CACHE) / "cloud-venv") not in mounts
    assert not (LAB_DIR / "cloud").exists() and not (LAB_DIR / "clouds.yaml").exists()
