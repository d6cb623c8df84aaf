"""Throw-away SSH "hosts" for tests: real OpenSSH sshd processes on loopback addresses.

Each host is a real ``sshd`` (Debian's openssh-server) with its own host key, listening
on its own 127.0.0.x address, started inside its own UTS and mount namespaces so that it
has its own host name, ``/etc/hosts``, ``/etc/passwd`` and ``/etc/group`` (and so its
own ``nova`` user, or none). Only the processes started here are stopped, by PID.
Needs root (namespaces, and sshd logs users in as root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SSHD = "/usr/sbin/sshd"


@dataclass
class HostSpec:
    """What one test host looks like."""

    name: str
    address: str
    role: str = "compute"
    nova_uid: int | None = 64060
    nova_gid: int | None = 64060
    #: names this host's /etc/hosts leaves out (to make resolution fail on purpose)
    unresolvable: tuple[str, ...] = ()
    #: start no sshd at all (an unreachable host)
    down: bool = False


@dataclass
class SshdHosts:
    """A set of running test hosts and the params file that describes them."""

    root: Path
    port: int
    specs: list[HostSpec]
    params_file: Path
    known_hosts: Path
    key_file: Path
    pids: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the sshd processes this set started (by PID) and wait for them."""
        for name, pid in list(self.pids.items()):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for name, pid in list(self.pids.items()):
            for _ in range(50):
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.05)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            del self.pids[name]

    def params(self) -> dict:
        """The params file's content."""
        return yaml.safe_load(self.params_file.read_text())


def _write_etc(d: Path, spec: HostSpec, specs: list[HostSpec]) -> None:
    etc = d / "etc"
    etc.mkdir()
    lines = ["127.0.0.1 localhost"]
    lines += [f"{s.address} {s.name}" for s in specs if s.name not in spec.unresolvable]
    (etc / "hosts").write_text("\n".join(lines) + "\n")
    home = d / "home"
    home.mkdir()
    # root's own home: the machine's /root/.bashrc may run slow things (pyenv init)
    passwd = [line for line in Path("/etc/passwd").read_text().splitlines() if not line.startswith(("nova:", "root:"))]
    passwd.insert(0, f"root:x:0:0:root:{home}:/bin/bash")
    group = [line for line in Path("/etc/group").read_text().splitlines() if not line.startswith("nova:")]
    if spec.nova_uid is not None:
        passwd.append(f"nova:x:{spec.nova_uid}:{spec.nova_gid}:OpenStack Nova:/var/lib/nova:/bin/sh")
        group.append(f"nova:x:{spec.nova_gid}:")
    (etc / "passwd").write_text("\n".join(passwd) + "\n")
    (etc / "group").write_text("\n".join(group) + "\n")


def free_port(addresses: list[str]) -> int:
    """A TCP port free on every address (so that concurrent test runs never meet)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 45000)
        socks = []
        try:
            for a in addresses:
                s = socket.socket()
                socks.append(s)
                s.bind((a, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port for the sshd test hosts")


def start(root: Path, specs: list[HostSpec], port: int | None = None, site: str = "testsite") -> SshdHosts:
    """Start one sshd per spec under ``root`` and write ``root/params.yaml``.

    The port is chosen free on every address unless given.
    """
    if port is None:
        port = free_port([s.address for s in specs])
    if not Path(SSHD).exists():
        raise RuntimeError("openssh-server is not installed (apt-get install openssh-server)")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    key = root / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "runbook-test", "-f", str(key)], check=True)
    known_hosts = root / "known_hosts"
    kh_lines = []
    hosts = SshdHosts(root, port, specs, root / "params.yaml", known_hosts, key)
    try:
        for spec in specs:
            d = root / spec.name
            d.mkdir()
            hk = d / "ssh_host_ed25519_key"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hk)], check=True)
            kh_lines.append(f"[{spec.address}]:{port} {hk.with_suffix('.pub').read_text().split(' ')[0]} "
                            f"{hk.with_suffix('.pub').read_text().split(' ')[1]}")
            if spec.down:
                continue
            _write_etc(d, spec, specs)
            shutil.copy(f"{key}.pub", d / "authorized_keys")
            (d / "sshd_config").write_text(
                f"ListenAddress {spec.address}:{port}\n"
                f"HostKey {hk}\n"
                f"PidFile {d / 'sshd.pid'}\n"
                f"AuthorizedKeysFile {d / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                "LogLevel VERBOSE\n"
            )
            script = (
                f"hostname {spec.name} && "
                f"mount --bind {d}/etc/hosts /etc/hosts && "
                f"mount --bind {d}/etc/passwd /etc/passwd && "
                f"mount --bind {d}/etc/group /etc/group && "
                f"exec {SSHD} -D -e -f {d}/sshd_config"
            )
            proc = subprocess.Popen(
                ["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script],
                stdout=open(d / "sshd.log", "w"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
            hosts.pids[spec.name] = proc.pid
        known_hosts.write_text("\n".join(kh_lines) + "\n")
        for spec in specs:
            if not spec.down:
                _wait_port(spec.address, port, spec.name, root / spec.name / "sshd.log")
                # the port answering is not enough: it must be our sshd (still alive)
                if os.waitpid(hosts.pids[spec.name], os.WNOHANG)[0]:
                    del hosts.pids[spec.name]
                    raise RuntimeError(f"sshd for {spec.name} exited: {(root / spec.name / 'sshd.log').read_text()[-500:]}")
        params = {
            "site": site,
            "management_cidr": "127.0.0.0/8",
            "ssh": {"user": "root", "port": port, "key_file": str(key), "known_hosts": str(known_hosts),
                    "connect_timeout": 5, "command_timeout": 30},
            "hosts": [{"name": s.name, "role": s.role, "address": s.address} for s in specs],
        }
        hosts.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    except BaseException:
        hosts.stop()
        raise
    return hosts


def _wait_port(address: str, port: int, name: str, log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd for {name} did not listen on {address}:{port}: {log.read_text()[-500:]}")
