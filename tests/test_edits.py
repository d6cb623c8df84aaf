"""Config editors on the real files Debian ships: comments kept, idempotent, minimal diffs."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from runbook_lib import edits
from runbook_lib.facts import libvirt as lv
from runbook_lib.facts import nova as nv

DATA = Path(__file__).parent / "data" / "recorded"
LIBVIRTD = (DATA / "libvirtd.conf-debian12").read_text()
DEFAULT = (DATA / "default-libvirtd-debian12").read_text()
NOVA = (DATA / "nova.conf-debian12-nova-common").read_text()
GANESHA = (DATA / "ganesha.conf-debian12").read_text()


def changed_lines(a: str, b: str) -> list[str]:
    return [l for l in difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
            if l[:1] in "+-" and not l.startswith(("+++", "---"))]


def test_libvirtd_setting_lands_after_its_commented_example_and_is_idempotent():
    once = edits.set_libvirt(LIBVIRTD, "auth_tcp", "none")
    assert edits.set_libvirt(once, "auth_tcp", "none") == once
    assert changed_lines(LIBVIRTD, once) == ['+auth_tcp = "none"']
    lines = once.splitlines()
    i = lines.index('auth_tcp = "none"')
    assert lines[i - 1].startswith("#auth_tcp")
    assert lv.parse_libvirt_conf(once)["auth_tcp"] == "none"
    # every comment of the shipped file is still there
    assert [l for l in LIBVIRTD.splitlines() if l.startswith("#")] == [l for l in lines if l.startswith("#")]


def test_changing_an_active_value_replaces_it_in_place_and_duplicates_are_marked():
    text = "listen_tcp = 0\n# comment\nlisten_tcp = 0\n"
    out = edits.set_libvirt(text, "listen_tcp", 1)
    assert out == "#listen_tcp = 0  # runbook: superseded below\n# comment\nlisten_tcp = 1\n"
    assert edits.set_libvirt(out, "listen_tcp", 1) == out


def test_shell_var_file_from_debian():
    once = edits.set_shell_var(DEFAULT, "LIBVIRTD_ARGS", "--listen")
    assert lv.parse_shell_vars(once)["LIBVIRTD_ARGS"] == "--listen"
    assert edits.set_shell_var(once, "LIBVIRTD_ARGS", "--listen") == once
    assert len(changed_lines(DEFAULT, once)) in (1, 2)


def test_nova_conf_from_nova_common_keeps_its_10000_lines():
    out = NOVA
    out = edits.set_ini(out, "vnc", "server_listen", "198.18.0.11")
    out = edits.set_ini(out, "vnc", "server_proxyclient_address", "198.18.0.11")
    out = edits.set_ini(out, "libvirt", "live_migration_with_native_tls", "true")
    out = edits.set_ini(out, "libvirt", "live_migration_scheme", "tcp")
    assert changed_lines(NOVA, out) == [
        "+live_migration_scheme = tcp", "+live_migration_with_native_tls = true",
        "+server_listen = 198.18.0.11", "+server_proxyclient_address = 198.18.0.11",
    ]
    conf = nv.parse_ini(out)
    assert nv.option(conf, "vnc", "server_proxyclient_address") == "198.18.0.11"
    assert nv.option(conf, "libvirt", "live_migration_with_native_tls") == "true"
    # placed inside the right section, right after the shipped commented example
    lines = out.splitlines()
    i = lines.index("server_listen = 198.18.0.11")
    assert lines[i - 1].startswith("#server_listen = 127.0.0.1")
    again = edits.set_ini(out, "vnc", "server_listen", "198.18.0.11")
    assert again == out


def test_legacy_default_vnc_lines_are_commented_with_a_reason():
    text = "[DEFAULT]\nhost = c1\nvncserver_listen = 0.0.0.0\nvncserver_proxyclient_address = 127.0.0.1\n\n[libvirt]\nvirt_type = qemu\n"
    out = edits.unset_ini(text, "DEFAULT", "vncserver_listen", "ignored by Nova, moved to [vnc]")
    assert "#vncserver_listen = 0.0.0.0  # runbook: ignored by Nova, moved to [vnc]" in out
    assert nv.option(nv.parse_ini(out), "DEFAULT", "vncserver_listen") is None
    assert edits.unset_ini(out, "DEFAULT", "vncserver_listen", "x") == out
    # a key with the same name in another section is left alone
    other = "[DEFAULT]\n[vnc]\nvncserver_listen = 1\n"
    assert edits.unset_ini(other, "DEFAULT", "vncserver_listen", "x") == other


def test_ini_missing_section_and_repeated_keys():
    assert edits.set_ini("[DEFAULT]\nhost = a\n", "vnc", "server_listen", "x") == "[DEFAULT]\nhost = a\n\n[vnc]\nserver_listen = x\n"
    text = "[libvirt]\ncpu_models = a\ncpu_models = b\n\n[vnc]\n"
    out = edits.set_ini(text, "libvirt", "cpu_models", "c")
    assert out == "[libvirt]\n#cpu_models = a  # runbook: superseded below\ncpu_models = c\n\n[vnc]\n"
    # a key added to a section without an example goes before the section's trailing blank lines
    assert edits.set_ini("[a]\nx = 1\n\n[b]\n", "a", "y", "2") == "[a]\nx = 1\ny = 2\n\n[b]\n"


def test_hosts_file_fixes_debian_127_0_1_1_and_is_idempotent():
    text = "127.0.0.1\tlocalhost\n127.0.1.1\tcompute1.example.org compute1\n\n# The following lines are desirable for IPv6\n::1 localhost ip6-localhost\n"
    entries = [("198.18.0.10", "controller"), ("198.18.0.11", "compute1")]
    out = edits.hosts_entries(text, entries)
    assert "127.0.1.1 compute1.example.org" in out and "198.18.0.11 compute1" in out and "198.18.0.10 controller" in out
    assert "# The following lines are desirable for IPv6" in out
    assert edits.hosts_entries(out, entries) == out


def test_ganesha_export_block_limited_to_the_network_and_replaced_not_duplicated():
    once = edits.ganesha_export(GANESHA, 77, "/var/lib/nova/instances", "198.18.0.0/24")
    assert "Clients = 198.18.0.0/24;" in once and "Clients = *" not in once
    assert edits.ganesha_export(once, 77, "/var/lib/nova/instances", "198.18.0.0/24") == once
    moved = edits.ganesha_export(once, 77, "/var/lib/nova/instances", "198.18.1.0/24")
    assert moved.count("runbook: nova instances") == 1 and "198.18.1.0/24" in moved


def test_ensure_line_replaces_conflicting_entries():
    fstab = "UUID=x / ext4 defaults 0 1\nold:/var/lib/nova/instances /var/lib/nova/instances nfs defaults 0 0\n"
    import re

    line = "198.18.0.10:/var/lib/nova/instances /var/lib/nova/instances nfs defaults,_netdev 0 0"
    out = edits.ensure_line(fstab, line, [re.compile(r"\s/var/lib/nova/instances\s")])
    assert out.splitlines() == [
        "UUID=x / ext4 defaults 0 1",
        "#old:/var/lib/nova/instances /var/lib/nova/instances nfs defaults 0 0  # runbook: replaced",
        line,
    ]
    assert edits.ensure_line(out, line, [re.compile(r"\s/var/lib/nova/instances\s")]) == out


@pytest.mark.parametrize("text", ["", "no newline at end", "a = 1\n"])
def test_edges_of_empty_and_unterminated_files(text):
    out = edits.set_libvirt(text, "listen_tcp", 1)
    assert out.endswith("listen_tcp = 1\n") or out.endswith("listen_tcp = 1")
    assert edits.set_libvirt(out, "listen_tcp", 1) == out
