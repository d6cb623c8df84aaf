"""The diagnose command, run as a real subprocess and through argparse."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from runbook_lib.diagnose.cli import register

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = Path(__file__).parent / "fixtures" / "bundle"
FAILURE = ("2024-05-01 10:00:05.123 2145 ERROR nova.virt.libvirt.driver [-] [instance: 8267c51a-c826-4c54-b277-a0e95e6fecc1] "
           "Live Migration failure: Unsafe migration: Migration without shared storage is unsafe\n")


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "runbook_lib.diagnose", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def test_stdin_json_match_exits_1() -> None:
    result = _run("--json", "-", stdin=FAILURE)
    assert result.returncode == 1, result.stderr
    (obj,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert obj["signature"] == "libvirt-unsafe-migration-no-shared-storage"
    assert obj["category"] == "shared-storage"
    assert obj["line"].startswith("Live Migration failure: Unsafe migration")
    assert "`shared-storage`" in obj["remediation"]
    assert obj["source"] == "-" and obj["lineno"] == 1 and obj["timestamp"] == "2024-05-01T10:00:05.123"
    assert obj["cause"]


def test_stdin_without_known_failure_exits_0() -> None:
    result = _run("-", stdin="2024-05-01 10:00:00.001 2145 INFO nova.compute.manager [-] all good\n")
    assert result.returncode == 0, result.stderr
    assert "no known live-migration failure" in result.stdout


def test_unreadable_file_and_bad_usage_exit_2(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "absent.log"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    assert _run().returncode == 2
    assert _run("--no-such-option", "-").returncode == 2


def test_text_output_names_category_cause_and_fix() -> None:
    result = _run(*(str(p) for p in sorted(BUNDLE.iterdir())))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "[libvirt-unreachable] libvirtd-port-connection-refused" in out
    assert "cause:" in out and "fix:" in out and "(phase: libvirt-transport)" in out
    assert "4 known failure(s)" in out


def test_register_adds_the_subcommand(capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(prog="runbook")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diagnose", "--json", str(BUNDLE / "libvirtd-destination.journal")])
    assert args.func(args) == 1
    (obj,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert obj["signature"] == "libvirtd-listen-with-socket-activation" and obj["host"] == "compute2"
