"""`runbook run` / `runbook runs` end to end: papermill, real sshd hosts, the archive."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from runbook_lib import archive
from runbook_lib.report import read_summary

pytestmark = pytest.mark.sshd
ROOT = Path(__file__).resolve().parent.parent


def runbook(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runbook_lib.cli", *args],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **(env or {})},
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def outputs_of(nb) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def connections(hosts) -> int:
    """Accepted SSH logins so far, over every test host's sshd log."""
    return sum(
        (hosts.root / s.name / "sshd.log").read_text().count("Accepted publickey")
        for s in hosts.specs if not s.down
    )


@pytest.fixture(scope="module")
def standard_run(sshd_site, tmp_path_factory):
    arc = tmp_path_factory.mktemp("archive")
    proc = runbook("run", "00_preflight", "-p", str(sshd_site.params_file), "--archive", str(arc))
    return proc, arc


def test_problems_found_exit_1_and_a_complete_archive(standard_run, sshd_site):
    proc, arc = standard_run
    assert proc.returncode == 1, proc.stderr
    (d,) = run_dirs(arc)
    assert d.name.endswith("_00_preflight_testsite")
    assert {p.name for p in d.iterdir()} == {"notebook.ipynb", "notebook.html", "parameters.yaml", "summary.json"}
    assert f"archived: {d}" in proc.stdout
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "problems" and s["exit_code"] == 1 and s["phase"] == "00_preflight"
    assert s["hosts"] == ["controller", "compute1", "compute2", "compute3"]
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    assert s["verdicts"] == read_summary(nb)["verdicts"]
    assert sum(s["verdicts"].values()) == 4 * 14  # every host × every check
    assert s["verdicts"]["fail"] >= 3 and s["verdicts"]["pass"] >= 12
    start, end = dt.datetime.fromisoformat(s["start"]), dt.datetime.fromisoformat(s["end"])
    assert start.tzinfo is not None and end >= start and s["duration_s"] > 0
    assert yaml.safe_load((d / "parameters.yaml").read_text())["site"] == "testsite"
    html = (d / "notebook.html").read_text()
    assert "Readiness matrix" in html and f"compute3: cannot connect to 127.0.0.14:{sshd_site.port}" in html


