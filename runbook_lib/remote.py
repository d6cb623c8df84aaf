"""Run commands on many hosts over SSH, in parallel. The only module that imports Fabric.

Every host's outcome is collected, success or failure: one unreachable host never hides
the other hosts' results (Fabric's ``GroupResult`` idea, without the exception at the
end; the caller decides what a failure means). Host keys are checked against a
known_hosts file and unknown keys are rejected: a runbook that changes compute nodes must
not trust whatever answers on port 22.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import fabric
import invoke
import paramiko

from .params import Host, Site


def sh(*argv: object) -> str:
    """A shell command line from ``argv`` with every word quoted (``shlex.quote``)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass(frozen=True)
class Result:
    """What one command did on one host.

    ``error`` is set when the command could not run at all (unreachable host, rejected
    host key, failed authentication, timeout); then ``exit_code`` is ``None``.
    """

    host: str
    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    duration: float
    error: str | None = None

    @property
    def reached(self) -> bool:
        """Whether the command ran on the host (whatever its exit code)."""
        return self.error is None

    @property
    def ok(self) -> bool:
        """Whether the command ran and exited 0."""
        return self.error is None and self.exit_code == 0


class _RejectUnknownHost(paramiko.MissingHostKeyPolicy):
    """Refuse hosts whose key is not in the known_hosts file, with an actionable message."""

    def __init__(self, known_hosts: str) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise paramiko.SSHException(
            f"host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in "
            f"{self.known_hosts}; verify it and add it (ssh-keyscan) or set ssh.known_hosts"
        )


class Remote:
    """Parallel SSH to a site's hosts.

    Parameters
    ----------
    site
        The validated site; hosts, users, ports, keys and timeouts come from it.
    max_workers
        Upper bound on parallel connections.

    Examples
    --------
    >>> with Remote(site) as remote:                      # doctest: +SKIP
    ...     results = remote.run("hostname")
    ...     results["compute1"].stdout
    """

    def __init__(self, site: Site, *, max_workers: int = 64) -> None:
        self.site = site
        self.max_workers = max_workers
        self._connections: dict[str, fabric.Connection] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every open connection."""
        with self._lock:
            conns, self._connections = list(self._connections.values()), {}
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a dead connection must not mask results
                pass

    # ------------------------------------------------------------------ connections

    def _connection(self, host: Host) -> fabric.Connection:
        with self._lock:
            conn = self._connections.get(host.name)
            if conn is not None:
                return conn
        ssh = self.site.ssh
        connect_kwargs: dict[str, object] = {"banner_timeout": ssh.connect_timeout, "auth_timeout": ssh.connect_timeout}
        if host.key_file:
            connect_kwargs.update(key_filename=str(host.key_file), look_for_keys=False)
        if ssh.key_passphrase_env:
            connect_kwargs["passphrase"] = os.environ.get(ssh.key_passphrase_env)
        # ssh_config files are not read: the params file is the single source of truth
        # for how hosts are reached, so that an archived run says exactly what was used.
        config = fabric.Config(overrides={"load_ssh_configs": False})
        conn = fabric.Connection(
            host.address,
            user=host.user,
            port=host.port,
            config=config,
            connect_timeout=int(max(1, ssh.connect_timeout)),
            connect_kwargs=connect_kwargs,
        )
        known = str(ssh.known_hosts or Path("~/.ssh/known_hosts").expanduser())
        conn.client.set_missing_host_key_policy(_RejectUnknownHost(known))
        if Path(known).exists():
            conn.client.load_host_keys(known)
        with self._lock:
            self._connections[host.name] = conn
        return conn

    def _drop(self, name: str) -> None:
        with self._lock:
            conn = self._connections.pop(name, None)
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    # ------------------------------------------------------------------ running

    def run_one(self, host: Host | str, command: str, *, timeout: float | None = None) -> Result:
        """Run ``command`` on one host; never raises for remote failures."""
        if isinstance(host, str):
            host = self.site.host(host)
        timeout = timeout or self.site.ssh.command_timeout
        start = time.monotonic()
        try:
            conn = self._connection(host)
            out = conn.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
            return Result(host.name, command, out.exited, out.stdout, out.stderr, time.monotonic() - start)
        except invoke.exceptions.CommandTimedOut as exc:
            self._drop(host.name)
            return self._failed(host, command, start, f"timed out after {exc.timeout:g} s")
        except paramiko.AuthenticationException as exc:
            self._drop(host.name)
            return self._failed(host, command, start, f"SSH authentication failed as {host.user}: {exc}")
        except paramiko.BadHostKeyException as exc:
            self._drop(host.name)
            return self._failed(
                host, command, start,
                f"host key MISMATCH for {host.address} (expected {exc.expected_key.get_name()} "
                f"{exc.expected_key.fingerprint}, got {exc.key.fingerprint}): possible impostor; refusing",
            )
        except (paramiko.SSHException, socket.error, EOFError) as exc:
            self._drop(host.name)
            reason = str(exc) or type(exc).__name__
            if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
                reason = f"cannot connect to {host.address}:{host.port} ({_strerror(exc)})"
            elif isinstance(exc, socket.timeout) or isinstance(exc, TimeoutError):
                reason = f"no answer from {host.address}:{host.port} within {self.site.ssh.connect_timeout:g} s"
            return self._failed(host, command, start, reason)

    @staticmethod
    def _failed(host: Host, command: str, start: float, reason: str) -> Result:
        return Result(host.name, command, None, "", "", time.monotonic() - start, error=f"{host.name}: {reason}")

    def run(
        self,
        command: str,
        hosts: Iterable[Host | str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Result]:
        """Run one command on many hosts in parallel; a result for every host, in inventory order."""
        targets = self._targets(hosts)
        return self.run_each({h.name: command for h in targets}, timeout=timeout)

    def run_each(self, commands: Mapping[str, str], *, timeout: float | None = None) -> dict[str, Result]:
        """Run a per-host command (``{host name: command}``) in parallel."""
        if not commands:
            return {}
        targets = [self.site.host(n) for n in commands]
        workers = min(self.max_workers, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runbook-ssh") as pool:
            futures = {h.name: pool.submit(self.run_one, h, commands[h.name], timeout=timeout) for h in targets}
            done = {name: f.result() for name, f in futures.items()}
        return {h.name: done[h.name] for h in self.site.hosts if h.name in done}

    def _targets(self, hosts: Iterable[Host | str] | None) -> Sequence[Host]:
        if hosts is None:
            return list(self.site.hosts)
        return [h if isinstance(h, Host) else self.site.host(h) for h in hosts]


def _strerror(exc: paramiko.ssh_exception.NoValidConnectionsError) -> str:
    errors = getattr(exc, "errors", {}) or {}
    for err in errors.values():
        return getattr(err, "strerror", None) or str(err)
    return str(exc)
