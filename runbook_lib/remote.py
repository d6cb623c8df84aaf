"""Run commands on many hosts over SSH, in parallel. The only module that imports Fabric.

Every host's outcome is collected, success or failure: one unreachable host never hides
the other hosts' results (Fabric's ``GroupResult`` idea, without the exception at the
end; the caller decides what a failure means). Host keys are checked against a
known_hosts file and unknown keys are rejected: a runbook that changes compute nodes must
not trust whatever answers on port 22.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

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
        self._known: dict[str, paramiko.HostKeys] = {}

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
            # the file is parsed once per Remote (parsing it once per host was O(hosts²):
            # 0.45 CPU-s at 101 hosts); each client gets this host's entries, as
            # load_host_keys would have given it
            with self._lock:
                if known not in self._known:
                    self._known[known] = paramiko.HostKeys(known)
                keys = self._known[known]
            name = host.address if host.port == 22 else f"[{host.address}]:{host.port}"
            for keytype, key in (keys.lookup(name) or {}).items():
                conn.client.get_host_keys().add(name, keytype, key)
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
        except _REMOTE_FAILURES as exc:
            return self._failure(host, command, start, exc)

    def _open(self, host: Host, command: str) -> Result | float:
        """Connect to ``host`` (key exchange, host key check, authentication) without running
        anything: the seconds it took, else the failed :class:`Result` ``run_one`` would give."""
        start = time.monotonic()
        try:
            self._connection(host).open()
            return time.monotonic() - start
        except _REMOTE_FAILURES as exc:
            return self._failure(host, command, start, exc)

    def _failure(self, host: Host, command: str, start: float, exc: BaseException) -> Result:
        """The failed :class:`Result` for ``exc`` (the connection is dropped), with a reason."""
        self._drop(host.name)
        if isinstance(exc, invoke.exceptions.CommandTimedOut):
            return self._failed(host, command, start, f"timed out after {exc.timeout:g} s")
        if isinstance(exc, paramiko.AuthenticationException):
            return self._failed(host, command, start, f"SSH authentication failed as {host.user}: {exc}")
        if isinstance(exc, paramiko.BadHostKeyException):
            return self._failed(
                host, command, start,
                f"host key MISMATCH for {host.address} (expected {exc.expected_key.get_name()} "
                f"{exc.expected_key.fingerprint}, got {exc.key.fingerprint}): possible impostor; refusing",
            )
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

    def run_each(self, commands: Mapping[str, str], *, timeout: float | None = None,
                 on_result: Callable[[Result], None] | None = None) -> dict[str, Result]:
        """Run a per-host command (``{host name: command}``) in parallel.

        ``on_result`` is called with each host's result as soon as it is in (from a worker
        thread): a progress bar's hook.
        """
        if not commands:
            return {}
        targets = [self.site.host(n) for n in commands]
        workers = min(self.max_workers, len(targets))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runbook-ssh") as pool:
            # Connect to every host first, then run: on a busy machine (or hosts sharing
            # cores) the commands of the hosts connected first would otherwise starve the
            # handshakes of the others past connect_timeout (measured: 20 of 101 hosts lost).
            opened = dict(zip((h.name for h in targets), pool.map(lambda h: self._open(h, commands[h.name]), targets)))
            failed = {name: r for name, r in opened.items() if isinstance(r, Result)}
            futures = {h.name: pool.submit(self.run_one, h, commands[h.name], timeout=timeout)
                       for h in targets if h.name not in failed}
            if on_result is not None:
                for r in failed.values():
                    on_result(r)
                for f in futures.values():
                    f.add_done_callback(lambda f: on_result(f.result()))
            # a host's duration includes its connection, as when run_one connected it
            done = {name: dataclasses.replace(f.result(), duration=f.result().duration + opened[name])
                    for name, f in futures.items()}
            done.update(failed)
        return {h.name: done[h.name] for h in self.site.hosts if h.name in done}

    def _targets(self, hosts: Iterable[Host | str] | None) -> Sequence[Host]:
        if hosts is None:
            return list(self.site.hosts)
        return [h if isinstance(h, Host) else self.site.host(h) for h in hosts]


#: what a remote command or connection can fail with (never raised out of ``run_one``)
_REMOTE_FAILURES = (invoke.exceptions.CommandTimedOut, paramiko.SSHException, socket.error, EOFError)


def _strerror(exc: paramiko.ssh_exception.NoValidConnectionsError) -> str:
    errors = getattr(exc, "errors", {}) or {}
    for err in errors.values():
        return getattr(err, "strerror", None) or str(err)
    return str(exc)
