"""Shared fixtures: real sshd test hosts, the project's paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sshd_hosts

# every test lab shares one cache (Debian rootfs, guest kernel, OpenStack services venv): built
# once per machine, then each lab starts in seconds
os.environ.setdefault("RUNBOOK_LAB_CACHE", "/var/lib/runbook-lab/cache")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: sshd test hosts run in their own UTS and mount namespaces")


#: The standard test site: a controller, two computes that disagree with it in two ways
#: (compute2's nova uid/gid; compute2 cannot resolve compute1), and a third compute that
#: is down (nothing listens on its address).
STANDARD = [
    sshd_hosts.HostSpec("controller", "127.0.0.11", role="controller"),
    sshd_hosts.HostSpec("compute1", "127.0.0.12"),
    sshd_hosts.HostSpec("compute2", "127.0.0.13", nova_uid=64061, nova_gid=64061, unresolvable=("compute1",)),
    sshd_hosts.HostSpec("compute3", "127.0.0.14", down=True),
]

#: A site where everything the first-cut preflight checks is right.
HEALTHY = [
    sshd_hosts.HostSpec("controller", "127.0.0.21", role="controller"),
    sshd_hosts.HostSpec("compute1", "127.0.0.22"),
    sshd_hosts.HostSpec("compute2", "127.0.0.23"),
]


@pytest.fixture(scope="module")
def sshd_site(tmp_path_factory: pytest.TempPathFactory):
    """The STANDARD site's sshd hosts, running for the module."""
    _need_root()
    hosts = sshd_hosts.start(tmp_path_factory.mktemp("sshd"), STANDARD)
    yield hosts
    hosts.stop()


@pytest.fixture(scope="module")
def healthy_site(tmp_path_factory: pytest.TempPathFactory):
    """The HEALTHY site's sshd hosts, running for the module."""
    _need_root()
    hosts = sshd_hosts.start(tmp_path_factory.mktemp("sshd-ok"), HEALTHY, site="healthy")
    yield hosts
    hosts.stop()
