"""Fixtures for the lab tests: a real lab per mode, and SSH into its hosts with paramiko.

Each mode gets its own lab directory and network (``198.18.1.0/24`` for nspawn,
``198.18.2.0/24`` for ns), so the tests never touch a demo lab left up at ``198.18.0.0/24``;
the lab picks its own ``rblab<ID>-`` name prefix, so names never collide either.  The rootfs and
guest cache is shared with the default lab (``$RUNBOOK_LAB_CACHE`` or
``/var/lib/runbook-lab/cache``): a warm machine starts the nspawn lab in seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
import yaml

from runbook_lib import lab

TEST_ROOT = Path(os.environ.get("RUNBOOK_LAB_TEST_DIR", "/var/lib/runbook-lab-test"))
CACHE = Path(os.environ.get("RUNBOOK_LAB_CACHE", "/var/lib/runbook-lab/cache"))
NETS = {"nspawn": "198.18.1.0/24", "ns": "198.18.2.0/24"}

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (netns, mounts, bridges)")


@dataclass
class Result:
    """What a command on a lab host returned."""

    rc: int
    out: str
    err: str


class LabShell:
    """Run commands on lab hosts over SSH, trusting only the lab's known_hosts (reject policy)."""

    def __init__(self, params_file: Path) -> None:
        params = yaml.safe_load(params_file.read_text())
        self.ssh = params["ssh"]
        self.address = {h["name"]: h["address"] for h in params["hosts"]}
        self.roles = {h["name"]: h["role"] for h in params["hosts"]}
        self._clients: dict[str, paramiko.SSHClient] = {}

    @property
    def names(self) -> list[str]:
        """Every host, controller first."""
        return list(self.address)

    @property
    def computes(self) -> list[str]:
        """The compute hosts, in order."""
        return [n for n, r in self.roles.items() if r == "compute"]

    def connect(self, name: str, known_hosts: str | None = None) -> paramiko.SSHClient:
        """A fresh connection to ``name`` (host key checked against ``known_hosts``)."""
        client = paramiko.SSHClient()
        client.load_host_keys(known_hosts or self.ssh["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(self.address[name], port=self.ssh["port"], username=self.ssh["user"],
                       key_filename=self.ssh["key_file"], look_for_keys=False, allow_agent=False,
                       timeout=self.ssh["connect_timeout"])
        return client

    def run(self, name: str, command: str, *, check: bool = True, timeout: float = 60) -> Result:
        """Run ``command`` on host ``name``; with ``check``, fail the test on a non-zero exit."""
        if name not in self._clients:
            self._clients[name] = self.connect(name)
        _in, out, err = self._clients[name].exec_command(command, timeout=timeout)
        result = Result(out.channel.recv_exit_status(), out.read().decode(), err.read().decode())
        if check and result.rc != 0:
            pytest.fail(f"{name}: `{command}` exited {result.rc}\n{result.out}\n{result.err}")
        return result

    def out(self, name: str, command: str, **kwargs) -> str:
        """Standard output of ``command`` on ``name``, stripped."""
        return self.run(name, command, **kwargs).out.strip()

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30, every: float = 0.3) -> None:
    """Poll ``predicate`` until it holds; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class RunningLab:
    """A lab brought up for a test class."""

    mode: str
    net: str
    lab_dir: Path
    info: lab.LabInfo
    shell: LabShell

    def bring_up(self, echo=print) -> lab.LabInfo:
        """``lab.up`` with this lab's arguments (reconnects the shell afterwards)."""
        self.shell.close()
        self.info = lab.up(computes=2, mode=self.mode, net=self.net, lab_dir=self.lab_dir,
                           cache_dir=CACHE, cloud=False, echo=echo)
        self.shell = LabShell(self.info.params_file)
        return self.info


@pytest.fixture(scope="class", params=["nspawn", "ns"])
def running_lab(request) -> Iterator[RunningLab]:
    """A 1 controller + 2 computes lab in each mode, up for the whole class, down afterwards."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (network namespaces, mounts, bridges)")
    mode = request.param
    lab_dir = TEST_ROOT / mode
    lab.down(lab_dir)            # a previous, interrupted test run may have left it up
    info = lab.up(computes=2, mode=mode, net=NETS[mode], lab_dir=lab_dir, cache_dir=CACHE, cloud=False)
    running = RunningLab(mode, NETS[mode], lab_dir, info, LabShell(info.params_file))
    try:
        yield running
    finally:
        running.shell.close()
        lab.down(lab_dir)
