"""Applying and rolling back over real SSH (sshd test hosts), on files in a scratch directory.

The test hosts share this machine's file system, so these tests never point the runbook at
/etc: the apply mechanics (check, backup, temp file, atomic rename, read back) are the same
for any path; the lab tests apply the real configuration to real hosts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from runbook_lib import configure, params
from runbook_lib.remote import Remote

pytestmark = pytest.mark.sshd
ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = "[DEFAULT]\n# a comment that must survive\nvncserver_listen = 0.0.0.0\n[libvirt]\nvirt_type = qemu\n"


@pytest.fixture
def site(sshd_site):
    return params.from_mapping(sshd_site.params())


def make_plan(path: Path) -> configure.Plan:
    before = path.read_text()
    from runbook_lib import edits

    after = edits.set_ini(edits.unset_ini(before, "DEFAULT", "vncserver_listen", "moved"), "vnc", "server_listen", "127.0.0.12")
    p = configure.Plan(changes=[configure.FileChange("compute1", str(path), before, after, ["test"])])
    return p


def test_apply_backs_up_writes_atomically_keeps_mode_and_reads_back(site, tmp_path):
    f = tmp_path / "nova.conf"
    f.write_text(ORIGINAL)
    os.chmod(f, 0o640)
    p = make_plan(f)
    with Remote(site) as r:
        configure.apply(r, p, stamp="T1")
    (ch,) = p.changes
    assert ch.status == "applied" and ch.after_sha256 == hashlib.sha256(f.read_bytes()).hexdigest()
    assert "server_listen = 127.0.0.12" in f.read_text() and "# a comment that must survive" in f.read_text()
    assert Path(ch.backup).read_text() == ORIGINAL and ch.backup.endswith(".runbook-T1.bak")
    assert oct(f.stat().st_mode & 0o777) == "0o640"
    assert not list(tmp_path.glob("*.runbook-tmp.*"))  # no temp file left behind
    # planning again from the new content changes nothing
    assert not make_plan(f).pending


def test_a_file_changed_since_the_plan_is_not_overwritten(site, tmp_path):
    f = tmp_path / "nova.conf"
    f.write_text(ORIGINAL)
    p = make_plan(f)
    f.write_text(ORIGINAL + "# edited by someone else\n")
    with Remote(site) as r:
        configure.apply(r, p, stamp="T2")
    assert p.changes[0].status == "refused: changed since the plan was made"
    assert f.read_text().endswith("# edited by someone else\n")
    assert not list(tmp_path.glob("*.bak"))


def test_rollback_restores_byte_identical_files(site, tmp_path):
    f = tmp_path / "nova.conf"
    f.write_bytes(ORIGINAL.encode())
    p = make_plan(f)
    with Remote(site) as r:
        configure.apply(r, p, stamp="T3")
        cmds = configure.rollback_commands(configure.records(p))
        for path, cmd in cmds["compute1"]:
            assert r.run_one("compute1", cmd).ok
    assert f.read_bytes() == ORIGINAL.encode()


def test_the_configure_notebook_plans_without_changing_anything(sshd_site, tmp_path):
    watched = [Path("/etc/hosts"), Path("/etc/passwd")]
    before = {p: p.read_bytes() for p in watched}
    proc = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "run", "10_configure", "-p", str(sshd_site.params_file),
         "--archive", str(tmp_path), "-P", "limit=[controller,compute2]", "-P", "transport=tcp",
         "-P", "insecure_lab_transport=true"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p: p.read_bytes() for p in watched} == before
    (d,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    s = json.loads((d / "summary.json").read_text())
    assert s["files_changed"] == [] and s["status"] == "ok"
    assert any("INSECURE LAB TRANSPORT" in w for w in s["warnings"])
    html = (d / "notebook.html").read_text()
    assert "⚠ WARNING<ul><li>INSECURE LAB TRANSPORT" in html  # a banner nobody misses
    planned = {(c["host"], c.get("path")) for c in s["changes"] if c["status"] == "planned"}
    assert ("compute2", "/etc/hosts") in planned  # compute2 cannot resolve compute1: the fix is planned
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    diff_cell = next(c for c in nb.cells if c.source.strip() == "the_plan.diff()")
    assert "+127.0.0.12 compute1" in diff_cell.outputs[0]["data"]["text/plain"]
    ident = [c for c in s["changes"] if c.get("action", "").startswith("nova gid 64061")]
    assert ident and ident[0]["host"] == "compute2" and ident[0]["status"] == "planned"


def test_the_insecure_transport_is_refused_unless_named(sshd_site, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "run", "10_configure", "-p", str(sshd_site.params_file),
         "--archive", str(tmp_path), "-P", "transport=tcp"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 2
    s = json.loads(next(tmp_path.iterdir()).joinpath("summary.json").read_text())
    assert "insecure_lab_transport" in s["error"]
