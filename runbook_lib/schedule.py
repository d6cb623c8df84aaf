"""Scheduled runs on the operator's machine: a systemd timer, or a cron.d entry without systemd.

Every file written here starts with :data:`MARK`, so ``list`` and ``remove`` touch only
the runbook's own schedules, and removing one leaves nothing behind. Scheduled runs never
apply changes, unless the site's params file says ``allow_scheduled_apply: true``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import params, runner
from .errors import ParamsError, RunbookError

MARK = "# managed by runbook schedule"
UNIT_DIR = Path("/etc/systemd/system")
CRON_DIR = Path("/etc/cron.d")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Schedule:
    """An installed schedule."""

    name: str
    backend: str
    every: str
    command: str
    files: tuple[str, ...]


def parse_interval(text: str) -> int:
    """``30s``, ``15min``, ``2h``, ``1d`` → seconds."""
    m = re.fullmatch(r"\s*(\d+)\s*(s|sec|m|min|h|d)\s*", str(text))
    if not m or int(m.group(1)) == 0:
        raise ParamsError(f"expected an interval like 15min, 2h or 1d, got {text!r}", key="--every")
    return int(m.group(1)) * _UNITS[m.group(2)]


def has_systemd() -> bool:
    """Whether this machine runs systemd as its init (timers possible)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _name(site: str, phase: str, name: str | None) -> str:
    n = name or f"runbook-{site}-{phase}"
    if not re.fullmatch(r"runbook-[A-Za-z0-9_.-]{1,80}", n):
        raise ParamsError("expected runbook-<letters, digits, . _ ->", key="--name")
    return n


def command(phase: str, params_file: Path, archive: Path, overrides: Mapping[str, Any]) -> str:
    """The command line a schedule runs (the installed ``runbook`` of this environment)."""
    exe = Path(sys.executable).with_name("runbook")
    argv = [str(exe), "run", phase, "-p", str(params_file), "--archive", str(archive)]
    for k, v in overrides.items():
        argv += ["-P", f"{k}={v}"]
    return " ".join(shlex.quote(a) for a in argv)


