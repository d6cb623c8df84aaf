"""The troubleshoot notebook over real SSH: fetch log slices from the right hosts, explain them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from runbook_lib import params, troubleshoot

pytestmark = pytest.mark.sshd
ROOT = Path(__file__).resolve().parent.parent
BUNDLE = Path(__file__).parent / "diagnose" / "fixtures" / "bundle"


@pytest.fixture
def logs(tmp_path):
    d = tmp_path / "logs"
    d.mkdir()
    shutil.copy(BUNDLE / "nova-compute-source.log", d / "nova-compute.log")
    shutil.copy(BUNDLE / "nova-conductor.log", d / "nova-conductor.log")
    # the test hosts run no systemd, so libvirt's log is read from a file (journal format)
    shutil.copy(BUNDLE / "libvirtd-destination.journal", d / "libvirtd.log")
    return {"nova-compute": str(d / "nova-compute.log"), "nova-conductor": str(d / "nova-conductor.log"),
            "libvirtd": str(d / "libvirtd.log"), "qemu": str(d / "{instance}.log")}


def test_collect_fetches_from_exactly_the_hosts_involved(sshd_site, logs):
    site = params.from_mapping(sshd_site.params())
    slices = troubleshoot.collect(site, "compute1", "compute2", instance="instance-0000001a", log_paths=logs)
    got = {(s.host, s.role, s.source) for s in slices}
    assert got == {("compute1", "source", "nova-compute"), ("compute1", "source", "libvirtd"),
                   ("compute2", "destination", "nova-compute"), ("compute2", "destination", "libvirtd"),
                   ("compute2", "destination", "qemu"), ("controller", "controller", "nova-conductor")}
    qemu = next(s for s in slices if s.source == "qemu")
    assert qemu.error and "no such file" in qemu.error and qemu.where.endswith("instance-0000001a.log")
    matches = troubleshoot.explain(slices)
    cats = {m.category for m in matches}
    assert {"libvirt-unreachable", "cpu-incompatible", "libvirt-daemon"} <= cats
    assert all(m.host in ("compute1", "compute2", "controller") for m in matches)


def test_time_window_keeps_only_lines_inside_it(sshd_site, logs):
    site = params.from_mapping(sshd_site.params())
    slices = troubleshoot.collect(site, "compute1", "compute2", log_paths=logs)
    start, end = troubleshoot.window("2024-05-01T09:59:00Z", "2024-05-01T10:01:00")
    inside = troubleshoot.explain(slices, start, end)
    assert inside and all("2024-05-01T10:00" in m.timestamp for m in inside)
    assert "libvirt-unreachable" in {m.category for m in inside}
    assert "cpu-incompatible" not in {m.category for m in inside}  # the conductor line is at 09:50


def test_the_notebook_names_the_causes_and_exits_1(sshd_site, logs, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", "run", "30_troubleshoot", "-p", str(sshd_site.params_file),
         "--archive", str(tmp_path / "arc"), "-P", "source_host=compute1", "-P", "destination_host=compute2",
         "-P", "log_paths=" + json.dumps(logs)],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (d,) = list((tmp_path / "arc").iterdir())
    s = json.loads((d / "summary.json").read_text())
    failed = {c["check"] for c in s["checks"] if c["verdict"] == "fail"}
    assert {"libvirt-unreachable", "cpu-incompatible", "libvirt-daemon"} <= failed
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "troubleshoot.findings(matches)" in c.source)
    html = cell.outputs[0]["data"]["text/html"]
    assert "libvirt-transport" in html and "Connection refused" in html


def test_bad_window_and_unknown_log_source_are_parameter_errors(sshd_site):
    from runbook_lib.errors import ParamsError

    with pytest.raises(ParamsError, match="key 'since'"):
        troubleshoot.window("yesterday")
    site = params.from_mapping(sshd_site.params())
    with pytest.raises(ParamsError, match="key 'log_paths'.*unknown log source"):
        troubleshoot.collect(site, "compute1", "compute2", log_paths={"syslog": "/var/log/syslog"})
