"""Facts: parsers on recorded real outputs; the batch script through a real shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runbook_lib import facts
from runbook_lib.facts import MISSING
from runbook_lib.facts import libvirt as lv
from runbook_lib.facts import nova as nv
from runbook_lib.facts import system as sysf
from runbook_lib.remote import Result

DATA = Path(__file__).parent / "data" / "recorded"
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
    assert sysf.parse_user_ids(out, 0 if out else 2) == expected


def test_versions_from_recorded_outputs():
    assert lv.parse_version((DATA / "libvirtd-version.txt").read_text(), 0) == "9.0.0"
    assert lv.parse_version((DATA / "qemu-version.txt").read_text(), 0) == "7.2.22"
    assert lv.parse_version("virtqemud (libvirt) 10.0.0\n", 0) == "10.0.0"
    assert lv.parse_version("bash: libvirtd: command not found\n", 127) is MISSING
    assert lv.parse_version("", 127) is MISSING


def test_parse_lscpu_recorded():
    cpu = sysf.parse_lscpu((DATA / "lscpu-xeon-kvm-debian12.txt").read_text(), 0)
    assert cpu["vendor"] == "GenuineIntel" and cpu["model_name"] == "Intel(R) Xeon(R) Processor"
    assert (cpu["cpus"], cpu["sockets"], cpu["cores_per_socket"], cpu["threads_per_core"]) == (2, 1, 2, 1)
    assert "avx512f" in cpu["flags"] and "vmx" not in cpu["flags"] and cpu["hypervisor"] == "KVM"
    assert sysf.parse_lscpu("", 127) is MISSING


def test_parse_meminfo_recorded():
    mem = sysf.parse_meminfo((DATA / "meminfo-debian12.txt").read_text(), 0)
    assert mem["total_mb"] > 1000 and 0 < mem["available_mb"] <= mem["total_mb"]


def test_parse_addresses_skips_link_local_and_keeps_interfaces():
    out = (
        "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n"
        "2: eth0@if7    inet 198.18.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever\n"
        "2: eth0@if7    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n"
        "3: eth1    inet6 2001:db8::5/64 scope global \\       valid_lft forever preferred_lft forever\n"
    )
    assert sysf.parse_addresses(out, 0) == [
        {"interface": "lo", "address": "127.0.0.1", "prefix": "8"},
        {"interface": "eth0", "address": "198.18.0.11", "prefix": "24"},
        {"interface": "eth1", "address": "2001:db8::5", "prefix": "64"},
    ]


def test_parse_listeners_ipv4_ipv6_and_wildcards():
    out = ("LISTEN 0      128          0.0.0.0:22        0.0.0.0:*\n"
           "LISTEN 0      50              [::]:16509        [::]:*\n"
           "LISTEN 0      4096   127.0.0.53%lo:53        0.0.0.0:*\n")
    assert sysf.parse_listeners(out, 0) == [
        {"address": "0.0.0.0", "port": 22}, {"address": "::", "port": 16509}, {"address": "127.0.0.53", "port": 53},
    ]


def test_parse_resolution_distinguishes_unresolved():
    out = "controller 198.18.0.10\ncompute1 127.0.1.1\ncompute2 \n"
    assert sysf.parse_resolution(out, 0) == {"controller": "198.18.0.10", "compute1": "127.0.1.1", "compute2": None}


def test_stock_debian_libvirt_files_have_no_active_settings_that_matter():
    conf = lv.parse_libvirt_conf((DATA / "libvirtd.conf-debian12").read_text())
    assert "listen_tcp" not in conf and "auth_tcp" not in conf  # all commented out in the stock file
    shell = lv.parse_shell_vars((DATA / "default-libvirtd-debian12").read_text())
    assert shell.get("LIBVIRTD_ARGS", "") == ""


def test_parse_libvirt_conf_values():
    text = 'listen_tls = 0\nlisten_tcp = 1 # on\nauth_tcp = "none"\n#auth_tls = "sasl"\ntls_allowed_dn_list = ["C=GB,O=x", "C=US"]\n'
    assert lv.parse_libvirt_conf(text) == {
        "listen_tls": 0, "listen_tcp": 1, "auth_tcp": "none", "tls_allowed_dn_list": ["C=GB,O=x", "C=US"],
    }


def test_parse_daemon_models():
    socket = ("unit libvirtd.service enabled inactive\nunit libvirtd.socket enabled active\n"
              "unit libvirtd-tcp.socket disabled inactive\n")
    assert lv.parse_daemons(socket, 0)["model"] == "socket-activated"
    legacy = "proc /usr/sbin/libvirtd -d --listen\n"
    d = lv.parse_daemons(legacy, 0)
    assert d["model"] == "monolithic" and d["listen_flag"]
    split = "unit virtqemud.socket enabled active\nunit virtproxyd.socket enabled active\nproc /usr/sbin/virtqemud --timeout 120\n"
    assert lv.parse_daemons(split, 0)["model"] == "split"
    assert lv.parse_daemons("", 0)["model"] == "none"


def test_cpu_compare_outputs():
    ok = "CPU described in /tmp/tmp.x is identical to the CPU provided by hypervisor on the host\n"
    assert lv.parse_cpu_compare(ok, 0) == {"result": "identical", "reason": ""}
    sup = "The CPU provided by hypervisor on the host is a superset of CPU described in /tmp/x\n"
    assert lv.parse_cpu_compare(sup, 0)["result"] == "superset"
    bad = ("error: Failed to compare hypervisor CPU with /tmp/tmp.x\n"
           "error: the CPU is incompatible with host CPU: Host CPU does not provide required features: vmx, smx\n")
    assert lv.parse_cpu_compare(bad, 1) == {
        "result": "incompatible",
        "reason": "the CPU is incompatible with host CPU: Host CPU does not provide required features: vmx, smx",
    }
    down = "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory\n"
    assert lv.parse_cpu_compare(down, 1)["result"] == "error"


def test_parse_host_cpu_and_its_xml():
    cpu_xml = (DATA / "x86-cpuid-Xeon-E5-2630-host.xml").read_text()
    caps = f"<capabilities><host><uuid>x</uuid>{cpu_xml}</host></capabilities>"
    cpu = lv.parse_host_cpu(caps, 0)
    assert cpu["model"] == "Haswell-noTSX" and cpu["vendor"] == "Intel" and "vmx" in cpu["features"]
    assert "<model>Haswell-noTSX</model>" in cpu["xml"] and "name='vmx'" in cpu["xml"]
    assert lv.parse_host_cpu("error: failed to connect to the hypervisor", 1) is MISSING


NOVA_CONF = """[DEFAULT]
host = compute1
vncserver_listen = 0.0.0.0
vncserver_proxyclient_address = 127.0.0.1
my_ip = 198.18.0.11
# instances_path = /srv/nova
[libvirt]
virt_type = qemu
live_migration_scheme = ssh
live_migration_scheme = tls
[vnc]
server_listen = 0.0.0.0
"""


def test_parse_nova_conf_keeps_sections_and_repeats():
    conf = nv.parse_ini(NOVA_CONF)
    assert nv.option(conf, "DEFAULT", "vncserver_listen") == "0.0.0.0"
    assert conf["libvirt"]["live_migration_scheme"] == ["ssh", "tls"]
    assert nv.option(conf, "libvirt", "live_migration_scheme") == "tls"  # last one wins
    assert nv.option(conf, "vnc", "server_proxyclient_address", "unset") == "unset"
    assert "instances_path" not in conf["DEFAULT"]
    assert nv.parse_nova_conf("", 1) is MISSING


def test_parse_instances_dir():
    out = "path /var/lib/nova/instances\nstat 755 64060 64060 nova nova\nmount /dev/vda ext4 /\navail 84000000000\n"
    assert nv.parse_instances_dir(out, 0) == {
        "path": "/var/lib/nova/instances", "mode": "755", "uid": 64060, "gid": 64060, "owner": "nova",
        "group": "nova", "source": "/dev/vda", "fstype": "ext4", "mountpoint": "/", "avail_bytes": 84000000000,
    }
    assert nv.parse_instances_dir("path /x\nabsent\n", 0) is MISSING


def _run_local(script: str) -> Result:
    p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    return Result("local", script, p.returncode, p.stdout, p.stderr, 0.0)


def test_batch_survives_failing_and_exiting_commands_and_keeps_exit_codes():
    fs = [
        facts.Fact("a", "echo one; echo two", lambda o, rc: (o, rc)),
        facts.Fact("b", "printf no-newline; exit 3", lambda o, rc: (o, rc)),
        facts.Fact("c", "echo err >&2; false", lambda o, rc: (o, rc)),
        facts.Fact("d", "echo last", lambda o, rc: (o, rc)),
        facts.Fact("e", "echo x", lambda o, rc: 1 / 0),
    ]
    hf = facts.parse_batch("local", fs, _run_local(facts.batch_script(fs)))
    assert hf.values == {"a": ("one\ntwo\n", 0), "b": ("no-newline\n", 3), "c": ("", 1), "d": ("last\n", 0), "e": MISSING}
    assert "ZeroDivisionError" in hf.parse_errors["e"]


def test_real_commands_through_the_batch_on_this_machine():
    fs = [sysf.hostname(), sysf.addresses(), sysf.memory(), sysf.listeners(), nv.instances_dir(), sysf.init_system()]
    hf = facts.parse_batch("local", fs, _run_local(facts.batch_script(fs)))
    assert hf.values["hostname"] == os.uname().nodename.split(".")[0]
    assert any(a["address"] == "127.0.0.1" for a in hf.values["addresses"])
    assert hf.values["memory"]["total_mb"] > 0
    assert isinstance(hf.values["listeners"], list)
    assert hf.values["init"] in ("systemd", "sysv")


def test_resolution_fact_quotes_hostile_names_and_reads_real_getent():
    f = sysf.resolution(["localhost", "no-such-host-runbook-test", "x; touch /tmp/runbook-pwned"])
    hf = facts.parse_batch("local", [f], _run_local(facts.batch_script([f])))
    got = hf.values["resolution"]
    assert got["localhost"] == "127.0.0.1"
    assert got["no-such-host-runbook-test"] is None
    assert not os.path.exists("/tmp/runbook-pwned")


def test_reachability_probe_tells_open_from_refused(tmp_path):
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: connections are refused
    try:
        f = sysf.reachability([("me", "127.0.0.1", port), ("me", "127.0.0.1", closed_port)])
        hf = facts.parse_batch("local", [f], _run_local(facts.batch_script([f])))
    finally:
        srv.close()
        closed.close()
    assert hf.values["reachability"] == {("me", port): "open", ("me", closed_port): "refused"}


def test_unreached_host_keeps_its_error():
    r = Result("c9", "x", None, "", "", 1.0, error="c9: cannot connect")
    hf = facts.parse_batch("c9", [sysf.hostname()], r)
    assert not hf.reached and hf.error == "c9: cannot connect" and hf.values == {}


def test_cpu_compare_outputs_recorded_in_the_lab():
    """Real `virsh hypervisor-cpu-compare --error` outputs from a lab compute (libvirt 9.0)."""
    kvm = lv.parse_cpu_compare((DATA / "lab-hypervisor-cpu-compare-foreign_kvm.txt").read_text(), 1)
    assert kvm["result"] == "error" and "accel 'kvm' is not supported" in kvm["reason"]
    foreign = lv.parse_cpu_compare((DATA / "lab-hypervisor-cpu-compare-foreign_qemu.txt").read_text(), 1)
    assert foreign == {"result": "incompatible",
                       "reason": "the CPU is incompatible with host CPU: host CPU vendor does not match required CPU vendor Intel"}
