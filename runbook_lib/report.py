"""What a phase notebook shows, and the machine-readable summary the runner archives.

The summary travels *inside* the executed notebook as a display output with its own MIME
type, so that a notebook run by plain ``papermill`` carries it as faithfully as one run by
``runbook run``; the runner reads it back from the output notebook.
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from . import checks as checks_mod
from .checks import Check
from .params import Site

SUMMARY_MIME = "application/vnd.runbook.summary+json"


def summary(phase: str, site: Site, checks: Iterable[Check], files_changed: Iterable[str] = (),
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The phase's outcome: verdict counts, hosts and problems, as plain JSON data."""
    checks = list(checks)
    counts = checks_mod.counts(checks)
    return {
        "phase": phase,
        "site": site.name,
        "hosts": list(dict.fromkeys(c.host for c in checks)) or site.names,
        "verdicts": counts,
        "problems": sum(counts[v] for v in checks_mod.PROBLEMS),
        "files_changed": list(files_changed),
        # every verdict, so that later runs can be compared with this one
        "checks": [{"host": c.host, "check": c.check, "verdict": c.verdict, "detail": c.detail} for c in checks],
        **(extra or {}),
    }


class Table:
    """A DataFrame shown whole: pandas cuts long cells to 50 characters, and a cut
    remediation is no remediation."""

    def __init__(self, frame: pd.DataFrame, index: bool = False) -> None:
        self.frame = frame
        self.index = index

    def _options(self):
        return pd.option_context("display.max_colwidth", None, "display.width", 10000,
                                 "display.max_rows", 1000, "display.max_columns", 100)

    def _repr_html_(self) -> str:
        with self._options():
            return self.frame.to_html(index=self.index)

    def __repr__(self) -> str:
        with self._options():
            return self.frame.to_string(index=self.index) if len(self.frame) else "(none)"

    def __len__(self) -> int:
        return len(self.frame)


def problems(checks: Iterable[Check]) -> Table:
    """Only the checks that did not pass, with their remediation, shown in full."""
    frame = checks_mod.to_frame(checks)
    return Table(frame[frame["verdict"].isin([checks_mod.FAIL, checks_mod.WARN])].reset_index(drop=True))


def publish(phase: str, site: Site, checks: Iterable[Check], files_changed: Iterable[str] = (),
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Display the phase summary and attach it to the notebook for the archive.

    ``extra`` adds phase-specific data (a configure run's changes and backups, for
    rollback). Returns the summary, so a notebook cell can also use it.
    """
    from IPython.display import display

    data = summary(phase, site, checks, files_changed, extra)
    counts = ", ".join(f"{n} {v}" for v, n in data["verdicts"].items() if n)
    text = f"{phase} on {site.name}: {counts or 'no checks'}; {data['problems']} problem(s)"
    display({SUMMARY_MIME: data, "text/plain": text}, raw=True)
    return data


def read_summary(notebook: Any) -> dict[str, Any] | None:
    """The last summary a (executed) notebook published, or ``None``."""
    found = None
    for cell in notebook.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if SUMMARY_MIME in data:
                found = data[SUMMARY_MIME]
    return found


class Warnings(list):
    """Warnings a notebook must not let anyone miss: a red banner in HTML, WARNING lines in text."""

    def _repr_html_(self) -> str:
        import html

        if not self:
            return "<p>No warnings.</p>"
        items = "".join(f"<li>{html.escape(w)}</li>" for w in self)
        return ('<div style="border:3px solid #c00;background:#fee;padding:8px;font-weight:bold">'
                f"&#9888; WARNING<ul>{items}</ul></div>")

    def __repr__(self) -> str:
        return "\n".join(f"WARNING: {w}" for w in self) or "No warnings."


def warnings(items: Iterable[str]) -> Warnings:
    """Show ``items`` as a prominent warning banner."""
    return Warnings(items)
