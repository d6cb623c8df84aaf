"""The ``diagnose`` sub-command: log files in, known failures with cause and fix out.

Exit status: 0 no known failure found, 1 at least one found, 2 usage, read or catalogue
error. ``runbook_lib.cli`` adds it to ``runbook`` with :func:`register`;
``python -m runbook_lib.diagnose`` runs it on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections import Counter
from typing import Any, Sequence, TextIO

from .catalogue import CatalogueError, load_catalogue
from .match import MERGE_WINDOW, Match, diagnose_text

DESCRIPTION = (
    "Read nova, libvirtd-journal (short-iso or json export) and QEMU logs and name every "
    "known live-migration failure they contain, with its cause and the runbook phase or "
    "parameter that fixes it. Lines matching no known signature are not reported."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the diagnose options and arguments to ``parser``."""
    parser.add_argument("files", nargs="+", metavar="FILE|-", help="log files to read; '-' reads standard input")
    parser.add_argument("--json", action="store_true", help="print one JSON object per match, one per line")
    parser.add_argument("--host", default=None, help="host to report for lines that do not name one (plain log files)")
    parser.add_argument("--catalogue", default=None, metavar="YAML", help="use this signature catalogue instead of the bundled one")
    parser.add_argument(
        "--merge-window",
        type=float,
        default=MERGE_WINDOW,
        metavar="SECONDS",
        help=f"repeats of a signature for the same instance within this many seconds are one occurrence (default {MERGE_WINDOW:g}; 0 reports each log record)",
    )


def register(subparsers: Any) -> None:
    """Add the ``diagnose`` sub-command to an argparse ``subparsers`` object.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``ArgumentParser.add_subparsers()`` returned.
    """
    parser = subparsers.add_parser("diagnose", help="explain live-migration failures found in log files", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=handler)


def _read(name: str) -> str:
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(name, "rb") as fh:
            data = fh.read()
    # Logs are mostly UTF-8 but may carry stray bytes; never fail on them.
    return data.decode("utf-8", errors="replace")


def _print_text(match: Match, out: TextIO) -> None:
    where = f"{match.source}:{match.lineno}"
    when = f" {match.timestamp}" if match.timestamp else ""
    host = f" host={match.host}" if match.host else ""
    inst = f" instance={match.instance}" if match.instance else ""
    wrap = textwrap.TextWrapper(width=100, initial_indent="", subsequent_indent=" " * 9)
    print(f"{where}{when}{host}{inst}", file=out)
    print(f"  [{match.category}] {match.signature}", file=out)
    print(wrap.fill(f"  line:  {match.line}"), file=out)
    print(wrap.fill(f"  cause: {match.cause}"), file=out)
    print(wrap.fill(f"  fix:   {match.remediation} (phase: {match.phase})"), file=out)
    print(file=out)


def handler(args: argparse.Namespace) -> int:
    """Run the diagnose command for parsed ``args``; return the exit status."""
    try:
        catalogue = load_catalogue(args.catalogue)
    except CatalogueError as exc:
        print(f"runbook diagnose: {exc}", file=sys.stderr)
        return 2
    failed = False
    found: list[Match] = []
    for name in args.files:
        try:
            text = _read(name)
        except OSError as exc:
            print(f"runbook diagnose: cannot read {name}: {exc.strerror or exc}", file=sys.stderr)
            failed = True
            continue
        matches = diagnose_text(text, name, host=args.host, catalogue=catalogue, merge_window=args.merge_window)
        for match in matches:
            if args.json:
                print(json.dumps(match.to_dict(), sort_keys=True))
            else:
                _print_text(match, sys.stdout)
        found.extend(matches)
    if not args.json:
        if found:
            counts = Counter(m.category for m in found)
            summary = ", ".join(f"{cat} {n}" for cat, n in counts.most_common())
            print(f"{len(found)} known failure(s): {summary}")
        elif not failed:
            print("no known live-migration failure signature found")
    if failed:
        return 2
    return 1 if found else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m runbook_lib.diagnose``."""
    parser = argparse.ArgumentParser(prog="python -m runbook_lib.diagnose", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return handler(args)
    except BrokenPipeError:
        # Output piped into `head` and closed early: not an error of the diagnosis.
        return 1
