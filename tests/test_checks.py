"""Checks: verdicts and remediations from gathered facts (pure; no hosts)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from runbook_lib import checks, params, preflight
from runbook_lib.checks import Settings
from runbook_lib.facts import HostFacts
from runbook_lib.facts import nova as nv
from runbook_lib.facts import system as sysf

DATA = Path(__file__).parent / "data" / "recorded"
SITE = params.from_mapping({
    "site": "s",
    "management_cidr": "198.18.0.0/24",
    "hosts": [
        {"name": "controller", "role": "controller", "address": "198.18.0.10"},
        {"name": "compute1", "role": "compute", "address": "198.18.0.11"},
        {"name": "compute2", "role": "compute", "address": "198.18.0.12"},
    ],
})
ADDR = {"controller": "198.18.0.10", "compute1": "198.18.0.11", "compute2": "198.18.0.12"}
GOOD_CONF = """[DEFAULT]
host = {name}
[libvirt]
virt_type = kvm
live_migration_with_native_tls = true
[vnc]
server_listen = 0.0.0.0
server_proxyclient_address = {addr}
"""
CPU = sysf.parse_lscpu((DATA / "lscpu-xeon-kvm-debian12.txt").read_text(), 0)


def host(name: str) -> HostFacts:
    v = {
        "hostname": name,
        "addresses": [{"interface": "eth0", "address": ADDR[name], "prefix": "24"}],
        "resolution": dict(ADDR),
        "nova_ids": {"uid": 64060, "gid": 64060, "group_gid": 64060},
    }
    if name != "controller":
        peers = [n for n in ("compute1", "compute2") if n != name]
        v.update({
            "qemu_ids": {"uid": 64055, "gid": 994, "group_gid": 994},
            "init": "systemd",
            "cpu": copy.deepcopy(CPU),
            "memory": {"total_mb": 8000, "available_mb": 6000},
            "listeners": [{"address": "0.0.0.0", "port": 22}, {"address": "0.0.0.0", "port": 16514}],
            "libvirt_version": "9.0.0",
            "qemu_version": "7.2.22",
            "libvirt_daemons": {"units": {"libvirtd.socket": ("enabled", "active"),
                                          "libvirtd-tls.socket": ("enabled", "active")},
                                "processes": [], "model": "socket-activated", "listen_flag": False},
            "libvirt_conf": {"/etc/libvirt/libvirtd.conf": {}, "/etc/default/libvirtd": {}},
            "host_cpu": {"model": "kvm64", "xml": "<cpu/>"},
            "nova_conf": nv.parse_ini(GOOD_CONF.format(name=name, addr=ADDR[name])),
            "instances_dir": {"path": "/var/lib/nova/instances", "mode": "755", "uid": 64060, "gid": 64060,
                              "owner": "nova", "group": "nova", "source": "198.18.0.10:/var/lib/nova/instances",
                              "fstype": "nfs4", "mountpoint": "/var/lib/nova/instances", "avail_bytes": 10 * 2**30},
            "reachability": {**{(p, 16514): "open" for p in peers}, **{(p, 49152): "refused" for p in peers},
                             ("controller", 2049): "open"},
            **{f"cpu_compare:{p}": {"result": "identical", "reason": ""} for p in peers},
        })
    return HostFacts(name, v, duration=0.1)


def good() -> dict[str, HostFacts]:
    return {n: host(n) for n in SITE.names}


def verdicts(results):
    return {(c.host, c.check): c.verdict for c in results}


def by_key(results):
    return {(c.host, c.check): c for c in results}


def test_a_ready_site_passes_every_applicable_check():
    res = checks.preflight(SITE, good(), Settings(transport="tls", storage="nfs"))
    v = verdicts(res)
    assert {k: x for k, x in v.items() if x != "pass" and k[0] != "controller"} == {}
    assert v[("controller", "libvirt-daemon")] == "skip"
    assert list(checks.matrix(res).columns) == checks.CHECK_NAMES


def test_uid_drift_fails_against_the_nfs_server_with_the_identity_phase_named():
    g = good()
    g["compute2"].values["nova_ids"] = {"uid": 64061, "gid": 64061, "group_gid": 64061}
    c = by_key(checks.preflight(SITE, g))[("compute2", "nova-ids")]
    assert c.verdict == "fail" and "controller has uid 64060" in c.detail
    assert "uid 64060 gid 64060" in c.remediation and "identity" in c.remediation


def test_loopback_resolution_is_wrong_and_the_fix_names_the_hosts_line():
    g = good()
    g["compute1"].values["resolution"]["compute2"] = "127.0.1.1"
    c = by_key(checks.preflight(SITE, g))[("compute1", "name-resolution")]
    assert c.verdict == "fail" and "compute2 → 127.0.1.1 (want 198.18.0.12)" in c.detail
    assert "'198.18.0.12 compute2'" in c.remediation


def test_socket_activation_with_legacy_listen_is_the_classic_trap():
    g = good()
    g["compute2"].values["libvirt_conf"]["/etc/default/libvirtd"] = {"LIBVIRTD_ARGS": "--listen"}
    c = by_key(checks.preflight(SITE, g))[("compute2", "libvirt-daemon")]
    assert c.verdict == "fail" and "--listen parameter not permitted" in c.detail
    assert "libvirt-transport" in c.remediation


def test_nothing_listening_for_the_transport_fails_and_tcp_without_auth_warns():
    g = good()
    g["compute2"].values["listeners"] = [{"address": "0.0.0.0", "port": 22}]
    c = by_key(checks.preflight(SITE, g))[("compute2", "libvirt-daemon")]
    assert c.verdict == "fail" and "nothing listens on 16514" in c.detail and "Failed to connect to remote libvirt URI" in c.remediation
    g = good()
    g["compute1"].values["listeners"].append({"address": "0.0.0.0", "port": 16509})
    g["compute1"].values["libvirt_conf"]["/etc/libvirt/libvirtd.conf"] = {"auth_tcp": "none"}
    c = by_key(checks.preflight(SITE, g, Settings(transport="tcp")))[("compute1", "libvirt-daemon")]
    assert c.verdict == "warn" and "labs only" in c.remediation


def test_legacy_vnc_options_and_loopback_proxyclient_address():
    g = good()
    g["compute1"].values["nova_conf"] = nv.parse_ini(
        "[DEFAULT]\nvncserver_listen = 0.0.0.0\nvncserver_proxyclient_address = 127.0.0.1\n[libvirt]\nvirt_type = qemu\n")
    c = by_key(checks.preflight(SITE, g))[("compute1", "vnc-config")]
    assert c.verdict == "fail"
    assert "server_proxyclient_address is unset (want 198.18.0.11)" in c.detail
    assert "legacy [DEFAULT] vncserver_listen, vncserver_proxyclient_address ignored by Nova" in c.detail
    assert "nova-conf" in c.remediation


def test_migration_options_must_match_the_transport():
    res = by_key(checks.preflight(SITE, good(), Settings(transport="ssh")))
    assert res[("compute1", "migration-config")].verdict == "fail"
    assert "live_migration_scheme is unset (tcp), want ssh" in res[("compute1", "migration-config")].detail


def test_instances_dir_local_when_nfs_is_wanted_and_missing_o_x():
    g = good()
    g["compute2"].values["instances_dir"].update(fstype="ext4", source="/dev/vda", mode="750")
    c = by_key(checks.preflight(SITE, g, Settings(storage="nfs")))[("compute2", "instances-dir")]
    assert c.verdict == "fail" and "lacks o+x" in c.detail and "storage=nfs wants the NFS export" in c.detail
    # the lab's user-space NFS client counts as NFS
    assert checks.is_nfs("fuse.lmlab-nfs") and not checks.is_nfs("fuse.sshfs") and not checks.is_nfs("ext4")


def test_firewalled_ports_fail_reachability_but_a_refused_migration_port_is_fine():
    g = good()
    g["compute1"].values["reachability"][("compute2", 49152)] = "timeout"
    g["compute1"].values["reachability"][("compute2", 16514)] = "refused"
    c = by_key(checks.preflight(SITE, g))[("compute1", "reachability")]
    assert c.verdict == "fail" and "compute2:16514 refused" in c.detail and "compute2:49152 timeout" in c.detail
    assert verdicts(checks.preflight(SITE, good()))[("compute1", "reachability")] == "pass"


def test_cpu_incompatibility_fails_for_kvm_and_is_only_noted_for_tcg():
    g = good()
    g["compute2"].values["cpu_compare:compute1"] = {
        "result": "incompatible", "reason": "the CPU is incompatible with host CPU: Host CPU does not provide required features: vmx"}
    c = by_key(checks.preflight(SITE, g))[("compute2", "cpu-compat")]
    assert c.verdict == "fail" and "CPU doesn't have compatibility" in c.remediation and "vmx" in c.detail
    g["compute2"].values["nova_conf"]["libvirt"]["virt_type"] = ["qemu"]
    c = by_key(checks.preflight(SITE, g))[("compute2", "cpu-compat")]
    assert c.verdict == "pass" and "Nova skips the comparison" in c.detail


def test_unreached_host_is_one_failure_and_the_rest_skipped():
    g = good()
    g["compute2"] = HostFacts("compute2", error="compute2: cannot connect to 198.18.0.12:22 (Connection refused)")
    res = checks.preflight(SITE, g)
    v = verdicts(res)
    assert v[("compute2", "ssh")] == "fail"
    assert {x for (h, c), x in v.items() if h == "compute2" and c != "ssh"} == {"skip"}
    assert checks.counts(res)["fail"] == 1


def test_pairwise_matrix_says_why_not():
    g = good()
    assert preflight.pairwise(SITE, g, Settings()).loc["compute1", "compute2"] == "ok (shared)"
    g["compute2"].values["cpu_compare:compute1"] = {"result": "incompatible", "reason": "missing vmx"}
    g["compute1"].values["reachability"][("compute2", 16514)] = "refused"
    g["compute2"].values["nova_ids"] = {"uid": 64061, "gid": 64061, "group_gid": 64061}
    m = preflight.pairwise(SITE, g, Settings())
    cell = m.loc["compute1", "compute2"]
    assert cell.startswith("✗") and "port 16514 refused" in cell and "CPU incompatible: missing vmx" in cell
    assert "nova uid 64060 ≠ 64061 on shared storage" in cell
    assert m.loc["compute2", "compute1"].startswith("✗ nova uid 64061")
    g = good()
    for n in ("compute1", "compute2"):
        g[n].values["instances_dir"].update(fstype="ext4", source="/dev/vda")
    assert preflight.pairwise(SITE, g, Settings()).loc["compute2", "compute1"] == "ok (block)"
    g["compute1"].values["instances_dir"].update(fstype="nfs4", source="198.18.0.10:/x")
    assert "shared on one side only" in preflight.pairwise(SITE, g, Settings()).loc["compute2", "compute1"]


def test_resources_show_the_difference_the_source_procedure_missed():
    g = good()
    g["compute2"].values["cpu"]["cpus"] = 4
    g["compute2"].values["memory"]["total_mb"] = 16000
    g["compute1"].values["cpu"]["flags"] = [f for f in CPU["flags"] if f != "avx512f"]
    r = preflight.resources(SITE, g)
    assert list(r.columns) == ["compute1", "compute2"]
    assert r.loc["CPUs", "compute1"] == 2 and r.loc["CPUs", "compute2"] == 4
    assert r.loc["RAM MiB", "compute2"] == 16000
    assert r.loc["CPU flags missing here", "compute1"] == "avx512f"
    assert r.loc["CPU flags missing here", "compute2"] == "none"


def test_settings_are_validated():
    from runbook_lib.errors import ParamsError

    with pytest.raises(ParamsError, match="key 'transport'.*tls, ssh, tcp"):
        preflight.settings("udp")
    with pytest.raises(ParamsError, match="key 'nfs_server'.*unknown host 'nas'"):
        preflight.settings("tls", "nfs", "nas", SITE)


def test_cpu_comparisons_are_made_once_per_distinct_cpu_and_spread_to_every_pair():
    g = good()
    for n in ("compute1", "compute2"):
        g[n].values["host_cpu"] = {"model": "kvm64", "xml": "<cpu><model>kvm64</model></cpu>\n"}
    site3 = params.from_mapping({**{k: v for k, v in SITE.as_parameters().items() if v is not None},
                                 "hosts": SITE.as_parameters()["hosts"] + [{"name": "compute3", "role": "compute", "address": "198.18.0.13"}]})
    g["compute3"] = HostFacts("compute3", dict(g["compute2"].values), duration=0.1)
    plan = preflight.cpu_compare_facts(site3, g)
    assert {h: len(fs) for h, fs in plan.items()} == {"compute1": 1, "compute2": 1, "compute3": 1}
    (fact,) = plan["compute1"]
    for n in ("compute1", "compute2", "compute3"):
        g[n].values[fact.name] = {"result": "identical", "reason": ""}
    preflight.spread_cpu_compares(g)
    assert g["compute1"].values["cpu_compare:compute2"] == g["compute1"].values["cpu_compare:compute3"] == {"result": "identical", "reason": ""}
    assert "cpu_compare:compute1" not in g["compute1"].values
