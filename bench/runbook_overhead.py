#!/usr/bin/env python3
"""Benchmark: what running the preflight as a runbook costs over calling the library directly.

Not a test: run it by hand, as root (an ``ns`` lab of 3 computes on 198.18.25.0/24 under
/var/lib/runbook-lab-bench, taken down at the end)::

    .venv/bin/python bench/runbook_overhead.py [--rounds 5]

A. ``runbook run 00_preflight -p <lab params> --archive <temp dir>``: papermill starts a Jupyter
   kernel, executes the notebook, the runner archives it (notebook, parameters, summary) and
   exports HTML;
B. ``bench/child_direct.py <lab params>``: the notebook's code cells exec'd in one plain Python
   process (same library calls, same order, same parameters), nothing archived.

One warm-up each, then ``--rounds`` rounds of A and B alternating (order swapped every round);
each a whole process.  The overhead is the median of the paired differences A - B (target
<= 3 s).  Results: bench/results/runbook_overhead.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import PY, REPO, ROOT  # noqa: E402

NET = "198.18.25.0/24"
TARGET_S = 3.0


def run_a(params: Path) -> dict:
    archive = Path(tempfile.mkdtemp(prefix="archive-", dir=ROOT))
    try:
        m = common.measure([PY, "-m", "runbook_lib.cli", "run", "00_preflight", "-p", str(params),
                            "--archive", str(archive)], cwd=str(REPO))
        runs = [p for p in archive.iterdir() if p.is_dir()]
        m["archived"] = sorted(f.name for f in runs[0].iterdir()) if runs else []
    finally:
        shutil.rmtree(archive, ignore_errors=True)
    return m


def run_b(params: Path) -> dict:
    return common.measure([PY, str(Path(__file__).resolve().parent / "child_direct.py"), str(params)],
                          cwd=str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    lab_dir = ROOT / "lab-runbook"
    info, up_s = common.lab_up(3, NET, lab_dir, cloud=False)
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    try:
        warm = {"A": run_a(info.params_file), "B": run_b(info.params_file)}
        for r in range(args.rounds):
            for k in (("A", "B") if r % 2 == 0 else ("B", "A")):
                m = run_a(info.params_file) if k == "A" else run_b(info.params_file)
                # runbook run exits 1 when the (seeded, unconfigured) lab has problems: expected
                if m["rc"] not in (0, 1):
                    print(f"  !! {k} rc={m['rc']}: {m['stderr'][-800:]}", file=sys.stderr)
                m["stderr_tail"] = m.pop("stderr")[-300:]
                m.pop("stdout", None)
                runs[k].append(m)
            print(f"  round {r + 1}: A runbook run {runs['A'][-1]['wall_s']:.2f} s, "
                  f"B direct {runs['B'][-1]['wall_s']:.2f} s", flush=True)
    finally:
        common.lab_down(lab_dir)
    for w in warm.values():
        w.pop("stdout", None)
        w["stderr_tail"] = w.pop("stderr")[-300:]
    diffs = [a["wall_s"] - b["wall_s"] for a, b in zip(runs["A"], runs["B"])]
    cpu_diffs = [a["cpu_s"] - b["cpu_s"] for a, b in zip(runs["A"], runs["B"])]
    report = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "computes": 3, "net": NET, "lab_up_s": round(up_s, 1), "rounds": args.rounds,
              "target_s": TARGET_S, "warmup": warm, "runs": runs,
              "stats": {"A_wall_s": common.summary([x["wall_s"] for x in runs["A"]]),
                        "B_wall_s": common.summary([x["wall_s"] for x in runs["B"]]),
                        "A_cpu_s": common.summary([x["cpu_s"] for x in runs["A"]]),
                        "B_cpu_s": common.summary([x["cpu_s"] for x in runs["B"]]),
                        "A_tree_rss_mib": common.summary([x["tree_rss_mib"] for x in runs["A"]]),
                        "B_tree_rss_mib": common.summary([x["tree_rss_mib"] for x in runs["B"]]),
                        "overhead_s": common.summary(diffs), "overhead_cpu_s": common.summary(cpu_diffs),
                        "A_rc": [x["rc"] for x in runs["A"]], "B_rc": [x["rc"] for x in runs["B"]],
                        "archived_files": runs["A"][-1].get("archived")}}
    path = common.save("runbook_overhead.json", report)
    s = report["stats"]
    print(f"runbook run {s['A_wall_s']['median']:.2f} s, direct {s['B_wall_s']['median']:.2f} s, "
          f"overhead {s['overhead_s']['median']:.2f} s (min {s['overhead_s']['min']:.2f}, max "
          f"{s['overhead_s']['max']:.2f}; target <= {TARGET_S} s); CPU overhead "
          f"{s['overhead_cpu_s']['median']:.2f} s")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
