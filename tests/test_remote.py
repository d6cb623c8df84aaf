"""Remote execution against real sshd hosts: all results collected, host keys enforced."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runbook_lib import params
from runbook_lib.remote import Remote, sh

pytestmark = pytest.mark.sshd


def site_of(hosts, **ssh_changes):
    data = hosts.params()
    data["ssh"].update(ssh_changes)
    return params.from_mapping(data)


def test_every_host_answers_for_itself_and_a_dead_one_does_not_hide_them(sshd_site):
    with Remote(site_of(sshd_site)) as r:
        res = r.run("hostname; id -u nova")
    assert list(res) == ["controller", "compute1", "compute2", "compute3"]
    assert res["controller"].stdout.split() == ["controller", "64060"]
    assert res["compute2"].stdout.split() == ["compute2", "64061"]
    assert res["compute3"].exit_code is None and not res["compute3"].reached
    assert f"cannot connect to 127.0.0.14:{sshd_site.port}" in res["compute3"].error
    assert "Connection refused" in res["compute3"].error


def test_commands_run_in_parallel(sshd_site, tmp_path):
    # each live host waits until every live host has started: sequential runs would time out
    live = ["controller", "compute1", "compute2"]
    d = tmp_path / "rendezvous"
    d.mkdir()
    cmd = (f"touch {sh(str(d))}/$(hostname); for i in $(seq 100); do "
           f"[ $(ls {sh(str(d))} | wc -l) -ge 3 ] && exit 0; sleep 0.05; done; exit 9")
    with Remote(site_of(sshd_site)) as r:
        res = r.run(cmd, live)
    assert {n: x.exit_code for n, x in res.items()} == {n: 0 for n in live}


def test_values_are_quoted_and_exit_codes_and_stderr_kept(sshd_site):
    with Remote(site_of(sshd_site)) as r:
        res = r.run_one("compute1", sh("printf", "%s|", "a b", "$(id)", "x;y") + "; echo oops >&2; exit 4")
    assert res.stdout == "a b|$(id)|x;y|"
    assert res.stderr == "oops\n" and res.exit_code == 4 and res.reached and not res.ok


def test_command_timeout_is_reported_and_the_host_still_usable(sshd_site):
    with Remote(site_of(sshd_site)) as r:
        res = r.run_one("compute1", "sleep 20", timeout=1)
        assert res.error == "compute1: timed out after 1 s"
        assert r.run_one("compute1", "echo again").stdout == "again\n"


def test_unknown_host_key_is_rejected(sshd_site, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("\n".join(l for l in sshd_site.known_hosts.read_text().splitlines() if "127.0.0.12" not in l) + "\n")
    with Remote(site_of(sshd_site, known_hosts=str(kh))) as r:
        res = r.run("true", ["controller", "compute1"])
    assert res["controller"].ok
    assert not res["compute1"].reached
    assert f"host key of [127.0.0.12]:{sshd_site.port}" in res["compute1"].error and str(kh) in res["compute1"].error


def test_changed_host_key_is_refused_as_a_possible_impostor(sshd_site, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = Path(f"{other}.pub").read_text().split()
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[127.0.0.12]:{sshd_site.port} {pub[0]} {pub[1]}\n")
    with Remote(site_of(sshd_site, known_hosts=str(kh))) as r:
        res = r.run_one("compute1", "true")
    assert "MISMATCH" in res.error and "refusing" in res.error


def test_wrong_key_fails_authentication_clearly(sshd_site, tmp_path):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    with Remote(site_of(sshd_site, key_file=str(wrong))) as r:
        res = r.run_one("compute1", "true")
    assert res.error.startswith("compute1: SSH authentication failed as root")
