"""``python -m runbook_lib.cloud up|down|status [--lab-dir DIR]``: the cloud on its own.

``runbook lab up`` is the usual way in (it brings the cloud up with the lab); this entry point
serves a cloud without a lab (``--local-computes N`` nova-compute processes on this machine,
everything on 127.0.0.1) and re-creating the cloud of a running lab.
"""

from __future__ import annotations

import argparse
import sys

from runbook_lib.cloud import down, status, up
from runbook_lib.cloud.errors import CloudError
from runbook_lib.cloud.layout import ComputeSize


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m runbook_lib.cloud",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--lab-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--local-computes", type=int, default=0,
                        help="without a lab: nova-compute processes on this machine")
    parser.add_argument("--compute-size", action="append", type=ComputeSize.parse, default=[],
                        metavar="VCPUS:MEMORY_MB[:DISK_GB]",
                        help="size of compute1, compute2, ... (repeatable; default 4:8192 2:4096)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            kwargs = {"sizes": tuple(args.compute_size)} if args.compute_size else {}
            up(args.lab_dir, local_computes=args.local_computes, cache_dir=args.cache_dir, **kwargs)
        elif args.command == "down":
            down(args.lab_dir)
        else:
            found = status(args.lab_dir, memory=True)
            print(f"cloud {found.lab_dir}: {found.state}"
                  + (f" on {found.listen}, computes {', '.join(found.computes)}, "
                     f"{found.pss_kib / 1024:.0f} MiB PSS (controller side)" if found.listen else ""))
            for problem in found.problems:
                print(f"  problem: {problem}")
            return {"up": 0, "down": 3}.get(found.state, 1)
    except CloudError as exc:
        print(f"cloud: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cloud: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
