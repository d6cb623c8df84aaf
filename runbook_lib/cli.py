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
    records = archive.select(archive.runs(root), phase=args.phase, site=args.site, host=args.host,
                             status=args.status, since=args.since, until=args.until)
    rows = archive.table(records)
    if args.html:
        archive.write_text(Path(args.html), archive.html_index(records, Path(args.html).parent))
        print(f"wrote {args.html} ({len(rows)} runs)")
        return 0
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


def _cmd_drift(args: argparse.Namespace) -> int:
    from . import drift

    root = Path(args.archive) if args.archive else archive.default_root()
    phase = runner.find_notebook(args.phase).stem
    records = [r for r in archive.runs(root) if r.get("phase") == phase and r.get("status") in ("ok", "problems")
               and (not args.site or r.get("site") == args.site)]
    if args.site is None and len({r.get("site") for r in records}) > 1:
        raise RunbookError(f"runs of several sites under {root}: choose one with --site")
    if len(records) < 2 and not (args.since and records):
        print(f"fewer than two completed {phase} runs under {root}: nothing to compare")
        return runner.EXIT_FAILED
    latest = records[-1]
    if args.since:
        base = [r for r in records if Path(r["dir"]).name == Path(args.since).name or r["dir"] == args.since]
        if not base:
            raise RunbookError(f"--since {args.since}: no such completed {phase} run under {root}")
        baseline = base[0]
    else:
        baseline = records[-2]
    rows = drift.compare(baseline, latest)
    if args.json:
        print(json.dumps({"baseline": baseline["dir"], "latest": latest["dir"], "regressed": drift.regressed(rows),
                          "rows": rows}, indent=2, default=str))
    else:
        print(f"baseline: {baseline['dir']}\nlatest:   {latest['dir']}")
        if rows:
            import pandas as pd

            with pd.option_context("display.width", 250, "display.max_colwidth", 100, "display.max_rows", 1000):
                print(drift.table(rows).to_string(index=False))
        else:
            print("no drift: the same verdicts and facts")
    return runner.EXIT_PROBLEMS if drift.regressed(rows) else 0


def _cmd_schedule(args: argparse.Namespace) -> int:
    from . import schedule

    dirs = {"unit_dir": Path(args.unit_dir), "cron_dir": Path(args.cron_dir)}
    if args.action == "install":
        if not (args.phase and args.every and args.params):
            raise RunbookError("schedule install needs PHASE, --every and -p")
        overrides = dict(runner.parse_override(o) for o in args.param)
        s = schedule.install(args.phase, args.every, args.params, args.archive or "runs", overrides,
                             name=args.name, backend=args.backend, **dirs)
        print(f"installed {s.name} ({s.backend}, every {s.every}): {', '.join(s.files)}")
        return 0
    if args.action == "list":
        found = schedule.installed(**dirs)
        for s in found:
            print(f"{s.name}\t{s.backend}\tevery {s.every}\t{s.command}")
        if not found:
            print("no runbook schedules")
        return 0
    if not args.phase:
        raise RunbookError("schedule remove needs the schedule's name (see: runbook schedule list)")
    for f in schedule.remove(args.phase, **dirs):
        print(f"removed {f}")
    return 0


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
    ls.add_argument("--site", help="only runs on this site")
    ls.add_argument("--host", help="only runs that covered this host")
    ls.add_argument("--status", choices=["ok", "problems", "failed"], help="only runs that ended so")
    ls.add_argument("--since", help="only runs started at or after this date/time (ISO 8601)")
    ls.add_argument("--until", help="only runs started before this date/time (ISO 8601)")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.add_argument("--html", metavar="FILE", help="write an HTML index of the runs, linking their notebooks")
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

    dr = sub.add_parser("drift", help="what changed between the latest run of a phase and the one before")
    dr.add_argument("--phase", default="00_preflight", help="phase (default 00_preflight)")
    dr.add_argument("--site", help="site (needed when the archive holds several)")
    dr.add_argument("--since", metavar="RUN", help="compare with this run (its directory) instead of the previous one")
    dr.add_argument("--archive", help="archive root (default: $RUNBOOK_ARCHIVE or ./runs)")
    dr.add_argument("--json", action="store_true", help="print JSON")
    dr.set_defaults(func=_cmd_drift)

    sc = sub.add_parser("schedule", help="run a phase on a timer (systemd) or cron: install, list, remove")
    sc.add_argument("action", choices=["install", "list", "remove"])
    sc.add_argument("phase", nargs="?", help="phase to schedule (install) or schedule name (remove)")
    sc.add_argument("--every", help="interval: 30s, 15min, 2h, 1d (cron: whole minutes)")
    sc.add_argument("-p", "--params", help="site params YAML file")
    sc.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE", help="a notebook parameter")
    sc.add_argument("--archive", help="archive root for the scheduled runs (default ./runs)")
    sc.add_argument("--name", help="schedule name (default runbook-SITE-PHASE)")
    sc.add_argument("--backend", default="auto", choices=["auto", "systemd", "cron"])
    sc.add_argument("--unit-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
    sc.add_argument("--cron-dir", default="/etc/cron.d", help=argparse.SUPPRESS)
    sc.set_defaults(func=_cmd_schedule)

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
