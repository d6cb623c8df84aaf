"""The runbook end to end on the lab: preflight fails → configure (plan, apply) → preflight passes,
then a real live migration over the configured transport and a shared-storage check.

The lab (nspawn: real systemd, Debian's socket-activated libvirt) starts in its seeded,
not-yet-configured state: nova uid 64061 on compute2, legacy ``[DEFAULT] vncserver_*``
lines, no libvirt TCP listener, local instances dirs. Tests run in file order on one lab.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from runbook_lib import lab, params
from runbook_lib.remote import Remote

pytestmark = [pytest.mark.lab, pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")]
ROOT = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("RUNBOOK_LAB_TEST_DIR", "/var/lib/runbook-lab-test")) / "runbook-e2e"
NET = "198.18.4.0/24"
CONFIGURE = ["-P", "transport=tcp", "-P", "insecure_lab_transport=true", "-P", "storage=nfs"]
WATCHED = ["/etc/nova/nova.conf", "/etc/libvirt/libvirtd.conf", "/etc/hosts", "/etc/fstab", "/etc/default/libvirtd"]


@pytest.fixture(scope="module")
def the_lab():
    info = lab.up(computes=2, mode="nspawn", net=NET, lab_dir=LAB_DIR, cloud=False)
    yield info
    lab.down(lab_dir=LAB_DIR)


@pytest.fixture(scope="module")
def site(the_lab):
    return params.load(the_lab.params_file)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return tmp_path_factory.mktemp("lab-archive")


@pytest.fixture(scope="module")
def pristine(site, the_lab):
    """Checksums of the watched files on every compute before anything changed."""
    return checksums(site)


def checksums(site) -> dict[str, str]:
    cmd = "sha256sum " + " ".join(WATCHED) + " 2>/dev/null; true"
    with Remote(site) as r:
        res = r.run(cmd, [h.name for h in site.computes])
    return {f"{h}:{line.split()[1]}": line.split()[0] for h, x in res.items() for line in x.stdout.splitlines()}


def runbook(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)


def last_run(archive: Path) -> tuple[Path, dict]:
    d = sorted(p for p in archive.iterdir() if p.is_dir())[-1]
    return d, json.loads((d / "summary.json").read_text())


def verdicts(summary: dict) -> dict[tuple[str, str], str]:
    return {(c["host"], c["check"]): c["verdict"] for c in summary["checks"]}


def test_preflight_finds_the_seeded_problems(the_lab, archive, pristine):
    proc = runbook("run", "00_preflight", "-p", str(the_lab.params_file), "--archive", str(archive),
                   "-P", "transport=tcp", "-P", "storage=nfs")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _, s = last_run(archive)
    v = verdicts(s)
    assert v[("compute2", "nova-ids")] == "fail" and v[("compute1", "nova-ids")] == "pass"
    for c in ("compute1", "compute2"):
        assert v[(c, "libvirt-daemon")] == "fail"  # socket-activated, no TCP listener
        assert v[(c, "vnc-config")] == "fail"  # legacy [DEFAULT] vncserver_* only
        assert v[(c, "instances-dir")] == "fail"  # local, storage=nfs wanted
        assert v[(c, "reachability")] == "fail"  # 16509 refused
        assert v[(c, "ssh")] == v[(c, "name-resolution")] == v[(c, "management-address")] == "pass"
        assert v[(c, "cpu-compat")] == "pass"  # same CPU; and virt_type = qemu
    assert v[("controller", "ssh")] == "pass"
    details = {(c["host"], c["check"]): c["detail"] for c in s["checks"]}
    assert "socket-activated" in details[("compute1", "libvirt-daemon")]
    assert "legacy [DEFAULT] vncserver_listen" in details[("compute1", "vnc-config")]


def test_real_migration_failures_are_named_by_the_troubleshoot_notebook(the_lab, site, archive, pristine):
    """On the seeded lab, a real libvirt live migration fails twice: nothing listens on
    compute2:16509, and (with compute2 gone from compute1's /etc/hosts) its name does not
    resolve. The troubleshoot notebook reads the real libvirtd journal and names both."""
    import datetime as dt

    since = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    g = the_lab.guest_name
    migrate_cmd = f"virsh migrate --live --p2p --persistent --undefinesource {g} qemu+tcp://compute2/system"
    with Remote(site) as r:
        assert r.run_one("compute1", f"virsh define {the_lab.guest_xml} >/dev/null && virsh start {g}").ok
        try:
            refused = r.run_one("compute1", migrate_cmd, timeout=120)
            assert not refused.ok and "Connection refused" in refused.stderr
            r.run_one("compute1", "cp -a /etc/hosts /root/hosts.saved && sed -i '/ compute2$/d; /\tcompute2$/d' /etc/hosts")
            unresolved = r.run_one("compute1", migrate_cmd, timeout=120)
            assert not unresolved.ok, unresolved.stdout
        finally:
            r.run_one("compute1", "[ -f /root/hosts.saved ] && cp -a /root/hosts.saved /etc/hosts && rm /root/hosts.saved")
            r.run_one("compute1", f"virsh destroy {g}; virsh undefine {g}")
    proc = runbook("run", "30_troubleshoot", "-p", str(the_lab.params_file), "--archive", str(archive),
                   "-P", "source_host=compute1", "-P", "destination_host=compute2", "-P", f"since={since}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    _, s = last_run(archive)
    found = {c["check"] for c in s["checks"] if c["verdict"] == "fail"}
    assert "libvirt-unreachable" in found and "name-resolution" in found, s["checks"]
    assert checksums(site) == pristine  # /etc/hosts restored: the runbook's later tests see the seeded lab


def test_configure_plan_shows_diffs_and_changes_nothing(the_lab, site, archive, pristine):
    proc = runbook("run", "10_configure", "-p", str(the_lab.params_file), "--archive", str(archive), *CONFIGURE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    d, s = last_run(archive)
    assert s["files_changed"] == [] and checksums(site) == pristine
    assert any("INSECURE LAB TRANSPORT" in w for w in s["warnings"])
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    diff = next(c for c in nb.cells if c.source.strip() == "the_plan.diff()").outputs[0]["data"]["text/plain"]
    assert "+server_proxyclient_address = 198.18.4.11" in diff and '+auth_tcp = "none"' in diff
    assert "Clients = 198.18.4.0/24;" in diff  # the export is limited to the management network


def test_configure_apply_then_preflight_passes(the_lab, site, archive):
    proc = runbook("run", "10_configure", "-p", str(the_lab.params_file), "--archive", str(archive), *CONFIGURE,
                   "-P", "apply=true")
    d, s = last_run(archive)
    failed = [c for c in s["checks"] if c["verdict"] == "fail"]
    assert proc.returncode == 0 and not failed, json.dumps(failed, indent=1) + proc.stderr[-2000:]
    assert "compute1:/etc/nova/nova.conf" in s["files_changed"] and "controller:/etc/ganesha/ganesha.conf" in s["files_changed"]
    verified = {c["host"]: c["detail"] for c in s["checks"] if c["check"] == "storage-verified"}
    assert verified["compute1"].startswith("nova wrote") and verified["compute2"].startswith("reads ") and " as nova 64060" in verified["compute2"]
    assert all(c["backup"] for c in s["changes"] if c.get("status") == "applied" and c["before_sha256"] != "absent")
    reowned = [c for c in s["changes"] if c.get("action", "").startswith("re-own")]
    assert reowned and reowned[0]["host"] == "compute2" and re.search(r"re-owned \d+ files", reowned[0]["output"])
    pre = runbook("run", "00_preflight", "-p", str(the_lab.params_file), "--archive", str(archive),
                  "-P", "transport=tcp", "-P", "storage=nfs")
    _, after = last_run(archive)
    bad = {k: x for k, x in verdicts(after).items() if x == "fail"}
    assert pre.returncode == 0 and not bad, bad
    assert verdicts(after)[("compute1", "libvirt-daemon")] == "warn"  # auth_tcp = none: a lab-only warning
    assert after["drift"]["regressed"] is False  # drift against the failing first run: only fixes


def test_second_apply_changes_nothing(the_lab, site, archive):
    before = checksums(site)
    proc = runbook("run", "10_configure", "-p", str(the_lab.params_file), "--archive", str(archive), *CONFIGURE,
                   "-P", "apply=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    _, s = last_run(archive)
    assert s["files_changed"] == []
    assert [c for c in s["changes"] if "action" in c] == []  # no restart, no usermod
    assert checksums(site) == before


def test_shared_storage_is_shared_with_the_right_owner(site):
    with Remote(site) as r:
        w = r.run_one("compute1", "su -s /bin/sh nova -c 'echo hello > /var/lib/nova/instances/rb-e2e-check'", timeout=240)
        assert w.ok, w.stderr
        got = r.run_one("compute2", "stat -c '%U %u' /var/lib/nova/instances/rb-e2e-check; cat /var/lib/nova/instances/rb-e2e-check")
        r.run_one("compute2", "rm -f /var/lib/nova/instances/rb-e2e-check")
    assert got.stdout.split() == ["nova", "64060", "hello"]


def test_live_migration_over_the_configured_transport(the_lab, site):
    g = the_lab.guest_name
    with Remote(site) as r:
        start = r.run_one("compute1", f"virsh define {the_lab.guest_xml} >/dev/null && virsh start {g}")
        assert start.ok, start.stdout + start.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(re.findall(r"tick \d+", r.run_one("compute1", f"cat {the_lab.guest_serial_log}").stdout)) >= 2:
                break
            time.sleep(1)
        mig = r.run_one("compute1", f"virsh migrate --live --p2p --persistent --undefinesource {g} qemu+tcp://compute2/system",
                        timeout=180)
        assert mig.ok, mig.stdout + mig.stderr
        assert r.run_one("compute2", f"virsh domstate {g}").stdout.strip() == "running"
        time.sleep(2)
        log = r.run_one("compute2", f"cat {the_lab.guest_serial_log}").stdout
        r.run_one("compute2", f"virsh destroy {g}; virsh undefine {g}")
    assert "booted" not in log, "the guest rebooted on the destination"
    ticks = [int(n) for n in re.findall(r"tick (\d+)", log)]
    assert ticks and ticks[0] > 1, "the destination's first tick must continue the source's count"


def test_rollback_restores_byte_identical_files(the_lab, site, archive, pristine):
    runs = sorted(p for p in archive.iterdir() if p.is_dir() and p.name.endswith("_10_configure_lab"))
    applied = [p for p in runs if json.loads((p / "summary.json").read_text())["files_changed"]]
    assert len(applied) == 1
    proc = runbook("rollback", str(applied[0]), "--apply")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    now = checksums(site)
    assert now == pristine


def test_a_foreign_cpu_is_judged_by_real_libvirt(site):
    """The lab's computes share one CPU, so a recorded foreign one (libvirt's own test data: a
    Xeon E5-2630 host CPU) is compared on a lab compute by real libvirt, as Nova would."""
    from runbook_lib import facts
    from runbook_lib.facts import libvirt as lv

    xml = (Path(__file__).parent / "data" / "recorded" / "x86-cpuid-Xeon-E5-2630-host.xml").read_text()
    own = lv.host_cpu()
    with Remote(site) as r:
        got = facts.gather(r, [lv.cpu_compare(xml, "kvm", "foreign_kvm"), lv.cpu_compare(xml, "qemu", "foreign_qemu"), own],
                           ["compute1"])["compute1"]
        mine = got.get("host_cpu")
        same = facts.gather(r, [lv.cpu_compare(mine["xml"], "qemu", "own_qemu")], ["compute2"])["compute2"]
    kvm, qemu = got.get("foreign_kvm"), got.get("foreign_qemu")
    assert kvm["result"] in ("incompatible", "error") and kvm["reason"], got.raw["foreign_kvm"]
    assert qemu["result"] in ("incompatible", "error", "superset", "identical"), got.raw["foreign_qemu"]
    # Under TCG libvirt compares with the CPU QEMU emulates, not the host's: even a host's own
    # CPU can come out "incompatible" (vendor mismatch). That is why Nova skips the comparison
    # for virt_type = qemu, and why the preflight's cpu-compat check does too.
    own = same.get("own_qemu")
    assert own["result"] in ("identical", "superset") or "vendor" in own["reason"], same.raw
    if os.environ.get("RUNBOOK_RECORD"):
        out = Path(__file__).parent / "data" / "recorded"
        for name in ("foreign_kvm", "foreign_qemu"):
            (out / f"lab-hypervisor-cpu-compare-{name}.txt").write_text(got.raw[name])
        (out / "lab-hypervisor-cpu-compare-own.txt").write_text(same.raw["own_qemu"])
