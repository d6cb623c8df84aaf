"""The audit archive: one directory per run, never overwritten, and the index over them.

Layout of a run directory ``<root>/<UTC timestamp>_<phase>_<site>/``:

``notebook.ipynb``
    The executed notebook (papermill's error banner kept when the run failed).
``notebook.html``
    The same as HTML, readable without Jupyter.
``parameters.yaml``
    The resolved parameters the notebook ran with (secrets are never parameters).
``summary.json``
    Phase, site, start, end, duration, status, exit code, hosts, verdict counts,
    files changed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

SUMMARY = "summary.json"
NOTEBOOK = "notebook.ipynb"
HTML = "notebook.html"
PARAMETERS = "parameters.yaml"


def default_root(site_archive_dir: Path | None = None) -> Path:
    """Where runs are archived: ``$RUNBOOK_ARCHIVE``, else the site's ``archive_dir``, else ./runs."""
    env = os.environ.get("RUNBOOK_ARCHIVE")
    if env:
        return Path(env)
    if site_archive_dir:
        return site_archive_dir
    return Path("runs")


def utc_now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def parse_utc(value: Any) -> dt.datetime:
    """An ISO 8601 date or time (``Z`` accepted; naive means UTC) as an aware datetime.

    Raises ``ValueError`` when ``value`` is not one.
    """
    t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def new_run_dir(root: Path, phase: str, site: str, when: dt.datetime | None = None) -> Path:
    """Create (exclusively) a fresh run directory; an existing one is never reused."""
    when = when or utc_now()
    root.mkdir(parents=True, exist_ok=True)
    stamp = when.strftime("%Y%m%dT%H%M%S.%fZ")
    base = f"{stamp}_{phase}_{site}"
    for n in range(1000):
        path = root / (base if n == 0 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a new run directory under {root}")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text atomically (temp file in the same directory + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; archive files are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def runs(root: Path) -> list[dict[str, Any]]:
    """Every archived run's summary (plus its directory), oldest first."""
    found = []
    if not root.is_dir():
        return found
    for d in sorted(root.iterdir()):
        f = d / SUMMARY
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"status": "unreadable"}
        data["dir"] = str(d)
        found.append(data)
    found.sort(key=lambda r: (str(r.get("start", "")), r["dir"]))
    return found


def table(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the ``runbook runs`` listing."""
    rows = []
    for r in records:
        v = r.get("verdicts") or {}
        rows.append({
            "start": r.get("start", ""),
            "phase": r.get("phase", ""),
            "site": r.get("site", ""),
            "status": r.get("status", ""),
            "duration_s": round(float(r.get("duration_s") or 0), 1),
            "hosts": len(r.get("hosts") or []),
            "pass": v.get("pass", 0),
            "warn": v.get("warn", 0),
            "fail": v.get("fail", 0),
            "dir": r["dir"],
        })
    return rows


def select(records: Iterable[dict[str, Any]], *, phase: str | None = None, site: str | None = None,
           host: str | None = None, status: str | None = None, since: str | None = None,
           until: str | None = None) -> list[dict[str, Any]]:
    """Filter archived runs; ``since``/``until`` are ISO dates or times (UTC when no zone)."""
    lo, hi = _time(since), _time(until)
    out = []
    for r in records:
        if phase and r.get("phase") != phase and str(r.get("phase", "")).split("_", 1)[-1] != phase:
            continue
        if site and r.get("site") != site:
            continue
        if host and host not in (r.get("hosts") or []):
            continue
        if status and r.get("status") != status:
            continue
        start = _time(r.get("start"))
        if lo and (start is None or start < lo):
            continue
        if hi and (start is None or start >= hi):
            continue
        out.append(r)
    return out


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_utc(value)
    except ValueError:
        from .errors import ParamsError

        raise ParamsError(f"expected an ISO 8601 date or time, got {value!r}", key="--since/--until") from None


def html_index(records: Iterable[dict[str, Any]], base: Path) -> str:
    """An HTML page listing runs, newest first, linking each archived notebook (HTML export)."""
    import html
    import os

    rows = []
    for r in sorted(records, key=lambda r: str(r.get("start", "")), reverse=True):
        d = Path(r["dir"])
        link = os.path.relpath(d / HTML, base)
        v = r.get("verdicts") or {}
        drift = (r.get("drift") or {})
        cells = [
            f'<a href="{html.escape(link)}">{html.escape(str(r.get("start", "")))}</a>',
            html.escape(str(r.get("phase", ""))), html.escape(str(r.get("site", ""))),
            f'<span class="{html.escape(str(r.get("status", "")))}">{html.escape(str(r.get("status", "")))}</span>',
            str(v.get("pass", 0)), str(v.get("warn", 0)), str(v.get("fail", 0)),
            "regressed" if drift.get("regressed") else ("" if not drift else "no regression"),
            html.escape(", ".join(r.get("hosts") or [])),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("start", "phase", "site", "status", "pass", "warn", "fail", "drift", "hosts"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>runbook runs</title><style>"
        "body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
        ".failed{color:#b00}.problems{color:#b60}.ok{color:#070}</style></head><body>"
        f"<h1>runbook runs</h1><table><tr>{head}</tr>{''.join(rows)}</table></body></html>\n"
    )
