"""The ``runbook`` command: run phases, list the archive, drive the lab.

A convenience over papermill, not a lock-in: ``papermill notebooks/X.ipynb out.ipynb -f
params/site.yaml`` runs the same notebook.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import textwrap
from pathlib import Path
from typing import Sequence

from . import archive, runner
from .errors import RunbookError


def _cmd_run(args: argparse.Namespace) -> int:
    overrides = dict(runner.parse_override(o) for o in args.param)
    outcome = runner.run(
        args.phase,
        args.params,
        overrides,
        archive_root=Path(args.archive) if args.archive else None,
        log_output=args.verbose,
    )
    s = outcome.summary
    verdicts = ", ".join(f"{n} {v}" for v, n in (s.get("verdicts") or {}).items() if n)
    print(f"{s['phase']} on {s['site']}: {outcome.status} ({verdicts or 'no verdicts'}) in {s['duration_s']:.1f} s")
    if s.get("error"):
        print(f"error: {s['error']}", file=sys.stderr)
    print(f"archived: {outcome.run_dir}")
    print(f"  notebook: {outcome.run_dir / archive.NOTEBOOK}")
    print(f"  html:     {outcome.run_dir / archive.HTML}")
    return outcome.exit_code


def _cmd_runs(args: argparse.Namespace) -> int:
    root = Path(args.archive) if args.archive else archive.default_root()
    rows = archive.table(archive.runs(root))
    if args.phase:
        rows = [r for r in rows if r["phase"] == args.phase or r["phase"].split("_", 1)[-1] == args.phase]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs archived under {root}")
        return 0
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_colwidth", 80, "display.max_rows", 500):
        print(pd.DataFrame(rows).to_string(index=False))
    return 0


def _cmd_render_config(args: argparse.Namespace) -> int:
    import datetime as dt

    from . import configure, params

    site = params.load(args.params)
    host = site.host(args.host)
    overrides = dict(runner.parse_override(o) for o in args.param)
    opts = configure.options(site, **overrides)
    root = Path(args.root)
    if not root.is_dir():
        raise RunbookError(f"--root {root}: not a directory")
    wanted = configure.files_to_read(site, opts)[host.name]
    gathered = {h.name: configure.offline_facts(root, h) for h in site.hosts}
    p = configure.plan(site, gathered, {host.name: configure.offline_files(root, wanted)}, opts, [host])
    for w in p.warnings:
        print(f"WARNING: {w}", file=sys.stderr)
    print(str(p.diff()), end="")
    for n in p.notes:
        print(f"# note ({n['phase']}): {n['note']}")
    for a in p.actions:
        print(f"# action ({a.phase}), not run offline: {a.description}")
    if args.apply:
        configure.apply_offline(root, p, dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        for c in p.pending:
            print(f"{c.status}: {c.path}" + (f" (backup {c.backup})" if c.backup else ""))
        return 0 if all(c.status == "applied" for c in p.pending) else runner.EXIT_FAILED
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from . import configure, params
    from .remote import Remote

    run_dir = Path(args.run)
    try:
        summary = json.loads((run_dir / archive.SUMMARY).read_text())
    except (OSError, ValueError) as exc:
        raise RunbookError(f"{run_dir}: no readable {archive.SUMMARY} ({exc})") from exc
    plan = configure.rollback_commands(summary.get("changes") or [])
    if not plan:
        print(f"{run_dir}: the run changed no files; nothing to roll back")
        return 0
    site = params.load(args.params or summary["params_file"])
    failed = 0
    with Remote(site) as remote:
        for host, items in plan.items():
            for path, cmd in items:
                if not args.apply:
                    print(f"would restore {host}:{path}")
                    continue
                r = remote.run_one(host, cmd)
                ok = r.ok
                failed += not ok
                print(f"{'restored' if ok else 'NOT restored'} {host}:{path}"
                      + ("" if ok else f": {(r.error or r.stdout + r.stderr).strip()}"))
    if not args.apply:
        print("(plan only: add --apply to restore)")
    return runner.EXIT_FAILED if failed else 0


def _cmd_phases(args: argparse.Namespace) -> int:
    for name in runner.phases():
        print(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``runbook`` command."""
    p = argparse.ArgumentParser(prog="runbook", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a phase notebook headlessly and archive it")
    r.add_argument("phase", help="phase to run, e.g. 00_preflight or preflight")
    r.add_argument("-p", "--params", required=True, help="site params YAML file")
    r.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="set a notebook parameter (value read as YAML); repeatable")
    r.add_argument("--archive", help="archive root (default: $RUNBOOK_ARCHIVE, the site's archive_dir, ./runs)")
    r.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("runs", help="list archived runs")
    ls.add_argument("--archive", help="archive root (default: $RUNBOOK_ARCHIVE or ./runs)")
    ls.add_argument("--phase", help="only runs of this phase")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_cmd_runs)

    rc = sub.add_parser("render-config", help="plan (and with --apply make) the configure edits in a directory laid out like /")
    rc.add_argument("--root", required=True, help="directory holding etc/... of one host")
    rc.add_argument("--host", required=True, help="which inventory host the directory is")
    rc.add_argument("-p", "--params", required=True, help="site params YAML file")
    rc.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a configure parameter: transport, storage, cpu_mode, ... (value read as YAML)")
    rc.add_argument("--apply", action="store_true", help="write the changes (backup, atomic rename)")
    rc.set_defaults(func=_cmd_render_config)

    rb = sub.add_parser("rollback", help="restore the files a configure run changed, from its backups")
    rb.add_argument("run", help="the run's archive directory")
    rb.add_argument("-p", "--params", help="site params (default: the one the run used)")
    rb.add_argument("--apply", action="store_true", help="restore (default: show what would be restored)")
    rb.set_defaults(func=_cmd_rollback)

    ph = sub.add_parser("phases", help="list the phases that can be run")
    ph.set_defaults(func=_cmd_phases)

    from .diagnose import cli as diagnose_cli

    diagnose_cli.register(sub)
    if importlib.util.find_spec("runbook_lib.lab.cli") is not None:
        from .lab import cli as lab_cli

        lab_cli.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 1 problems found, 2 failed)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RunbookError as exc:
        print("error: " + textwrap.fill(str(exc), width=100, subsequent_indent="  "), file=sys.stderr)
        return runner.EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
