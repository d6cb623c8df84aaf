"""One changing run per site at a time: a lock file with its holder, start time and PID.

Two operators (or a timer and an operator) applying changes to the same compute nodes at
once would interleave edits and restarts. A run that may change hosts takes
``<archive>/.locks/<site>.lock`` (created exclusively); a second one is refused with a
message naming the holder. A lock whose process is gone (same machine, PID not alive, or
alive but a different process) is stale: it is taken over, and the takeover is said.
The lock is per archive: operators on several machines should share the archive directory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from .errors import RunbookError


class LockedError(RunbookError):
    """Another run holds the site's lock."""


@dataclass
class SiteLock:
    """A held lock; release it with :meth:`release` (or use as a context manager)."""

    path: Path
    took_over: str | None = None

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if data.get("pid") == os.getpid() and data.get("machine") == socket.gethostname():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> "SiteLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _stale(data: dict) -> bool:
    if data.get("machine") != socket.gethostname():
        return False  # another machine's run: we cannot tell; only an operator can clear it
    pid = data.get("pid")
    if not isinstance(pid, int):
        return True
    started = _start_time(pid)
    return started is None or started != data.get("pid_start")


def acquire(root: Path, site: str, phase: str) -> SiteLock:
    """Take the site's lock or raise :class:`LockedError` naming who holds it."""
    directory = root / ".locks"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{site}.lock"
    me = {
        "site": site, "phase": phase, "pid": os.getpid(), "pid_start": _start_time(os.getpid()),
        "machine": socket.gethostname(), "user": os.environ.get("USER") or str(os.getuid()),
        "start": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    took_over = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder and not _stale(holder):
                raise LockedError(
                    f"site {site} is being changed by another run: {holder.get('phase')} started "
                    f"{holder.get('start')} by {holder.get('user')} on {holder.get('machine')} (pid "
                    f"{holder.get('pid')}); wait for it, or remove {path} if that run is gone"
                ) from None
            took_over = (f"took over a stale lock of {holder.get('phase')} started {holder.get('start')} "
                         f"(pid {holder.get('pid')} is gone)") if holder else "took over an unreadable lock"
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return SiteLock(path, took_over)
    raise LockedError(f"could not take {path}: another run took it at the same moment")
