"""Processes the cloud starts on this machine: start detached, wait until ready, stop exactly.

Each service starts as the leader of a new session (``setsid``), and is recorded by PID and
start time (:func:`runbook_lib.lab.state.proc_ref`), a pair the kernel never reuses.  Stopping a
service signals every process of *that* session (gunicorn's workers, Erlang's helpers) and
nothing else: processes are found in ``/proc`` by session id, and only those started no earlier
than the recorded leader count, so a recycled PID can never make us signal a stranger.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from runbook_lib.cloud.errors import CloudError, CloudStartError
from runbook_lib.lab.state import alive, proc_ref
from runbook_lib.lab.util import process_start_time

Ref = dict[str, int]


def spawn(argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen, Ref]:
    """Start ``argv`` in a new session, output appended to ``log``.

    Returns
    -------
    tuple
        The :class:`subprocess.Popen` (to notice an early exit) and the reference to record.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, env=full_env, cwd=cwd or "/",
                                start_new_session=True)
    ref = proc_ref(proc.pid)
    if ref is None:
        raise CloudStartError(f"{argv[0]} exited at once; see {log}")
    return proc, ref


def _stat(pid: int) -> tuple[int, int] | None:
    """(session id, start time) of ``pid``, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[3]), int(fields[19])


def session_members(ref: Ref) -> list[int]:
    """Live processes of the session the referenced process leads (itself included)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info and info[0] == ref["pid"] and info[1] >= ref["start"]:
            if process_start_time(int(entry)) is not None:     # zombies do not count
                members.append(int(entry))
    return members


def stop(refs: Mapping[str, Ref | None], *, grace: float = 10.0) -> list[str]:
    """Stop the recorded services: SIGTERM to each session, then SIGKILL what is left.

    Returns
    -------
    list of str
        Names of the services that had to be killed (empty when all exited on SIGTERM).
    """
    targets = {name: ref for name, ref in refs.items() if ref}
    for ref in targets.values():
        for pid in session_members(ref):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(session_members(r) for r in targets.values()):
        _reap()
        time.sleep(0.1)
    killed = []
    for name, ref in targets.items():
        members = session_members(ref)
        if members:
            killed.append(name)
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(session_members(r) for r in targets.values()):
        _reap()
        time.sleep(0.05)
    stuck = [name for name, ref in targets.items() if session_members(ref)]
    if stuck:
        raise CloudError(f"cloud services {', '.join(stuck)} survived SIGKILL")
    _reap()
    return killed


def _reap() -> None:
    """Collect exited children so they do not linger as zombies of this process."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def log_tail(log: Path, lines: int = 6) -> str:
    """The last lines of ``log``, indented for an error message."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n    ".join(text[-lines:])


def wait_until(ready: Callable[[], bool], what: str, *, timeout: float, log: Path,
               proc: subprocess.Popen | None = None, ref: Ref | None = None,
               interval: float = 0.2) -> float:
    """Poll ``ready()`` until it is true; fail early if the service's process has exited.

    Returns
    -------
    float
        Seconds waited.

    Raises
    ------
    CloudStartError
        On timeout or when the process died; the message names ``log`` and shows its tail.
    """
    started = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise CloudStartError(f"{what} exited during start-up (exit {proc.returncode}); "
                                  f"log {log}:\n    {log_tail(log)}")
        if ref is not None and not alive(ref):
            raise CloudStartError(f"{what} is no longer running; log {log}:\n    {log_tail(log)}")
        with contextlib.suppress(Exception):
            if ready():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise CloudStartError(f"{what} was not ready after {timeout:.0f} s; log {log}:\n    "
                                  f"{log_tail(log)}")
        time.sleep(interval)


def tcp_open(address: str, port: int) -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on ``address:port``."""
    def probe() -> bool:
        with socket.create_connection((address, port), timeout=1):
            return True
    return probe


def http_answers(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers HTTP (any status below 500)."""
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                return response.status < 500
        except urllib.error.HTTPError as exc:
            return exc.code < 500
    return probe


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``address`` now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def listening(addresses: Sequence[str]) -> list[str]:
    """TCP listeners on any of ``addresses`` (``ss -ltn``), as ``address:port`` strings."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4:
            local = parts[3]
            host = local.rsplit(":", 1)[0].strip("[]")
            if host in addresses:
                found.append(local)
    return found
