"""``runbook lab up|down|status``: the command-line face of :mod:`runbook_lib.lab`.

The main CLI calls :func:`register` with its sub-parsers and dispatches through ``args.func``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from runbook_lib.errors import RunbookError
from runbook_lib.lab.errors import LabError
from runbook_lib.lab.layout import DEFAULT_LAB_DIR, DEFAULT_NET, MODES


def _on_sigterm(_signum: int, _frame: Any) -> None:
    # a terminated `lab up` must clean up like an interrupted one: raise where it stands
    raise KeyboardInterrupt("SIGTERM")


def _cmd_up(args: argparse.Namespace) -> int:
    from runbook_lib.lab import lifecycle, status

    current = status(args.lab_dir)
    # without explicit options, `lab up` on a running lab is the no-op it promises
    running = current.state == "up"
    mode = args.mode or (current.mode if running else "nspawn")
    computes = args.computes if args.computes is not None else (
        len(current.hosts) - 1 if running else 2)
    net = args.net or (current.net if running else DEFAULT_NET)
    lifecycle.up(computes=computes, mode=mode, net=net, lab_dir=args.lab_dir,
                 cache_dir=args.cache_dir, cloud=not args.no_cloud,
                 compute_sizes=args.compute_size or None, virt_driver=args.virt_driver)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from runbook_lib.lab import down

    down(args.lab_dir, purge=args.purge, cache_dir=args.cache_dir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from runbook_lib.lab import status

    found = status(args.lab_dir, memory=True)
    if args.json:
        json.dump(found.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(f"lab {found.lab_dir}: {found.state}"
              + (f" ({found.mode}, {found.net}, id {found.lab_id})" if found.mode else ""))
        for host in found.hosts:
            print(f"  {host.name:<12} {host.role:<10} {host.address:<15} "
                  f"{'running' if host.running else 'NOT running':<12} "
                  f"{host.processes:>3} procs  {host.pss_kib / 1024:7.1f} MiB PSS")
        if found.hosts:
            print(f"  total: {found.rss_kib / 1024:.0f} MiB RSS, {found.pss_kib / 1024:.0f} MiB PSS")
        for problem in found.problems:
            print(f"  problem: {problem}")
        for leftover in found.leftovers if found.state != "up" else ():
            print(f"  leftover: {leftover}")
        if found.params_file:
            print(f"  parameters: {found.params_file}")
        from runbook_lib import cloud
        sky = cloud.status(args.lab_dir, memory=True)
        if sky.state != "down":
            print(f"  cloud: {sky.state} on {sky.listen} ({sky.pss_kib / 1024:.0f} MiB PSS on the "
                  f"controller side); clouds.yaml: {Path(sky.lab_dir) / 'clouds.yaml'}")
            for problem in sky.problems:
                print(f"  cloud problem: {problem}")
    return {"up": 0, "down": 3}.get(found.state, 1)


def _compute_size(text: str) -> Any:
    from runbook_lib.cloud.layout import ComputeSize
    from runbook_lib.errors import RunbookError
    try:
        return ComputeSize.parse(text)
    except RunbookError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _guarded(handler):
    def run(args: argparse.Namespace) -> int:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            return handler(args)
        except LabError as exc:
            print(f"runbook lab: error: {exc}", file=sys.stderr)
            return 2
        except RunbookError as exc:          # the cloud's errors (runbook_lib.cloud)
            print(f"runbook lab: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("runbook lab: interrupted", file=sys.stderr)
            return 130
        finally:
            signal.signal(signal.SIGTERM, previous)
    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``lab`` command (``up``, ``down``, ``status``) to a CLI's sub-parsers."""
    lab = subparsers.add_parser(
        "lab", help="a multi-host lab on this machine (controller + computes) to run runbooks against",
        description="A controller and N compute hosts on this machine, each with its own network, "
                    "mount, UTS and PID namespaces, sshd, libvirt and NFS. Needs root.")
    lab_sub = lab.add_subparsers(dest="lab_command", metavar="{up,down,status}", required=True)

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--lab-dir", default=None,
                            help=f"lab directory (default $RUNBOOK_LAB_DIR or {DEFAULT_LAB_DIR})")

    up_p = lab_sub.add_parser("up", help="bring the lab up (a no-op if it is up)")
    up_p.add_argument("--computes", type=int, default=None, help="number of computes (default 2)")
    up_p.add_argument("--mode", choices=MODES, default=None,
                      help="nspawn: hosts boot systemd from a cached Debian rootfs (default); "
                           "ns: namespaces over this machine's programs, sysv `service`, fast")
    up_p.add_argument("--net", default=None, help=f"lab network (default {DEFAULT_NET})")
    up_p.add_argument("--cache-dir", default=None,
                      help="rootfs/guest cache (default $RUNBOOK_LAB_CACHE or LAB_DIR/cache)")
    up_p.add_argument("--no-cloud", action="store_true",
                      help="skip the lab's cloud (Keystone, Placement, Nova; nova-compute on the "
                           "computes; LAB_DIR/clouds.yaml)")
    up_p.add_argument("--virt-driver", choices=("fake", "libvirt"), default=None,
                      help="the computes' nova-compute driver: fake (default) or libvirt (real "
                           "QEMU TCG guests in each compute's libvirtd; a bootable guest image "
                           "and the flavor rblab.guest)")
    up_p.add_argument("--compute-size", action="append", default=[], metavar="VCPUS:MEMORY_MB",
                      type=_compute_size,
                      help="what compute1, compute2, ... report to Nova (repeatable; default "
                           "4:8192 then 2:4096; the last one repeats)")
    common(up_p)
    up_p.set_defaults(func=_guarded(_cmd_up))

    down_p = lab_sub.add_parser("down", help="stop the lab and remove all it created")
    down_p.add_argument("--purge", action="store_true",
                        help="also delete the lab directory and its caches")
    down_p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    common(down_p)
    down_p.set_defaults(func=_guarded(_cmd_down))

    status_p = lab_sub.add_parser("status", help="is the lab up? (exit 0 up, 3 down, 1 broken)")
    status_p.add_argument("--json", action="store_true", help="machine-readable output")
    common(status_p)
    status_p.set_defaults(func=_guarded(_cmd_status))


def main(argv: list[str] | None = None) -> int:
    """``python -m runbook_lib.lab up|down|status ...``"""
    parser = argparse.ArgumentParser(prog="runbook")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
