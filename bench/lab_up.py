#!/usr/bin/env python3
"""Benchmark: cold and warm ``lab up`` (and ``lab down``) times and the lab's memory, per mode.

Not a test: run it by hand, as root, on an otherwise idle machine::

    .venv/bin/python bench/lab_up.py            # both modes, cold + 3 warm runs, N=30 ns
    .venv/bin/python bench/lab_up.py --no-cold  # skip the cold runs (rootfs build, kernel fetch)

*Cold* uses an empty cache (so nspawn includes the debootstrap rootfs build and both modes the
guest kernel download); *warm* reuses it.  Memory is the sum over every process of every host
(``/proc/PID/smaps_rollup``): RSS counts shared pages once per process, PSS splits them, so PSS
is what the lab really costs the machine.  Measured idle and with the guest running on compute1.
Results go to ``bench/results/lab_up.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runbook_lib import lab  # noqa: E402

ROOT = Path("/var/lib/runbook-lab-bench")
NETS = {"nspawn": "198.18.240.0/24", "ns": "198.18.241.0/24", "scale": "198.18.242.0/24"}
RESULTS = Path(__file__).resolve().parent / "results" / "lab_up.json"


def quiet(_message: str) -> None:
    """Swallow lab progress messages."""


def timed_up(mode: str, computes: int, lab_dir: Path, cache: Path, net: str) -> float:
    started = time.monotonic()
    info = lab.up(computes=computes, mode=mode, net=net, lab_dir=lab_dir, cache_dir=cache, cloud=False, echo=quiet)
    assert not info.already_up
    return time.monotonic() - started


def timed_down(lab_dir: Path) -> float:
    started = time.monotonic()
    lab.down(lab_dir, echo=quiet)
    return time.monotonic() - started


def memory(lab_dir: Path) -> dict[str, float]:
    found = lab.status(lab_dir, memory=True)
    return {"rss_mib": round(found.rss_kib / 1024, 1), "pss_mib": round(found.pss_kib / 1024, 1),
            "processes": sum(h.processes for h in found.hosts)}


def start_guest(lab_dir: Path) -> None:
    """Start the lab guest on compute1 through its local libvirt (no migration set-up needed)."""
    cfg = str(lab_dir / "ssh_config")
    guest = ROOT / "cache" / "guest" / "domain.xml"
    subprocess.run(["ssh", "-F", cfg, "compute1", f"virsh define {guest} && virsh start rblab-guest"],
                   check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(["ssh", "-F", cfg, "compute1",
                              "cat /var/log/libvirt/qemu/rblab-guest-serial.log"],
                             capture_output=True, text=True).stdout
        if "tick 5 " in out:
            return
        time.sleep(0.5)
    raise RuntimeError("guest did not reach tick 5")


def bench_mode(mode: str, cold: bool, warm_runs: int) -> dict:
    lab_dir = ROOT / mode
    cache = ROOT / "cache"
    lab.down(lab_dir, echo=quiet)
    result: dict = {"mode": mode, "computes": 2}
    if cold:
        cold_cache = ROOT / f"cache-cold-{mode}"
        shutil.rmtree(cold_cache, ignore_errors=True)
        result["cold_up_s"] = round(timed_up(mode, 2, lab_dir, cold_cache, NETS[mode]), 2)
        timed_down(lab_dir)
        # keep the freshly built cache as the warm one
        shutil.rmtree(cache, ignore_errors=True)
        cold_cache.rename(cache)
    ups, downs = [], []
    for run in range(warm_runs):
        ups.append(timed_up(mode, 2, lab_dir, cache, NETS[mode]))
        if run == 0:
            time.sleep(3)                       # let boot-time activity settle
            result["idle_memory"] = memory(lab_dir)
            start_guest(lab_dir)
            result["with_guest_memory"] = memory(lab_dir)
        downs.append(timed_down(lab_dir))
    result["warm_up_s"] = [round(t, 2) for t in ups]
    result["warm_up_median_s"] = round(statistics.median(ups), 2)
    result["down_median_s"] = round(statistics.median(downs), 2)
    return result


def bench_scale(computes: int) -> dict:
    lab_dir = ROOT / "scale"
    lab.down(lab_dir, echo=quiet)
    up_s = timed_up("ns", computes, lab_dir, ROOT / "cache", NETS["scale"])
    time.sleep(3)
    mem = memory(lab_dir)
    down_s = timed_down(lab_dir)
    return {"mode": "ns", "computes": computes, "warm_up_s": round(up_s, 2),
            "idle_memory": mem, "down_s": round(down_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cold", action="store_true", help="skip cold runs")
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--scale", type=int, default=30, help="computes for the ns scale run (0: skip)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/lab_up.py needs root", file=sys.stderr)
        return 2
    ROOT.mkdir(parents=True, exist_ok=True)
    rows = [bench_mode(mode, not args.no_cold, args.warm_runs) for mode in ("nspawn", "ns")]
    if args.scale:
        rows.append(bench_scale(args.scale))
    report = {"machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                          "mem_total_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024},
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'mode':<8}{'N':>4}{'cold up s':>11}{'warm up s':>11}{'down s':>8}"
          f"{'idle RSS/PSS MiB':>20}{'+guest RSS/PSS MiB':>22}")
    for row in rows:
        idle, guest = row.get("idle_memory", {}), row.get("with_guest_memory", {})
        print(f"{row['mode']:<8}{row['computes']:>4}{row.get('cold_up_s', '-'):>11}"
              f"{row.get('warm_up_median_s', row.get('warm_up_s')):>11}"
              f"{row.get('down_median_s', row.get('down_s')):>8}"
              f"{(str(idle.get('rss_mib')) + '/' + str(idle.get('pss_mib'))) if idle else '-':>20}"
              f"{(str(guest.get('rss_mib')) + '/' + str(guest.get('pss_mib'))) if guest else '-':>22}")
    print(f"saved {RESULTS}")
    shutil.rmtree(ROOT, ignore_errors=True)     # the bench's own labs are down; drop their caches
    return 0


if __name__ == "__main__":
    sys.exit(main())
