"""Pure parts of the lab's cloud: config generation, nova.conf merging, sizes, secrets."""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path

import pytest
import yaml

from runbook_lib.cloud import config
from runbook_lib.cloud.compute import compute_conf_files, sysv_script, systemd_unit
from runbook_lib.cloud.conffile import merge_options
from runbook_lib.cloud.errors import CloudError
from runbook_lib.cloud.layout import CloudPaths, CloudPlan, ComputeSize, size_for

PATHS = CloudPaths(Path("/var/lib/rbtest"), Path("/var/cache/rbtest/cloud-venv"))
PLAN = CloudPlan("198.18.3.1", 40001, 40002)
SECRETS = config.Secrets("adminpw", "dbpw", "rabbitpw",
                         {u: f"{u}pw" for u in config.SERVICE_USERS})

#: what the lab seeds on a compute (legacy [DEFAULT] vncserver_* lines included)
SEEDED = """\
[DEFAULT]
host = compute1
my_ip = 198.18.3.11
state_path = /var/lib/nova
compute_driver = libvirt.LibvirtDriver
vncserver_listen = 0.0.0.0
vncserver_proxyclient_address = 198.18.3.11

[libvirt]
# KVM guests do not boot on the lab machine; QEMU TCG does
virt_type = qemu
"""


@pytest.mark.parametrize("text, options, expected", [
    ("[DEFAULT]\na = 1\n", {"DEFAULT": {"b": 2}}, "[DEFAULT]\na = 1\nb = 2\n"),
    ("[DEFAULT]\na = 1\n", {"DEFAULT": {"a": 3}}, "[DEFAULT]\na = 3\n"),
    ("[DEFAULT]\na = 1\n\n[x]\nk = v\n", {"DEFAULT": {"b": 2}},
     "[DEFAULT]\na = 1\nb = 2\n\n[x]\nk = v\n"),
    ("[DEFAULT]\na = 1\n", {"placement": {"auth_type": "password"}},
     "[DEFAULT]\na = 1\n\n[placement]\nauth_type = password\n"),
    # a commented key is not the key: it stays, the value is added
    ("[DEFAULT]\n#a = 1\n", {"DEFAULT": {"a": 2}}, "[DEFAULT]\n#a = 1\na = 2\n"),
    # a repeated key: the last one (the one oslo.config uses) is rewritten
    ("[DEFAULT]\na = 1\na = 2\n", {"DEFAULT": {"a": 3}}, "[DEFAULT]\na = 1\na = 3\n"),
    # a section that appears twice: added to its last block
    ("[s]\na = 1\n[t]\n[s]\nb = 1\n", {"s": {"c": 1}}, "[s]\na = 1\n[t]\n[s]\nb = 1\nc = 1\n"),
    ("", {"s": {"a": 1}}, "[s]\na = 1\n"),
])
def test_merge_options(text: str, options: dict, expected: str) -> None:
    assert merge_options(text, options) == expected


def test_merge_options_twice_is_a_noop() -> None:
    once = merge_options(SEEDED, config.compute_nova_options(PLAN, SECRETS))
    assert merge_options(once, config.compute_nova_options(PLAN, SECRETS)) == once


def test_compute_conf_keeps_the_labs_legacy_lines() -> None:
    nova_conf, driver_conf = compute_conf_files(PLAN, SECRETS, ComputeSize(4, 8192), SEEDED)
    for line in SEEDED.splitlines():
        assert line in nova_conf.splitlines()          # nothing of the seeded file is lost
    parsed = configparser.RawConfigParser(strict=False)
    parsed.read_string(nova_conf)
    assert parsed["DEFAULT"]["transport_url"] == "rabbit://openstack:rabbitpw@198.18.3.1:5672/"
    assert parsed["DEFAULT"]["compute_driver"] == "libvirt.LibvirtDriver"   # untouched
    assert parsed["placement"]["auth_url"] == "http://198.18.3.1:5000/v3"
    assert parsed["placement"]["password"] == "novapw"
    assert "database" not in parsed and "api_database" not in parsed       # computes: no DB
    driver = configparser.RawConfigParser()
    driver.read_string(driver_conf)
    assert driver["DEFAULT"]["compute_driver"] == "fake.FakeDriverWithoutFakeNodes"
    assert {k: driver.get("rblab_fake_driver", k) for k in ("vcpus", "memory_mb", "local_gb")} \
        == {"vcpus": "4", "memory_mb": "8192", "local_gb": "100"}
    assert driver["DEFAULT"]["cpu_allocation_ratio"] == "1.0"


