"""Facts: parsers on recorded real outputs; the batch script through a real shell."""

from __future__ import annotations

import subprocess

import pytest

from runbook_lib import facts
from runbook_lib.facts import MISSING
from runbook_lib.remote import Result

# Recorded on Debian 12 hosts (libvirt 9.0.0-4+deb12u2) and Ubuntu 22.04 computes.
GETENT_NOVA = "nova:x:64060:64060:OpenStack Nova,,,:/var/lib/nova:/bin/sh\nnova:x:64060:\n"
GETENT_NOVA_OTHER_GROUP = "nova:x:118:125::/var/lib/nova:/bin/sh\nnova:x:126:\n"


@pytest.mark.parametrize(
    "out,expected",
    [
        (GETENT_NOVA, {"uid": 64060, "gid": 64060, "group_gid": 64060}),
        (GETENT_NOVA_OTHER_GROUP, {"uid": 118, "gid": 125, "group_gid": 126}),
        ("", MISSING),
    ],
)
def test_parse_user_ids(out, expected):
    assert facts.parse_user_ids(out, 0 if out else 2) == expected


@pytest.mark.parametrize(
    "out,expected",
    [
        ("libvirtd (libvirt) 9.0.0\n", "9.0.0"),
        ("virtqemud (libvirt) 10.0.0\n", "10.0.0"),
        ("8.0.0\n", "8.0.0"),
        ("", MISSING),
        ("bash: libvirtd: command not found\n", MISSING),
    ],
)
def test_parse_libvirt_version(out, expected):
    assert facts.parse_libvirt_version(out, 0) == expected


def test_parse_resolution_distinguishes_unresolved():
    out = "controller 198.18.0.10\ncompute1 127.0.1.1\ncompute2 \n"
    assert facts.parse_resolution(out, 0) == {"controller": "198.18.0.10", "compute1": "127.0.1.1", "compute2": None}


def test_parse_hostname_takes_the_short_name():
    assert facts.parse_hostname("compute1.example.org\n", 0) == "compute1"
    assert facts.parse_hostname("", 1) is MISSING


def _run_local(script: str) -> Result:
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)
    return Result("local", script, p.returncode, p.stdout, p.stderr, 0.0)


def test_batch_survives_failing_and_exiting_commands_and_keeps_exit_codes():
    fs = [
        facts.Fact("a", "echo one; echo two", lambda o, rc: (o, rc)),
        facts.Fact("b", "printf no-newline; exit 3", lambda o, rc: (o, rc)),
        facts.Fact("c", "echo err >&2; false", lambda o, rc: (o, rc)),
        facts.Fact("d", "echo last", lambda o, rc: (o, rc)),
    ]
    hf = facts.parse_batch("local", fs, _run_local(facts.batch_script(fs)))
    assert hf.values == {"a": ("one\ntwo\n", 0), "b": ("no-newline\n", 3), "c": ("", 1), "d": ("last\n", 0)}


def test_resolution_fact_quotes_hostile_names_and_reads_real_getent():
    f = facts.resolution(["localhost", "no-such-host-runbook-test", "x; touch /tmp/runbook-pwned"])
    hf = facts.parse_batch("local", [f], _run_local(facts.batch_script([f])))
    got = hf.values["resolution"]
    assert got["localhost"] == "127.0.0.1"
    assert got["no-such-host-runbook-test"] is None
    import os
    assert not os.path.exists("/tmp/runbook-pwned")


def test_unreached_host_keeps_its_error():
    r = Result("c9", "x", None, "", "", 1.0, error="c9: cannot connect")
    hf = facts.parse_batch("c9", [facts.hostname()], r)
    assert not hf.reached and hf.error == "c9: cannot connect" and hf.values == {}
