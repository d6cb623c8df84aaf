"""Pure parts of the lab: naming, addresses, client files, the guest's initramfs, mount.nfs args."""

from __future__ import annotations

import gzip
import ipaddress
from pathlib import Path

import pytest
import yaml

from runbook_lib.lab import nfsfuse
from runbook_lib.lab.errors import LabError
from runbook_lib.lab.guest import build_initramfs, domain_xml
from runbook_lib.lab.keys import known_hosts_text, params_text, ssh_config_text
from runbook_lib.lab.layout import LabPaths, parse_net, plan_hosts
from runbook_lib.lab.rootfs import debian_mirror

pytestmark = pytest.mark.lab


def test_plan_hosts_addresses_names_and_nova_drift():
    hosts = plan_hosts(ipaddress.ip_network("198.18.0.0/24"), 2, 7)
    assert [(h.name, h.address, h.netns, h.veth, h.nova_uid) for h in hosts] == [
        ("controller", "198.18.0.10", "rblab7-controller", "rblab7-ctl", 64060),
        ("compute1", "198.18.0.11", "rblab7-compute1", "rblab7-c1", 64060),
        ("compute2", "198.18.0.12", "rblab7-compute2", "rblab7-c2", 64061),
    ]


def test_interface_names_fit_the_kernel_limit_at_scale():
    hosts = plan_hosts(ipaddress.ip_network("198.18.0.0/24"), 200, 999)
    assert max(len(h.veth) for h in hosts) <= 15


@pytest.mark.parametrize("net", ["198.18.0.0/30", "2001:db8::/64", "198.18.0.1/24", "nonsense"])
def test_bad_networks_are_refused(net):
    with pytest.raises(LabError):
        parse_net(net)


def test_too_many_computes_for_the_network():
    with pytest.raises(LabError, match="room for"):
        plan_hosts(ipaddress.ip_network("198.18.0.0/28"), 10, 0)


def test_client_files(tmp_path):
    paths = LabPaths(tmp_path, tmp_path / "cache")
    network = ipaddress.ip_network("198.18.9.0/24")
    hosts = plan_hosts(network, 2, 0)
    data = yaml.safe_load(params_text(paths, network, hosts))
    assert set(data) == {"site", "management_cidr", "ssh", "hosts"}
    assert data["ssh"]["key_file"] == str(tmp_path / "id_ed25519")
    assert data["hosts"][2] == {"name": "compute2", "role": "compute", "address": "198.18.9.12"}
    kh = known_hosts_text([(hosts[1], "ssh-ed25519 AAAAkey root@compute1")])
    assert "198.18.9.11,compute1 ssh-ed25519 AAAAkey\n" in kh
    config = ssh_config_text(paths, hosts)
    assert "StrictHostKeyChecking yes" in config and f"UserKnownHostsFile {paths.known_hosts}" in config


def test_initramfs_is_a_newc_archive_with_init_and_busybox(tmp_path):
    fake = tmp_path / "busybox"
    fake.write_bytes(b"\x7fELF fake busybox")
    data = gzip.decompress(build_initramfs(fake))
    assert data.startswith(b"070701")
    for name in (b"init\0", b"bin/busybox\0", b"TRAILER!!!\0"):
        assert name in data
    assert b"rblab-guest tick" in data
    assert len(data) % 4 == 0


def test_domain_xml_points_at_the_cached_kernel():
    xml = domain_xml(Path("/c/vmlinuz"), Path("/c/initrd.gz"))
    assert "<kernel>/c/vmlinuz</kernel>" in xml and "type='qemu'" in xml and "<disk" not in xml


def test_mount_helper_arguments():
    assert nfsfuse.parse_args(["controller:/var/lib/nova/instances", "/mnt", "-o", "rw,vers=3"]) == (
        "controller", "/var/lib/nova/instances", "/mnt", {"rw": "", "vers": "3"})
    assert nfsfuse.parse_args(["nfs://ctl/export", "/x"])[:2] == ("ctl", "/export")
    with pytest.raises(SystemExit):
        nfsfuse.parse_args(["no-colon", "/mnt"])


def test_mirror_comes_from_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"