def test_controller_configs_use_the_socket_and_the_listen_address() -> None:
    nova = configparser.RawConfigParser()
    nova.read_string(config.nova_conf(PATHS, PLAN, SECRETS))
    assert nova["database"]["connection"].endswith(
        "@localhost/nova?unix_socket=/var/lib/rbtest/cloud/run/mysqld.sock&charset=utf8")
    assert nova["keystone_authtoken"]["interface"] == "public"
    assert nova["wsgi"]["api_paste_config"] == "/var/lib/rbtest/cloud/etc/api-paste.ini"
    keystone = configparser.RawConfigParser()
    keystone.read_string(config.keystone_conf(PATHS, SECRETS))
    assert "/keystone?" in keystone["database"]["connection"]
    rabbit = config.rabbitmq_conf(PLAN, SECRETS)
    assert "listeners.tcp.default = 198.18.3.1:5672" in rabbit


def test_clouds_yaml() -> None:
    data = yaml.safe_load(config.clouds_yaml(PLAN, SECRETS))
    lab = data["clouds"]["lab"]
    assert lab["auth"]["auth_url"] == "http://198.18.3.1:5000/v3"
    assert lab["auth"]["password"] == "adminpw"
    assert lab["interface"] == "public"


def test_secrets_are_random_hidden_and_round_trip() -> None:
    a, b = config.Secrets.generate(), config.Secrets.generate()
    assert a.admin != b.admin and set(a.services) == set(config.SERVICE_USERS)
    assert a.admin not in repr(a) and a.admin not in str(a)
    assert config.Secrets.from_json(a.to_json()) == a


@pytest.mark.parametrize("listen", ["0.0.0.0", "192.0.2.2", "10.0.0.1", "127.0.0.2"])
def test_plan_refuses_addresses_beyond_loopback_and_the_lab(listen: str) -> None:
    with pytest.raises(CloudError):
        CloudPlan(listen, 1, 2)


def test_sizes() -> None:
    assert ComputeSize.parse("4:8192") == ComputeSize(4, 8192, 100)
    assert ComputeSize.parse("2:4096:20") == ComputeSize(2, 4096, 20)
    for bad in ("4", "a:b", "0:100", "1:2:3:4"):
        with pytest.raises(CloudError):
            ComputeSize.parse(bad)
    # the source procedure's case, and the last size repeats for more computes
    assert [size_for(i) for i in (1, 2, 3)] == [ComputeSize(4, 8192), ComputeSize(2, 4096),
                                                 ComputeSize(2, 4096)]


def test_service_manager_files_name_the_venv_launcher() -> None:
    launcher = "/var/cache/rbtest/cloud-venv/bin/rblab-nova-compute"
    assert f"ExecStart={launcher} " in systemd_unit(PATHS)
    assert "User=nova" in systemd_unit(PATHS)
    script = sysv_script(PATHS)
    assert f"DAEMON={launcher}" in script and "--chuid nova:nova" in script
    assert script.startswith("#!/bin/sh\n### BEGIN INIT INFO")


def test_launcher_reads_sizes_from_its_config_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "launcher", Path(config.__file__).with_name("compute_launcher.py"))
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    nova = tmp_path / "nova.conf"
    nova.write_text(SEEDED + "[DEFAULT]\nhost = again\n")
    driver = tmp_path / "nova-compute.conf"
    driver.write_text(config.compute_driver_conf(ComputeSize(2, 4096, 20)))
    sizes = launcher._sizes(["--config-file", str(nova), f"--config-file={driver}"])
    assert sizes == {"vcpus": 2, "memory_mb": 4096, "local_gb": 20}
