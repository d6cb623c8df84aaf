"""Drift between archived runs, the archive index, and schedules (systemd units, real cron)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from runbook_lib import drift, schedule
from runbook_lib.errors import ParamsError

ROOT = Path(__file__).resolve().parent.parent


def runbook(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def set_nova_uid(hosts, name: str, uid: int) -> None:
    """Change a test host's nova uid in place (its /etc/passwd is a bind mount of this file)."""
    f = hosts.root / name / "etc" / "passwd"
    lines = [l if not l.startswith("nova:") else f"nova:x:{uid}:{uid}:OpenStack Nova:/var/lib/nova:/bin/sh"
             for l in f.read_text().splitlines()]
    with open(f, "r+") as fh:  # same inode: the bind mount sees it
        fh.seek(0)
        fh.write("\n".join(lines) + "\n")
        fh.truncate()


def test_compare_names_regressions_fixes_and_changed_facts():
    base = {"checks": [{"host": "c1", "check": "nova-ids", "verdict": "pass", "detail": "uid 1"},
                       {"host": "c2", "check": "libvirt-daemon", "verdict": "fail", "detail": "no"}],
            "facts": {"c1": {"nova uid:gid": "1:1", "listening ports": [22, 16509]}}}
    new = {"checks": [{"host": "c1", "check": "nova-ids", "verdict": "fail", "detail": "uid 2"},
                      {"host": "c2", "check": "libvirt-daemon", "verdict": "pass", "detail": "ok"}],
           "facts": {"c1": {"nova uid:gid": "2:2", "listening ports": [22]}}}
    rows = drift.compare(base, new)
    kinds = {(r["host"], r["item"]): r["kind"] for r in rows}
    assert kinds == {("c1", "nova-ids"): "regressed", ("c2", "libvirt-daemon"): "fixed",
                     ("c1", "nova uid:gid"): "fact changed", ("c1", "listening ports"): "fact changed"}
    assert drift.regressed(rows) and not drift.regressed([r for r in rows if r["kind"] != "regressed"])
    assert drift.compare(new, new) == []


@pytest.mark.sshd
def test_second_run_shows_drift_at_the_top_and_drift_exits_1(sshd_site, tmp_path):
    arc = tmp_path / "arc"
    first = runbook("run", "00_preflight", "-p", str(sshd_site.params_file), "--archive", str(arc), "-P", "limit=[controller,compute1]")
    assert first.returncode in (0, 1), first.stderr
    set_nova_uid(sshd_site, "compute1", 64099)
    try:
        second = runbook("run", "00_preflight", "-p", str(sshd_site.params_file), "--archive", str(arc), "-P", "limit=[controller,compute1]")
    finally:
        set_nova_uid(sshd_site, "compute1", 64060)
    assert second.returncode == 1
    latest = sorted(p for p in arc.iterdir() if p.is_dir())[-1]
    s = json.loads((latest / "summary.json").read_text())
    assert s["drift"]["regressed"] is True
    nb = nbformat.read(latest / "notebook.ipynb", as_version=4)
    top = nb.cells[1]
    assert "runbook-drift" in top.metadata.get("tags", []) and "Drift since the previous run" in top.source
    assert "| compute1 | nova-ids | regressed |" in top.source and "| compute1 | nova uid:gid | fact changed | 64060:64060 | 64099:64099 |" in top.source
    assert "Drift since the previous run" in (latest / "notebook.html").read_text()
    d = runbook("drift", "--archive", str(arc), "--json")
    assert d.returncode == 1
    rows = json.loads(d.stdout)["rows"]
    assert {"host": "compute1", "item": "nova-ids"} in [{k: r[k] for k in ("host", "item")} for r in rows if r["kind"] == "regressed"]
    # the index: filters and an HTML page that links the notebooks
    j = json.loads(runbook("runs", "--archive", str(arc), "--json", "--host", "compute1", "--status", "problems").stdout)
    assert [r["dir"] for r in j][-1] == str(latest) and len(j) == 2
    assert json.loads(runbook("runs", "--archive", str(arc), "--json", "--host", "compute2").stdout) == []
    assert json.loads(runbook("runs", "--archive", str(arc), "--json", "--status", "ok").stdout) == []
    assert json.loads(runbook("runs", "--archive", str(arc), "--json", "--since", "2999-01-01").stdout) == []
    page = tmp_path / "index.html"
    assert runbook("runs", "--archive", str(arc), "--html", str(page)).returncode == 0
    html = page.read_text()
    assert html.count("notebook.html") == 2 and "regressed" in html