def test_executed_notebook_records_parameters_and_the_matrix(standard_run, sshd_site):
    _, arc = standard_run
    (d,) = run_dirs(arc)
    nb = nbformat.read(d / "notebook.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "site = \"testsite\"" in injected[0].source
    assert not [o for o in outputs_of(nb) if o.output_type == "error"]
    summary = read_summary(nb)
    assert summary["problems"] == summary["verdicts"]["fail"] >= 3
    # the readiness matrix cell's table, as the operator sees it
    matrix_cell = next(c for c in nb.cells if "preflight.matrix(results)" in c.source)
    text = matrix_cell.outputs[0]["data"]["text/plain"]
    header = text.splitlines()[0].split()[1:]
    rows = {line.split()[0]: dict(zip(header, line.split()[1:])) for line in text.splitlines()[2:]}
    assert header[:5] == ["ssh", "hostname", "management-address", "name-resolution", "nova-ids"]
    assert [rows["controller"][c] for c in header[:5]] == ["pass"] * 5
    assert {rows["controller"][c] for c in header[5:]} == {"skip"}  # compute checks
    assert rows["compute1"]["name-resolution"] == rows["compute1"]["nova-ids"] == "pass"
    assert rows["compute2"]["name-resolution"] == rows["compute2"]["nova-ids"] == "fail"
    assert rows["compute3"]["ssh"] == "fail" and {rows["compute3"][c] for c in header[1:]} == {"skip"}
    problems = next(c for c in nb.cells if "report.problems(results)" in c.source).outputs[0]["data"]["text/html"]
    assert "align nova to uid 64060 gid 64060 (configure phase: identity)" in problems
    assert "add &#x27;127.0.0.12 compute1&#x27; to /etc/hosts on compute2" in problems or \
        "add '127.0.0.12 compute1' to /etc/hosts on compute2" in problems


def test_a_run_without_problems_exits_0(healthy_site, tmp_path):
    # the bare test hosts are no compute nodes (no nova.conf, no libvirtd): the controller's
    # checks are the ones they can pass; the lab tests cover configured computes
    proc = runbook("run", "preflight", "-p", str(healthy_site.params_file), "--archive", str(tmp_path),
                   "-P", "limit=[controller]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (d,) = run_dirs(tmp_path)
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "ok" and s["verdicts"] == {"pass": 5, "warn": 0, "fail": 0, "skip": 9}


def test_limit_runs_only_the_named_hosts(sshd_site, tmp_path):
    proc = runbook("run", "preflight", "-p", str(sshd_site.params_file), "--archive", str(tmp_path),
                   "-P", "limit=[compute1]", "-P", "transport=ssh")
    s = json.loads((run_dirs(tmp_path)[0] / "summary.json").read_text())
    assert s["hosts"] == ["compute1"] and s["overrides"] == {"limit": ["compute1"], "transport": "ssh"}
    assert proc.returncode == (1 if s["verdicts"]["fail"] else 0)


def test_runs_lists_the_archive_as_table_and_json(standard_run):
    _, arc = standard_run
    proc = runbook("runs", "--archive", str(arc), "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    assert len(rows) == 1 and rows[0]["status"] == "problems" and rows[0]["fail"] >= 3 and rows[0]["hosts"] == 4
    table = runbook("runs", "--archive", str(arc))
    assert "00_preflight" in table.stdout and "testsite" in table.stdout and "problems" in table.stdout


BAD = {
    "wrong type": (["ssh", "port"], "twenty-two", "key 'ssh.port': expected a whole number"),
    "missing key": (["management_cidr"], None, "key 'management_cidr': is required"),
    "unknown key": (["ssh", "usr"], "root", "key 'ssh.usr': unknown key (did you mean 'user'?)"),
    "secret key": (["ssh", "password"], "hunter2", "key 'ssh.password': looks like a secret"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_params_exit_2_with_one_paragraph_and_touch_no_host(case, sshd_site, tmp_path):
    path, value, words = BAD[case]
    data = sshd_site.params()
    cur = data
    for p in path[:-1]:
        cur = cur[p]
    if value is None:
        del cur[path[-1]]
    else:
        cur[path[-1]] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    before = connections(sshd_site)
    proc = runbook("run", "00_preflight", "-p", str(bad), "--archive", str(tmp_path / "arc"))
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and str(bad) in err and words in " ".join(err.split())
    assert "\n\n" not in err and "Traceback" not in err
    assert "hunter2" not in err
    assert not (tmp_path / "arc").exists()
    assert connections(sshd_site) == before


@pytest.mark.parametrize(
    "override,words",
    [
        ("limit=[compute9]", "key 'limit': unknown host 'compute9'"),
        ("limt=[compute1]", "key 'limt': 00_preflight has no such parameter"),
        ("site=other", "key 'site': site settings come from the params file"),
        ("token=abc", "key 'token': looks like a secret"),
    ],
)
def test_bad_overrides_are_refused_before_anything_runs(override, words, sshd_site, tmp_path):
    before = connections(sshd_site)
    proc = runbook("run", "00_preflight", "-p", str(sshd_site.params_file), "-P", override,
                   "--archive", str(tmp_path / "arc"))
    assert proc.returncode == 2 and words in " ".join(proc.stderr.split()), proc.stderr
    assert not (tmp_path / "arc").exists() and connections(sshd_site) == before


def test_unknown_phase_exit_2(sshd_site, tmp_path):
    proc = runbook("run", "99_nope", "-p", str(sshd_site.params_file), "--archive", str(tmp_path))
    assert proc.returncode == 2 and "unknown phase '99_nope'" in proc.stderr and "00_preflight" in proc.stderr


def test_a_failing_run_is_archived_with_its_error_banner(sshd_site, tmp_path):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "00_preflight.ipynb", as_version=4)
    nb.cells.insert(6, nbformat.v4.new_code_cell("raise RuntimeError('libvirt exploded')"))
    nbformat.write(nb, nbdir / "00_preflight.ipynb")
    proc = runbook("run", "00_preflight", "-p", str(sshd_site.params_file), "--archive", str(tmp_path / "arc"),
                   env={"RUNBOOK_NOTEBOOKS": str(nbdir)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (d,) = run_dirs(tmp_path / "arc")
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "failed" and "RuntimeError: libvirt exploded" in s["error"]
    out = nbformat.read(d / "notebook.ipynb", as_version=4)
    assert any(o.output_type == "error" and o.evalue == "libvirt exploded" for o in outputs_of(out))
    assert "An Exception was encountered" in (d / "notebook.html").read_text()  # papermill's banner


def test_plain_papermill_runs_the_same_notebook(sshd_site, tmp_path):
    out = tmp_path / "out.ipynb"
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "00_preflight.ipynb"), str(out),
         "-f", str(sshd_site.params_file), "--cwd", str(ROOT / "notebooks")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = read_summary(nbformat.read(out, as_version=4))
    assert summary["site"] == "testsite" and summary["verdicts"]["fail"] >= 3


def test_runs_are_never_overwritten(tmp_path):
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    a = archive.new_run_dir(tmp_path, "00_preflight", "s", when)
    b = archive.new_run_dir(tmp_path, "00_preflight", "s", when)
    assert a != b and a.is_dir() and b.is_dir() and b.name == a.name + "-1"


def test_override_values_are_read_as_yaml_but_times_stay_text():
    from runbook_lib import runner

    assert runner.parse_override("limit=[compute1, compute2]") == ("limit", ["compute1", "compute2"])
    assert runner.parse_override("apply=true") == ("apply", True)
    assert runner.parse_override("since=2026-11-26T13:45:00+00:00") == ("since", "2026-11-26T13:45:00+00:00")
    assert runner.parse_override("day=2026-11-26") == ("day", "2026-11-26")
