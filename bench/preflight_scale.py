#!/usr/bin/env python3
"""Benchmark: preflight fact gathering vs the Fabric floor vs Ansible, N = 3, 10, 30, 100 computes.

Not a test: run it by hand, as root (it brings up ``ns`` labs under /var/lib/runbook-lab-bench on
198.18.20-23.0/24 and takes them down again)::

    .venv/bin/python bench/preflight_scale.py                    # N = 3,10,30,100, 5 rounds
    .venv/bin/python bench/preflight_scale.py --sizes 3,10 --rounds 7
    .venv/bin/python bench/preflight_scale.py --no-ansible       # only a and b

For each N: one warm-up of every command (the first libvirt call on a fresh host fills its QEMU
capability cache), then ``--rounds`` rounds; each round runs a, b, c, d once, in an order rotated
from round to round, every one a whole process:

a. ``bench/child.py preflight``: ``preflight.gather(site, site.hosts, Settings())`` -- everything
   the preflight notebook gathers (two rounds: facts incl. resolution and reachability, then
   libvirt's CPU comparisons);
b. ``bench/child.py floor``: ``Remote(site).run("true")`` -- same connection settings;
c. ``ansible all -m setup -f N+1``;
d. ``ansible all -m shell -a <compute1's first-round preflight batch> -f N+1``.

Ansible: ansible-core in its own venv, default settings (ControlMaster=auto, ControlPersist=60s,
no pipelining), host keys verified against the lab's known_hosts, a fresh ControlPath dir per run
("cold", like every Fabric run); the masters a run leaves are closed outside the timings.
Ratios a/b, a/c, a/d are medians of the per-round ratios.  Results: bench/results/preflight_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import PY, ROOT, NETS  # noqa: E402

CHILD = str(Path(__file__).resolve().parent / "child.py")
TARGETS = {"a/c": 0.15, "a/b@3": 1.3, "a/b@30": 2.5}


def one(kind: str, info, work: Path, n_hosts: int, script: str) -> dict:
    params = str(info.params_file)
    if kind == "a":
        m = common.measure([PY, CHILD, "preflight", params])
    elif kind == "b":
        m = common.measure([PY, CHILD, "floor", params])
    else:
        control = common.fresh_dir("cp-")
        out = work / f"ansible-{kind}.out"
        argv = [str(common.ANSIBLE_VENV / "bin" / "ansible"), "all", "-i", str(work / "inventory.ini"),
                "-f", str(n_hosts)]
        argv += ["-m", "setup"] if kind == "c" else ["-m", "shell", "-a", script]
        m = common.measure(argv, env=common.ansible_env(control), stdout_path=out)
        common.close_control_masters(control)
        m["hosts_ok"] = common.count_ok(out, "setup" if kind == "c" else "shell")
        m["out_bytes"] = out.stat().st_size
    if kind in ("a", "b"):
        try:
            m["inner"] = json.loads(m["stdout"].strip().splitlines()[-1])
        except (IndexError, ValueError):
            m["inner"] = None
        m["hosts_ok"] = (m["inner"] or {}).get("hosts", 0) - len((m["inner"] or {}).get("failed", []))
    m.pop("stdout", None)
    if m["rc"] != 0 or m["hosts_ok"] != n_hosts:
        m["stderr_tail"] = m["stderr"][-2000:]
        print(f"  !! {kind}: rc={m['rc']} hosts_ok={m['hosts_ok']}/{n_hosts}: {m['stderr'][-400:]}", file=sys.stderr)
    m.pop("stderr", None)
    return m


def bench_n(n: int, rounds: int, ansible: bool) -> dict:
    lab_dir = ROOT / f"lab-n{n}"
    info, up_s = common.lab_up(n, NETS[n], lab_dir, cloud=False)
    n_hosts = len(info.hosts)
    work = lab_dir / "bench"
    work.mkdir(exist_ok=True)
    kinds = ["a", "b"] + (["c", "d"] if ansible else [])
    try:
        common.write_inventory(info, work / "inventory.ini")
        script = common.measure([PY, CHILD, "script", str(info.params_file), "compute1"])["stdout"]
        (work / "batch.sh").write_text(script)
        warm = {k: one(k, info, work, n_hosts, script) for k in kinds}     # warm-up (kept, not counted)
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(rounds):
            order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
            for k in order:
                runs[k].append(one(k, info, work, n_hosts, script))
            print(f"  N={n} round {r + 1}: " + "  ".join(f"{k}={runs[k][-1]['wall_s']:.2f}s" for k in kinds),
                  flush=True)
    finally:
        common.lab_down(lab_dir)
    result: dict = {"computes": n, "hosts": n_hosts, "net": NETS[n], "lab_up_s": round(up_s, 1),
                    "batch_script_bytes": len(script), "warmup": warm, "runs": runs, "stats": {}}
    for k in kinds:
        result["stats"][k] = {metric: common.summary([x[metric] for x in runs[k]])
                              for metric in ("wall_s", "cpu_s", "peak_rss_mib", "tree_rss_mib", "machine_busy_cpu_s")}
        result["stats"][k]["all_ok"] = all(x["rc"] == 0 and x["hosts_ok"] == n_hosts for x in runs[k])
    for k in kinds[1:]:
        ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(runs["a"], runs[k])]
        result["stats"][f"a/{k}"] = common.summary(ratios)
    inner = [x["inner"] for x in runs["a"] if x.get("inner")]
    floor_inner = [x["inner"] for x in runs["b"] if x.get("inner")]
    if inner and floor_inner:
        result["stats"]["a_inner"] = {"import_s": common.summary([x["import_s"] for x in inner]),
                                      "work_s": common.summary([x["work_s"] for x in inner]),
                                      "raw_bytes": inner[0].get("raw_bytes"), "facts": inner[0].get("facts")}
        result["stats"]["b_inner"] = {"import_s": common.summary([x["import_s"] for x in floor_inner]),
                                      "work_s": common.summary([x["work_s"] for x in floor_inner])}
        result["stats"]["a/b_work_only"] = common.summary(
            [a["work_s"] / b["work_s"] for a, b in zip(inner, floor_inner)])
    return result


def table(results: list[dict]) -> str:
    lines = [f"{'N':>4} {'hosts':>5} | {'a preflight':>12} {'b floor':>9} {'c setup':>9} {'d shell':>9} | "
             f"{'a/b':>5} {'a/c':>5} {'a/d':>5} | {'a CPU s':>7} {'c CPU s':>7} | {'a RSS':>6} {'c tree RSS':>10}"]
    for r in results:
        s = r["stats"]
        g = lambda k, m="wall_s": s[k][m]["median"] if k in s else float("nan")  # noqa: E731
        ratio = lambda k: s[k]["median"] if k in s else float("nan")  # noqa: E731
        lines.append(f"{r['computes']:>4} {r['hosts']:>5} | {g('a'):>12.2f} {g('b'):>9.2f} {g('c'):>9.2f} "
                     f"{g('d'):>9.2f} | {ratio('a/b'):>5.2f} {ratio('a/c'):>5.3f} {ratio('a/d'):>5.3f} | "
                     f"{g('a', 'cpu_s'):>7.2f} {g('c', 'cpu_s'):>7.2f} | {g('a', 'peak_rss_mib'):>6.0f} "
                     f"{g('c', 'tree_rss_mib'):>10.0f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,10,30,100")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--out", default="preflight_scale.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 2
    ROOT.mkdir(parents=True, exist_ok=True)
    if not args.no_ansible:
        common.ensure_ansible()
    report = {"machine": common.machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "rounds": args.rounds, "targets": TARGETS, "results": []}
    path = None
    # ansible's remote temp dir defaults to ~/.ansible/tmp; the ns hosts share the machine's /root
    # for it, so an empty /root/.ansible appears: removed at the end if this run created it
    dot_ansible = Path("/root/.ansible")
    had_dot_ansible = dot_ansible.exists()
    try:
        for n in [int(x) for x in args.sizes.split(",")]:
            print(f"N={n}: lab up ({NETS[n]})", flush=True)
            report["results"].append(bench_n(n, args.rounds, not args.no_ansible))
            path = common.save(args.out, report)      # saved after every N: a later failure keeps the rest
    finally:
        if not had_dot_ansible and dot_ansible.exists():
            for d in sorted(dot_ansible.rglob("*"), reverse=True):
                if d.is_dir():
                    d.rmdir()          # only empty directories: anything else is left and reported
            dot_ansible.rmdir()
    print(table(report["results"]))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