def test_schedule_writes_systemd_units_and_removes_them_all(tmp_path, sshd_site):
    units = tmp_path / "units"
    units.mkdir()
    s = schedule.install("preflight", "15min", sshd_site.params_file, tmp_path / "arc", {"limit": ["compute1"]},
                         backend="systemd", unit_dir=units, cron_dir=tmp_path / "cron", activate=False)
    service = (units / f"{s.name}.service").read_text()
    timer = (units / f"{s.name}.timer").read_text()
    assert s.name == "runbook-testsite-00_preflight"
    assert "ExecStart=" in service and " run 00_preflight -p " in service and "-P 'limit=[" in service
    assert "OnUnitActiveSec=900s" in timer and f"Unit={s.name}.service" in timer
    assert [x.name for x in schedule.installed(units, tmp_path / "cron")] == [s.name]
    schedule.remove(s.name, units, tmp_path / "cron", activate=False)
    assert list(units.iterdir()) == []


def test_schedules_never_apply_unless_the_site_allows_it(tmp_path, sshd_site):
    with pytest.raises(ParamsError, match="scheduled runs never apply"):
        schedule.install("configure", "1h", sshd_site.params_file, tmp_path, {"apply": True},
                         backend="cron", cron_dir=tmp_path)
    allowed = tmp_path / "allowed.yaml"
    allowed.write_text(sshd_site.params_file.read_text() + "allow_scheduled_apply: true\n")
    s = schedule.install("configure", "1h", allowed, tmp_path / "arc", {"apply": True}, backend="cron", cron_dir=tmp_path)
    assert "0 */1 * * *" in Path(s.files[0]).read_text()
    with pytest.raises(ParamsError, match="interval"):
        schedule.parse_interval("fortnightly")
    with pytest.raises(ParamsError, match="once a minute"):
        schedule.install("preflight", "30s", sshd_site.params_file, tmp_path, backend="cron", cron_dir=tmp_path)


@pytest.mark.sshd
@pytest.mark.skipif(not shutil.which("cron"), reason="Debian's cron is not installed")
def test_a_real_cron_schedule_runs_twice_and_drift_names_the_change(sshd_site, tmp_path):
    """cron (this machine has no systemd as init) runs the preflight every minute; between the
    two runs compute1's nova uid changes; the drift report names exactly that and exits 1."""
    arc = tmp_path / "arc"
    cron_dir = Path("/etc/cron.d")
    s = schedule.install("preflight", "1min", sshd_site.params_file, arc, {"limit": ["compute1", "controller"]},
                         name="runbook-test-drift", backend="cron", cron_dir=cron_dir)
    cron = subprocess.Popen(["cron", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    changed = False
    try:
        deadline = time.monotonic() + 200
        while time.monotonic() < deadline:
            done = [p for p in arc.glob("*_00_preflight_testsite") if (p / "summary.json").exists()]
            if len(done) == 1 and not changed:
                set_nova_uid(sshd_site, "compute1", 64098)
                changed = True
            if len(done) >= 2:
                break
            time.sleep(2)
        assert len(done) >= 2, (arc / f"{s.name}.log").read_text() if (arc / f"{s.name}.log").exists() else "no log"
    finally:
        os.kill(cron.pid, signal.SIGTERM)
        cron.wait(timeout=10)
        set_nova_uid(sshd_site, "compute1", 64060)
        schedule.remove(s.name, cron_dir=cron_dir)
    assert not (cron_dir / s.name).exists()
    d = runbook("drift", "--archive", str(arc), "--json")
    assert d.returncode == 1, d.stdout + d.stderr
    rows = [r for r in json.loads(d.stdout)["rows"] if r["kind"] in ("regressed", "fact changed")]
    got = {(r["host"], r["item"]) for r in rows if r["item"] != "listening ports"}
    # (the test hosts share this machine's network namespace: its listening ports come and go)
    assert got == {("compute1", "nova-ids"), ("compute1", "nova uid:gid")}


def test_a_check_that_was_skipped_counts_as_news_only_when_it_fails_now():
    base = {"checks": [{"host": "c1", "check": "nova-ids", "verdict": "skip", "detail": "host not reached"},
                       {"host": "c1", "check": "libvirt", "verdict": "skip", "detail": "host not reached"}]}
    new = {"checks": [{"host": "c1", "check": "nova-ids", "verdict": "fail", "detail": "uid 2"},
                      {"host": "c1", "check": "libvirt", "verdict": "warn", "detail": "older"}]}
    kinds = {r["item"]: r["kind"] for r in drift.compare(base, new)}
    assert kinds == {"nova-ids": "regressed", "libvirt": "now checked"}
