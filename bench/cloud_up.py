#!/usr/bin/env python3
"""Benchmark: cold start of the lab's cloud to a working API, and the memory of lab + cloud.

Not a test: run it by hand, as root, on an otherwise idle machine::

    .venv/bin/python bench/cloud_up.py                  # ns and nspawn labs, 2 runs each
    .venv/bin/python bench/cloud_up.py --modes ns --runs 1
    .venv/bin/python bench/cloud_up.py --venv-install   # also time a from-scratch services venv

*Cold start* = fresh data everywhere (new MariaDB, RabbitMQ, Keystone keys, Nova databases) with
the services venv and the lab's caches present; it ends when the compute API lists both
hypervisors with their sizes and a flavor exists.  Memory is PSS summed over every process of the
lab's hosts (their nova-compute included) and every controller-side process of the cloud
(``/proc/PID/smaps_rollup``): PSS splits shared pages, so the sum is what the machine pays.
Results go to ``bench/results/cloud_up.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runbook_lib import cloud, lab  # noqa: E402
from runbook_lib.cloud import api, install  # noqa: E402
from runbook_lib.cloud.layout import default_venv  # noqa: E402
from runbook_lib.lab.state import memory_kib  # noqa: E402
from runbook_lib.cloud import procs  # noqa: E402

ROOT = Path("/var/lib/runbook-lab-bench-cloud")
NETS = {"ns": "198.18.245.0/24", "nspawn": "198.18.246.0/24"}
CACHE = Path(os.environ.get("RUNBOOK_LAB_CACHE", "/var/lib/runbook-lab/cache"))
RESULTS = Path(__file__).resolve().parent / "results" / "cloud_up.json"


def quiet(_message: str) -> None:
    """Swallow progress messages."""


def cloud_memory(lab_dir: Path) -> dict[str, int]:
    """PSS (KiB) of each controller-side cloud service."""
    state = json.loads((lab_dir / "cloud/state.json").read_text())
    return {name: memory_kib(procs.session_members(ref))[1]
            for name, ref in state["processes"].items()}


def one_run(mode: str) -> dict:
    """Lab up, cloud up (cold), first API answer, memory; then everything down."""
    lab_dir = ROOT / mode
    lab.down(lab_dir, cache_dir=CACHE, echo=quiet)
    t0 = time.monotonic()
    lab.up(computes=2, mode=mode, net=NETS[mode], lab_dir=lab_dir, cache_dir=CACHE, cloud=False,
           echo=quiet)
    t_lab = time.monotonic() - t0
    info = cloud.up(lab_dir, cache_dir=CACHE, echo=quiet)
    conn = info.connect()
    sizes = {h.name: (h.vcpus, h.memory_mb) for h in api.hypervisors(conn)}
    t_api = time.monotonic() - t0
    time.sleep(15)            # let periodic tasks and caches settle before measuring memory
    lab_status = lab.status(lab_dir, memory=True)
    services = cloud_memory(lab_dir)
    cloud_pss = sum(services.values())
    result = {
        "mode": mode, "lab_up_s": round(t_lab, 1),
        "cloud_up_s": round(t_api - t_lab, 1) if not info.already_up else None,
        "lab_plus_cloud_to_api_s": round(t_api, 1), "hypervisors": sizes,
        "cloud_steps_s": info.timings,
        "pss_mib": {"lab_hosts_incl_nova_compute": round(lab_status.pss_kib / 1024),
                    "cloud_controller_side": round(cloud_pss / 1024),
                    "total": round((lab_status.pss_kib + cloud_pss) / 1024)},
        "cloud_services_pss_mib": {k: round(v / 1024) for k, v in services.items()},
        "hosts_pss_mib": {h.name: round(h.pss_kib / 1024) for h in lab_status.hosts},
    }
    t1 = time.monotonic()
    lab.down(lab_dir, cache_dir=CACHE, echo=quiet)
    cloud.down(lab_dir, echo=quiet)
    result["down_s"] = round(time.monotonic() - t1, 1)
    return result


def venv_install() -> dict:
    """A from-scratch services venv in a temporary place, pip's cache bypassed (as in CI)."""
    os.environ["PIP_NO_CACHE_DIR"] = "1"
    try:
        with tempfile.TemporaryDirectory(prefix="rb-cloud-venv-", dir="/var/tmp") as tmp:
            venv = Path(tmp) / "cloud-venv"
            seconds = install.ensure_venv(venv, echo=quiet)
            size = sum(p.stat().st_size for p in venv.rglob("*")
                       if p.is_file() and not p.is_symlink())
    finally:
        os.environ.pop("PIP_NO_CACHE_DIR", None)
    return {"seconds": round(seconds or 0, 1), "size_mb": round(size / 1e6),
            "requirements": list(install.SERVICE_REQUIREMENTS)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="ns,nspawn")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--venv-install", action="store_true",
                        help="also time creating the services venv from scratch")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    install.ensure_debian_packages(echo=quiet)
    install.ensure_venv(default_venv(CACHE))
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "kernel": platform.release()},
                     "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": []}
    if args.venv_install:
        results["venv_install"] = venv_install()
    try:
        for mode in args.modes.split(","):
            for _ in range(args.runs):
                results["runs"].append(one_run(mode))
    finally:
        for mode in NETS:
            lab.down(ROOT / mode, cache_dir=CACHE, echo=quiet)
            cloud.down(ROOT / mode, echo=quiet)
        shutil.rmtree(ROOT, ignore_errors=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'mode':<8}{'lab up':>8}{'cloud up':>10}{'to API':>8}{'down':>7}"
          f"{'PSS lab':>9}{'PSS cloud':>11}{'PSS total':>11}")
    for r in results["runs"]:
        p = r["pss_mib"]
        print(f"{r['mode']:<8}{r['lab_up_s']:>7.1f}s{(r['cloud_up_s'] or 0):>9.1f}s"
              f"{r['lab_plus_cloud_to_api_s']:>7.1f}s{r['down_s']:>6.1f}s"
              f"{p['lab_hosts_incl_nova_compute']:>7} MiB{p['cloud_controller_side']:>7} MiB"
              f"{p['total']:>7} MiB")
    for mode in args.modes.split(","):
        runs = [r for r in results["runs"] if r["mode"] == mode]
        if runs:
            print(f"{mode}: median to API {statistics.median(r['lab_plus_cloud_to_api_s'] for r in runs):.1f} s, "
                  f"median PSS {statistics.median(r['pss_mib']['total'] for r in runs)} MiB")
    last = results["runs"][-1]["cloud_services_pss_mib"] if results["runs"] else {}
    if last:
        print("cloud services PSS (MiB): " + ", ".join(f"{k} {v}" for k, v in last.items()))
    if "venv_install" in results:
        v = results["venv_install"]
        print(f"services venv from scratch: {v['seconds']} s, {v['size_mb']} MB")
    print(f"saved {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
