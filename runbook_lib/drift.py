"""Drift: what changed between two archived runs of a phase, per host and check.

A scheduled preflight is only useful if it answers "has anything drifted since the last
good run?": a package upgrade that switched libvirt to socket activation, a re-imaged
compute with a new ``nova`` uid, a firewall rule gone. Runs carry every verdict and a
snapshot of the key facts (``summary.json``), so two runs compare without any host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from . import archive

#: how bad a verdict is, for telling a regression from a fix
_RANK = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


def compare(baseline: Mapping[str, Any], latest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per host and check: regressed, fixed, new failure, gone; plus changed facts.

    Each row: ``host``, ``item`` (check or fact), ``kind``, ``before``, ``after``.
    """
    rows: list[dict[str, Any]] = []
    old = {(c["host"], c["check"]): c for c in baseline.get("checks") or []}
    new = {(c["host"], c["check"]): c for c in latest.get("checks") or []}
    for key in list(dict.fromkeys([*old, *new])):
        b, a = old.get(key), new.get(key)
        host, check = key
        if b is None:
            if a["verdict"] in ("fail", "warn"):
                rows.append(_row(host, check, "regressed", "(not checked)", a))
            continue
        if a is None:
            rows.append({"host": host, "item": check, "kind": "not checked now", "before": b["verdict"], "after": ""})
            continue
        if b["verdict"] == "skip" and a["verdict"] != "skip":
            # not checked before (host unreached, not applicable): only a failure now is news
            rows.append(_row(host, check, "regressed" if a["verdict"] == "fail" else "now checked", "skip", a))
            continue
        rb, ra = _RANK.get(b["verdict"], 0), _RANK.get(a["verdict"], 0)
        if ra > rb:
            rows.append(_row(host, check, "regressed", b["verdict"], a))
        elif ra < rb:
            rows.append(_row(host, check, "fixed", b["verdict"], a))
    fb, fa = baseline.get("facts") or {}, latest.get("facts") or {}
    for host in dict.fromkeys([*fb, *fa]):
        hb, ha = fb.get(host) or {}, fa.get(host) or {}
        for item in dict.fromkeys([*hb, *ha]):
            if hb.get(item) != ha.get(item):
                rows.append({"host": host, "item": item, "kind": "fact changed",
                             "before": _show(hb.get(item)), "after": _show(ha.get(item))})
    return rows


def _row(host: str, check: str, kind: str, before: str, a: Mapping[str, Any]) -> dict[str, Any]:
    return {"host": host, "item": check, "kind": kind, "before": before, "after": f"{a['verdict']}: {a.get('detail', '')}"}


def _show(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    return str(value)


def regressed(rows: Iterable[Mapping[str, Any]]) -> bool:
    """Whether anything got worse."""
    return any(r["kind"] == "regressed" for r in rows)


def table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The drift rows as a table (regressions first)."""
    order = {"regressed": 0, "fact changed": 1, "fixed": 2, "now checked": 3, "not checked now": 4}
    rows = sorted(rows, key=lambda r: (order.get(r["kind"], 9), r["host"], r["item"]))
    return pd.DataFrame(rows, columns=["host", "item", "kind", "before", "after"])


def previous_run(root: Path, phase: str, site: str, before_dir: Path | None = None) -> dict[str, Any] | None:
    """The latest completed run of ``phase`` on ``site`` (before ``before_dir`` when given)."""
    candidates = [r for r in archive.runs(root)
                  if r.get("phase") == phase and r.get("site") == site and r.get("status") in ("ok", "problems")]
    if before_dir is not None:
        candidates = [r for r in candidates if Path(r["dir"]).name < before_dir.name]
    return candidates[-1] if candidates else None


def markdown(rows: list[dict[str, Any]], baseline: Mapping[str, Any]) -> str:
    """A markdown section for the top of an archived notebook."""
    head = f"## Drift since the previous run\n\nBaseline: `{Path(baseline['dir']).name}` ({baseline.get('status')}).\n\n"
    if not rows:
        return head + "Nothing changed: the same verdicts and facts.\n"
    lines = ["| host | item | kind | before | after |", "|---|---|---|---|---|"]
    for r in table(rows).to_dict("records"):
        cells = [str(r[k]).replace("|", "\\|").replace("\n", " ")[:200] for k in ("host", "item", "kind", "before", "after")]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = "**Regressions found.**" if regressed(rows) else "No regressions."
    return head + verdict + "\n\n" + "\n".join(lines) + "\n"
