"""The configure planner (pure): diffs, reasons, idempotence, the insecure transport by name only."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib import configure, params
from runbook_lib.errors import ParamsError
from runbook_lib.facts import HostFacts
from runbook_lib.facts import libvirt as lv

DATA = Path(__file__).parent / "data" / "recorded"
SITE = params.from_mapping({
    "site": "s", "management_cidr": "198.18.0.0/24",
    "hosts": [
        {"name": "controller", "role": "controller", "address": "198.18.0.10"},
        {"name": "compute1", "role": "compute", "address": "198.18.0.11"},
        {"name": "compute2", "role": "compute", "address": "198.18.0.12"},
    ],
})
SEEDED_NOVA = "[DEFAULT]\nhost = {h}\nvncserver_listen = 0.0.0.0\nvncserver_proxyclient_address = 127.0.0.1\n\n[libvirt]\nvirt_type = qemu\n"
HOSTS_FILE = "127.0.0.1 localhost\n127.0.1.1 {h}\n"


def gathered(model="socket-activated", init="systemd", uid2=64061):
    g = {}
    for name in SITE.names:
        v = {"nova_ids": {"uid": 64060 if name != "compute2" else uid2, "gid": 64060 if name != "compute2" else uid2, "group_gid": 0},
             "init": init}
        if name != "controller":
            v["libvirt_daemons"] = {"model": model, "units": {}, "processes": [], "listen_flag": False}
            v["instances_dir"] = {"path": "/var/lib/nova/instances", "fstype": "ext4", "source": "/dev/vda"}
        g[name] = HostFacts(name, v)
    return g


def current():
    files = {}
    for name in SITE.names:
        f = {configure.HOSTS: HOSTS_FILE.format(h=name)}
        if name != "controller":
            f.update({
                configure.NOVA_CONF: SEEDED_NOVA.format(h=name),
                configure.LIBVIRTD_CONF: (DATA / "libvirtd.conf-debian12").read_text(),
                configure.DEFAULT_LIBVIRTD: (DATA / "default-libvirtd-debian12").read_text(),
                configure.SYSCONFIG_LIBVIRTD: None, configure.VIRTPROXYD_CONF: None,
                configure.FSTAB: "UUID=abc / ext4 defaults 0 1\n",
            })
        else:
            f[configure.GANESHA_CONF] = (DATA / "ganesha.conf-debian12").read_text()
            f[configure.EXPORTS] = None
        files[name] = f
    return files


def after_apply(plan, files):
    """The files as they would be after applying the plan."""
    new = {h: dict(f) for h, f in files.items()}
    for c in plan.changes:
        new[c.host][c.path] = c.after
    return new


def test_tcp_without_auth_needs_to_be_asked_for_by_name():
    with pytest.raises(ParamsError, match=r"key 'transport'.*insecure_lab_transport"):
        configure.options(SITE, transport="tcp")
    o = configure.options(SITE, transport="tcp", insecure_lab_transport=True)
    p = configure.plan(SITE, gathered(), current(), o)
    assert p.warnings and "INSECURE LAB TRANSPORT" in p.warnings[0]


def test_tls_plan_on_socket_activated_hosts_uses_the_tls_socket_and_never_listen():
    o = configure.options(SITE)  # tls, storage none
    p = configure.plan(SITE, gathered(), current(), o)
    diff = str(p.diff())
    assert "+live_migration_with_native_tls = true" in diff
    assert "+server_proxyclient_address = 198.18.0.11" in diff and "+server_proxyclient_address = 198.18.0.12" in diff
    assert "-vncserver_proxyclient_address = 127.0.0.1" in diff
    assert "--listen" not in diff.replace("-vncserver", "")
    actions = {(a.host, a.description) for a in p.actions}
    assert ("compute1", "stop libvirtd, enable libvirtd-tls.socket, start libvirtd") in actions
    assert ("compute1", "check the TLS certificates exist") in actions


def test_legacy_listen_is_removed_under_socket_activation():
    files = current()
    files["compute1"][configure.DEFAULT_LIBVIRTD] = 'LIBVIRTD_ARGS="--listen"\n'
    p = configure.plan(SITE, gathered(), files, configure.options(SITE, transport="tcp-sasl"))
    ch = next(c for c in p.changes if c.host == "compute1" and c.path == configure.DEFAULT_LIBVIRTD)
    assert ch.after == 'LIBVIRTD_ARGS=""\n' and "socket activation" in ch.reasons[0]


def test_sysv_hosts_get_listen_the_classic_way():
    p = configure.plan(SITE, gathered(model="monolithic", init="sysv"), current(),
                       configure.options(SITE, transport="tcp", insecure_lab_transport=True))
    ch = {(c.host, c.path): c for c in p.changes}
    conf = lv.parse_libvirt_conf(ch[("compute2", configure.LIBVIRTD_CONF)].after)
    assert conf["listen_tcp"] == 1 and conf["listen_tls"] == 0 and conf["auth_tcp"] == "none"
    assert lv.parse_shell_vars(ch[("compute2", configure.DEFAULT_LIBVIRTD)].after)["LIBVIRTD_ARGS"] == "--listen"
    assert any(a.command == "service libvirtd restart" for a in p.actions if a.host == "compute2")


def test_identity_realigns_only_the_drifted_host_in_a_safe_order():
    p = configure.plan(SITE, gathered(), current(), configure.options(SITE))
    ident = [a for a in p.actions if a.phase == "identity"]
    assert {a.host for a in ident} == {"compute2"}
    assert [a.description for a in ident] == [
        "stop nova-compute while ids change", "nova gid 64061 → 64060, uid 64061 → 64060",
        "re-own files of uid 64061 / gid 64061 on local file systems", "start nova-compute",
    ]
    walk = ident[2].command
    assert "findmnt" in walk and "-xdev" in walk and "nfs" not in walk  # local file systems only


def test_nfs_storage_exports_to_the_management_network_only():
    p = configure.plan(SITE, gathered(), current(), configure.options(SITE, storage="nfs"))
    ch = {(c.host, c.path): c for c in p.changes}
    export = ch[("controller", configure.GANESHA_CONF)].after
    assert "Clients = 198.18.0.0/24;" in export and "Clients = *" not in export
    assert "198.18.0.10:/var/lib/nova/instances /var/lib/nova/instances nfs defaults,_netdev 0 0" in ch[("compute1", configure.FSTAB)].after


def test_hosts_file_loses_127_0_1_1_and_gains_every_node():
    p = configure.plan(SITE, gathered(), current(), configure.options(SITE))
    after = next(c for c in p.changes if c.host == "compute1" and c.path == configure.HOSTS).after
    assert "127.0.1.1" not in after.replace("#127.0.1.1", "")
    for ip, name in (("198.18.0.10", "controller"), ("198.18.0.11", "compute1"), ("198.18.0.12", "compute2")):
        assert f"{ip} {name}" in after


@pytest.mark.parametrize("opts", [
    {}, {"storage": "nfs"}, {"transport": "tcp", "insecure_lab_transport": True}, {"transport": "tcp-sasl"},
    {"cpu_mode": "custom", "cpu_models": ["qemu64"]},
])
def test_a_second_plan_after_applying_changes_nothing(opts):
    o = configure.options(SITE, **opts)
    first = configure.plan(SITE, gathered(), current(), o)
    assert first.pending
    second = configure.plan(SITE, gathered(), after_apply(first, current()), o)
    assert second.pending == [], str(second.diff())


def test_unreached_host_is_noted_not_planned():
    g = gathered()
    g["compute2"] = HostFacts("compute2", error="compute2: cannot connect")
    p = configure.plan(SITE, g, current(), configure.options(SITE))
    assert not [c for c in p.changes if c.host == "compute2"]
    assert any(n["host"] == "compute2" and "not reached" in n["note"] for n in p.notes)


def test_rollback_commands_check_the_file_is_still_what_the_run_wrote():
    cmds = configure.rollback_commands([
        {"host": "compute1", "path": "/etc/nova/nova.conf", "status": "applied", "backup": "/etc/nova/nova.conf.runbook-X.bak",
         "after_sha256": "abc"},
        {"host": "compute1", "path": "/etc/hosts", "status": "no-op"},
    ])
    (path, cmd), = cmds["compute1"]
    assert path == "/etc/nova/nova.conf" and "CHANGED-SINCE-RUN" in cmd and "mv -f" in cmd
