"""Reliability: faults during apply, concurrent changing runs, secrets in the archive.

Faults are real: a file system that is full when the backup is written (a tmpfs of a few
KiB), a host whose sshd is gone, a restart that fails, a session killed mid-apply. Each
run is then checked for what it must never do: leave a half-written file, lose the
original, or claim what it did not do. Re-running converges.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_lib import configure, edits, lock, params
from runbook_lib.remote import Remote

pytestmark = pytest.mark.sshd
ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = "[DEFAULT]\n# keep me\nvncserver_listen = 0.0.0.0\n" + "# padding\n" * 200


@pytest.fixture
def site(sshd_site):
    return params.from_mapping(sshd_site.params())


def plan_for(host: str, path: Path) -> configure.Plan:
    before = path.read_text()
    after = edits.set_ini(edits.unset_ini(before, "DEFAULT", "vncserver_listen", "moved"), "vnc", "server_listen", "x")
    return configure.Plan(changes=[configure.FileChange(host, str(path), before, after, ["test"])])


def no_leftovers(d: Path) -> None:
    assert not list(d.glob("*.runbook-tmp.*")), "a temporary file was left behind"


def test_full_disk_when_the_backup_is_written_leaves_the_file_intact(site, tmp_path):
    """compute1's disk is full (a 16 KiB tmpfs mounted in that host's own mount namespace)."""
    d = tmp_path / "tiny"
    d.mkdir()
    f = d / "nova.conf"
    with Remote(site) as r:
        def on_host(cmd: str) -> str:
            res = r.run_one("compute1", cmd)
            assert res.ok, (cmd, res.stdout, res.stderr, res.error)
            return res.stdout

        on_host(f"mount -t tmpfs -o size=16k runbook-test-full {d}")
        try:
            on_host(f"cat > {f} <<'EOF'\n{ORIGINAL}EOF")
            on_host(f"dd if=/dev/zero of={d}/filler bs=1k 2>/dev/null; true")  # fill it up
            p = configure.Plan(changes=[configure.FileChange("compute1", str(f), on_host(f"cat {f}"),
                                                             "", ["test"])])
            p.changes[0].after = edits.set_ini(p.changes[0].before, "vnc", "server_listen", "x")
            configure.apply(r, p, stamp="FULL")
            (ch,) = p.changes
            assert ch.status.startswith("failed"), ch.status
            assert on_host(f"cat {f}") == p.changes[0].before  # untouched: the write never started
            assert on_host(f"ls {d}").split() == ["filler", "nova.conf"]  # no temp file, no half backup
            on_host(f"rm -f {d}/filler")  # room again: the same change now converges
            p2 = configure.Plan(changes=[configure.FileChange("compute1", str(f), ch.before, ch.after, ["test"])])
            configure.apply(r, p2, stamp="FULL2")
            assert p2.changes[0].status == "applied" and "server_listen = x" in on_host(f"cat {f}")
            assert on_host(f"cat {p2.changes[0].backup}") == ch.before
        finally:
            r.run_one("compute1", f"umount {d}")


def test_unreachable_host_and_failing_restart_are_recorded_and_the_rest_goes_on(sshd_site, site, tmp_path):
    good, bad = tmp_path / "good.conf", tmp_path / "bad.conf"
    good.write_text(ORIGINAL)
    bad.write_text(ORIGINAL)
    p = plan_for("compute1", good)
    p.changes += plan_for("compute3", bad).changes  # compute3's sshd is down
    p.actions = [configure.Action("compute1", "libvirt-transport", "restart libvirtd", "echo restarting; exit 1"),
                 configure.Action("compute3", "libvirt-transport", "restart libvirtd", "true")]
    with Remote(site) as r:
        configure.apply(r, p, stamp="T")
    status = {c.host: c.status for c in p.changes}
    assert status["compute1"] == "applied"
    assert status["compute3"].startswith("failed: compute3: cannot connect")
    assert bad.read_text() == ORIGINAL and not list(tmp_path.glob("bad.conf.*"))
    acts = {a.host: a.status for a in p.actions}
    assert acts["compute1"].startswith("failed") and "restarting" in p.actions[0].output
    assert acts["compute3"] == "skipped (file change failed)"
    recs = configure.records(p)
    assert {r["host"]: r["status"] for r in recs if "path" in r} == status
    no_leftovers(tmp_path)


def test_a_session_killed_mid_apply_never_leaves_a_half_written_file(site, tmp_path):
    """The file is written to a temporary name and renamed: killing the SSH session at any
    point leaves either the old or the new file, never a mix."""
    f = tmp_path / "nova.conf"
    f.write_text(ORIGINAL)
    p = plan_for("compute1", f)
    ch = p.changes[0]
    cmd = configure._write_command(ch, "KILL")
    # stop just before the rename: the shell dies where a dropped connection would stop it
    killed = cmd.replace("mv -f", "kill -9 $$; mv -f")
    with Remote(site) as r:
        res = r.run_one("compute1", killed)
    assert not res.ok
    assert f.read_text() == ORIGINAL
    tmp = list(tmp_path.glob("nova.conf.runbook-tmp.*"))
    assert len(tmp) <= 1  # an orphaned temp file may remain; the real file is whole
    for t in tmp:
        t.unlink()
    with Remote(site) as r:  # re-running converges
        configure.apply(r, plan_for("compute1", f), stamp="AGAIN")
    assert "server_listen = x" in f.read_text()


def runbook(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_a_second_changing_run_is_refused_naming_the_holder(sshd_site, tmp_path):
    arc = tmp_path / "arc"
    held = lock.acquire(arc, "testsite", "10_configure")  # this test process is the live holder
    try:
        proc = runbook("run", "10_configure", "-p", str(sshd_site.params_file), "--archive", str(arc),
                       "-P", "apply=true", "-P", "phases=[hosts]", "-P", "limit=[compute1]")
    finally:
        held.release()
    assert proc.returncode == 2
    msg = " ".join(proc.stderr.split())
    assert "site testsite is being changed by another run: 10_configure started" in msg and f"pid {os.getpid()}" in msg
    assert not [p for p in arc.iterdir() if p.is_dir() and not p.name.startswith(".")]
    # a plan-only run takes no lock
    with lock.acquire(arc, "testsite", "10_configure"):
        assert runbook("run", "10_configure", "-p", str(sshd_site.params_file), "--archive", str(arc),
                       "-P", "limit=[compute1]").returncode == 0


def test_a_stale_lock_is_taken_over_and_said(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / ".locks").mkdir()
    import socket

    (tmp_path / ".locks" / "s.lock").write_text(json.dumps(
        {"pid": dead.pid, "pid_start": "1", "machine": socket.gethostname(), "phase": "10_configure",
         "start": "2026-01-01T00:00:00+00:00", "user": "root"}))
    held = lock.acquire(tmp_path, "s", "10_configure")
    assert "took over a stale lock of 10_configure started 2026-01-01T00:00:00+00:00" in held.took_over
    held.release()
    assert not (tmp_path / ".locks" / "s.lock").exists()


def test_no_secret_reaches_the_archive(sshd_site, tmp_path, monkeypatch):
    """Runs with credentials around (a passphrase in the environment, a private key file, a
    clouds.yaml with a password): none of it appears in any archived file."""
    secret_pass = "Sup3r-Secret-Passphrase-7781"
    cloud_pass = "cl0ud-Passw0rd-Never-Archive-4412"
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml_clouds(cloud_pass))
    data = sshd_site.params()
    data["ssh"]["key_passphrase_env"] = "RUNBOOK_TEST_PASSPHRASE"
    data["cloud"] = "testcloud"
    data["clouds_yaml"] = str(clouds)
    p = tmp_path / "site.yaml"
    import yaml

    p.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RUNBOOK_TEST_PASSPHRASE": secret_pass, "OS_PASSWORD": cloud_pass}
    arc = tmp_path / "arc"
    for phase in ("00_preflight", "10_configure"):
        subprocess.run([sys.executable, "-m", "runbook_lib.cli", "run", phase, "-p", str(p), "--archive", str(arc),
                        "-P", "limit=[compute1]"], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    key_material = sshd_site.key_file.read_text().split("\n")[1]  # a line of the private key
    files = [f for f in arc.rglob("*") if f.is_file()]
    assert len([f for f in files if f.name == "notebook.html"]) == 2
    for f in files:
        text = f.read_text(errors="replace")
        for secret in (secret_pass, cloud_pass, key_material):
            assert secret not in text, f"{secret[:6]}… found in {f}"


def yaml_clouds(password: str) -> str:
    return ("clouds:\n  testcloud:\n    auth:\n      auth_url: http://127.0.0.1:1/v3\n      username: admin\n"
            f"      password: {password}\n      project_name: admin\n")
