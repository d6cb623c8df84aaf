"""Small process and file helpers shared by the lab modules."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from runbook_lib.lab.errors import LabError


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None, timeout: float | None = 600) -> subprocess.CompletedProcess[str]:
    """Run a command on this machine and capture its output.

    Parameters
    ----------
    argv
        The command; never a shell string, so no value needs quoting.
    check
        Raise :class:`LabError` (with the command's stderr) when it exits non-zero.
    input
        Text fed to the command's standard input.
    env
        Extra environment variables (added to this process's environment).
    timeout
        Seconds before the command is killed.

    Returns
    -------
    subprocess.CompletedProcess
        With ``stdout`` and ``stderr`` as text.
    """
    full_env = None if env is None else {**os.environ, **env}
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise LabError(f"command failed (exit {proc.returncode}): {' '.join(argv)}\n  "
                       + "\n  ".join(detail))
    return proc


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename.

    An interrupted write therefore leaves either the old file or the new one, never half of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def process_start_time(pid: int) -> int | None:
    """Return the start time (clock ticks since boot) of ``pid``, or ``None`` if it is gone.

    A PID and its start time together name one process for good: PIDs are reused, the pair is not.
    That is what lets ``lab down`` kill only processes the lab started.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":          # a zombie is dead for our purposes
        return None
    return int(fields[19])


def same_process(pid: int, start: int) -> bool:
    """Whether ``pid`` is still the very process that had start time ``start``."""
    return pid > 0 and process_start_time(pid) == start


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads), from ``/proc``."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except FileNotFoundError:
            continue
    return found


def pid_namespace(pid: int) -> str | None:
    """The PID namespace of ``pid`` as ``pid:[inode]``, or ``None`` if it is gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (released by the kernel even if we are killed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