def install(
    phase: str,
    every: str,
    params_file: str | Path,
    archive: str | Path,
    overrides: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    backend: str = "auto",
    unit_dir: Path = UNIT_DIR,
    cron_dir: Path = CRON_DIR,
    activate: bool = True,
) -> Schedule:
    """Install a schedule that runs ``phase`` every ``every``; validated like ``runbook run``."""
    overrides = dict(overrides or {})
    params_file, archive = Path(params_file).resolve(), Path(archive).resolve()
    site = params.load(params_file)
    notebook = runner.find_notebook(phase)
    declared = runner.notebook_parameters(notebook)
    runner.validate_overrides(site, declared, overrides, notebook.stem)
    if runner.changes_hosts(declared, overrides) and not site.allow_scheduled_apply:
        raise ParamsError(
            "scheduled runs never apply changes: remove apply=true, or set allow_scheduled_apply: true in "
            f"{params_file} if unattended changes are really wanted", key="apply")
    seconds = parse_interval(every)
    sname = _name(site.name, notebook.stem, name)
    cmd = command(notebook.stem, params_file, archive, overrides)
    archive.mkdir(parents=True, exist_ok=True)
    if backend == "auto":
        backend = "systemd" if has_systemd() else "cron"
    if backend == "systemd":
        service, timer = unit_dir / f"{sname}.service", unit_dir / f"{sname}.timer"
        for f in (service, timer):
            if f.exists() and MARK not in f.read_text():
                raise RunbookError(f"{f} exists and is not the runbook's; choose another --name")
        service.write_text(
            f"{MARK}\n[Unit]\nDescription=runbook {notebook.stem} on {site.name}\n\n[Service]\nType=oneshot\n"
            f"WorkingDirectory={archive}\n"
            # exit 1 means problems found: the unit fails, so monitoring sees it
            f"ExecStart={cmd}\n"
        )
        timer.write_text(
            f"{MARK}\n[Unit]\nDescription=runbook {notebook.stem} on {site.name} every {every}\n\n[Timer]\n"
            f"OnBootSec={seconds}s\nOnUnitActiveSec={seconds}s\nUnit={sname}.service\nPersistent=true\n\n"
            "[Install]\nWantedBy=timers.target\n"
        )
        if activate:
            subprocess.run(["systemctl", "daemon-reload"], check=True)
            subprocess.run(["systemctl", "enable", "--now", f"{sname}.timer"], check=True)
        return Schedule(sname, "systemd", every, cmd, (str(service), str(timer)))
    if backend != "cron":
        raise ParamsError(f"expected systemd, cron or auto, got {backend!r}", key="--backend")
    if seconds % 60:
        raise ParamsError("cron runs at most once a minute: give whole minutes", key="--every")
    minutes = seconds // 60
    if minutes < 60:
        spec = f"*/{minutes} * * * *" if minutes > 1 else "* * * * *"
    elif minutes % 1440 == 0 and minutes // 1440 == 1:
        spec = "0 0 * * *"
    elif minutes % 60 == 0 and minutes // 60 < 24:
        spec = f"0 */{minutes // 60} * * *"
    else:
        raise ParamsError("cron can do every N minutes (< 60), N hours (< 24) or 1d", key="--every")
    entry = cron_dir / sname
    if entry.exists() and MARK not in entry.read_text():
        raise RunbookError(f"{entry} exists and is not the runbook's; choose another --name")
    log = archive / f"{sname}.log"
    entry.write_text(
        f"{MARK}\n# runbook {notebook.stem} on {site.name} every {every}\nSHELL=/bin/sh\n"
        f"{spec} root cd {shlex.quote(str(archive))} && {cmd} >> {shlex.quote(str(log))} 2>&1\n"
    )
    entry.chmod(0o644)
    return Schedule(sname, "cron", every, cmd, (str(entry),))


def installed(unit_dir: Path = UNIT_DIR, cron_dir: Path = CRON_DIR) -> list[Schedule]:
    """The runbook's schedules on this machine."""
    found = []
    for timer in sorted(unit_dir.glob("runbook-*.timer")) if unit_dir.is_dir() else []:
        text = timer.read_text()
        if MARK not in text:
            continue
        service = timer.with_suffix(".service")
        cmd = next((l[10:] for l in service.read_text().splitlines() if l.startswith("ExecStart=")), "") if service.exists() else ""
        every = re.search(r"every (\S+)", text)
        found.append(Schedule(timer.stem, "systemd", every.group(1) if every else "?", cmd, (str(service), str(timer))))
    for entry in sorted(cron_dir.glob("runbook-*")) if cron_dir.is_dir() else []:
        text = entry.read_text()
        if MARK not in text:
            continue
        every = re.search(r"every (\S+)", text)
        line = next((l for l in text.splitlines() if l and not l.startswith(("#", "SHELL"))), "")
        found.append(Schedule(entry.name, "cron", every.group(1) if every else "?", line, (str(entry),)))
    return found


def remove(name: str, unit_dir: Path = UNIT_DIR, cron_dir: Path = CRON_DIR, activate: bool = True) -> list[str]:
    """Remove a schedule and every file it had; returns what was removed."""
    removed: list[str] = []
    for s in installed(unit_dir, cron_dir):
        if s.name != name:
            continue
        if s.backend == "systemd" and activate and has_systemd():
            subprocess.run(["systemctl", "disable", "--now", f"{name}.timer"], check=False)
        for f in s.files:
            Path(f).unlink(missing_ok=True)
            removed.append(f)
        if s.backend == "systemd" and activate and has_systemd():
            subprocess.run(["systemctl", "daemon-reload"], check=False)
    if not removed:
        raise RunbookError(f"no runbook schedule named {name!r} (see: runbook schedule list)")
    return removed
