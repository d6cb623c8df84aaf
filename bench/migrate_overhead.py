#!/usr/bin/env python3
"""Benchmark: the runbook's live-migration orchestration vs the raw API path, and a host drain.

Not a test: run it by hand, as root (an ``ns`` lab of 2 computes with its cloud on
198.18.24.0/24 under /var/lib/runbook-lab-bench, taken down at the end)::

    .venv/bin/python bench/migrate_overhead.py [--rounds 5] [--guests 4] [--concurrency 1,2]

The lab's cloud is real (Keystone, Placement, Nova API/conductor/scheduler, a nova-compute in
each compute host) with Nova's fake virt driver, so a migration's time is Nova's orchestration
(API, conductor, scheduler, RPC to both computes, Placement), not guest memory copying.

1. Single migration, same server (m1.tiny), alternating: A = ``runbook_lib.migrate.migrate``
   (the 20_migrate step: start, watch with progress samples, verify host/record/state) vs
   B = ``runbook_lib.cloud.api.live_migrate`` (POST os-migrateLive, poll until settled).  The
   server goes back and forth between compute1 and compute2; the order of A and B swaps every
   round so that each method moves in both directions.  In-process wall time per call.
2. Host drain: M guests booted on one compute, ``runbook_lib.migrate.drain`` at concurrency k
   (disable the service, migrate every guest away, verify), vs the ideal ceil(M/k) x the median
   single migration time of A (target <= 1.2x).  Repeated, draining compute1 and compute2 in turn.

Both computes are sized 8 vCPU / 16 GiB (``compute_sizes``) so that either one holds all M guests.
Results: bench/results/migrate_overhead.json.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import NETS, ROOT  # noqa: E402

TARGET_DRAIN = 1.2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--guests", type=int, default=4)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--drains", type=int, default=2, help="drains per concurrency")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    from runbook_lib import migrate, params
    from runbook_lib.cloud import ComputeSize, api
    from runbook_lib.cloud.layout import IMAGE_ID

    lab_dir = ROOT / "lab-cloud"
    sizes = (ComputeSize(8, 16384), ComputeSize(8, 16384))
    info, up_s = common.lab_up(2, NETS["cloud"], lab_dir, cloud=True, compute_sizes=sizes)
    report: dict = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "net": NETS["cloud"], "lab_plus_cloud_up_s": round(up_s, 1), "rounds": args.rounds,
                    "guests": args.guests, "target_drain_ratio": TARGET_DRAIN}
    try:
        site = params.load(info.params_file)
        conn = api.connect(site.cloud, site.clouds_yaml)
        api.boot(conn, "bench-single", IMAGE_ID, "m1.tiny", host="compute1")
        other = {"compute1": "compute2", "compute2": "compute1"}

        def via_runbook() -> dict:
            s = migrate.server(conn, "bench-single")
            t = time.monotonic()
            o = migrate.migrate(conn, s, other[s["host"]])
            return {"s": time.monotonic() - t, "ok": o.verified, "from": o.source, "to": o.destination,
                    "status": o.status, "samples": len(o.samples)}

        def raw() -> dict:
            s = migrate.server(conn, "bench-single")
            t = time.monotonic()
            r = api.live_migrate(conn, s["id"], other[s["host"]])
            return {"s": time.monotonic() - t, "ok": r.ok, "from": r.source, "to": r.destination,
                    "status": r.status}

        via_runbook(), raw()                         # warm-up: both directions once
        single: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(args.rounds):
            for k in (("A", "B") if r % 2 == 0 else ("B", "A")):
                single[k].append(via_runbook() if k == "A" else raw())
            print(f"  round {r + 1}: A migrate.migrate {single['A'][-1]['s']:.2f} s, "
                  f"B api.live_migrate {single['B'][-1]['s']:.2f} s", flush=True)
        a_med = common.med([x["s"] for x in single["A"]])
        report["single"] = {
            "runs": single, "A_s": common.summary([x["s"] for x in single["A"]]),
            "B_s": common.summary([x["s"] for x in single["B"]]),
            "A_minus_B_s": common.summary([a["s"] - b["s"] for a, b in zip(single["A"], single["B"])]),
            "A_over_B": common.summary([a["s"] / b["s"] for a, b in zip(single["A"], single["B"])]),
            "all_ok": all(x["ok"] for k in single for x in single[k]),
            "polling_interval_s": {"migrate.migrate": 0.5, "api.live_migrate": 0.2}}
        conn.compute.delete_server(migrate.server(conn, "bench-single")["id"])

        # ------------------------------------------------------------------------- drains
        names = [f"bench-drain-{i}" for i in range(args.guests)]
        for name in names:
            api.boot(conn, name, IMAGE_ID, "m1.tiny", host="compute1")
        source = "compute1"
        drains = []
        for k in [int(x) for x in args.concurrency.split(",")]:
            for rep in range(args.drains):
                t = time.monotonic()
                d = migrate.drain(conn, source, reason="benchmark drain", concurrency=k, reenable=True)
                wall = time.monotonic() - t
                ideal = math.ceil(args.guests / k) * a_med
                row = {"concurrency": k, "source": source, "wall_s": round(wall, 3),
                       "ideal_s": round(ideal, 3), "ratio": round(wall / ideal, 3),
                       "migration_s": [round(o.seconds, 2) for o in d.outcomes],
                       "verified": sum(o.verified for o in d.outcomes), "left": len(d.left)}
                drains.append(row)
                print(f"  drain {source} k={k}: {wall:.2f} s vs ideal {ideal:.2f} s = {wall / ideal:.2f}x "
                      f"({row['verified']}/{args.guests} verified)", flush=True)
                source = other[source]
        report["drains"] = drains
        report["drain_ratio_by_k"] = {str(k): common.summary([d["ratio"] for d in drains if d["concurrency"] == k])
                                      for k in sorted({d["concurrency"] for d in drains})}
        conn.close()
    finally:
        common.lab_down(lab_dir)
        from runbook_lib import cloud
        cloud.down(lab_dir, echo=common.quiet)
    path = common.save("migrate_overhead.json", report)
    s = report["single"]
    print(f"single migration: runbook {s['A_s']['median']:.2f} s vs raw {s['B_s']['median']:.2f} s: "
          f"+{s['A_minus_B_s']['median']:.2f} s ({s['A_over_B']['median']:.2f}x)")
    for k, v in report["drain_ratio_by_k"].items():
        print(f"drain of {args.guests} at k={k}: {v['median']:.2f}x ideal (target <= {TARGET_DRAIN})")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
