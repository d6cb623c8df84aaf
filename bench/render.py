#!/usr/bin/env python3
"""Render the benchmark JSON in bench/results/ as tables (Markdown), for docs/benchmarks.md.

    .venv/bin/python bench/render.py            # print the tables
    .venv/bin/python bench/render.py --write    # replace the generated section of docs/benchmarks.md

docs/benchmarks.md keeps its hand-written method and discussion; only the text between the
``<!-- generated -->`` and ``<!-- /generated -->`` markers is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DOC = HERE.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- generated -->", "<!-- /generated -->"


def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def mm(s: dict, digits: int = 2) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def preflight_tables(data: dict) -> list[str]:
    out = [f"### 1. Preflight vs floor vs Ansible (measured {data['when']}, {data['rounds']} rounds, "
           f"medians (min–max), whole processes)", "",
           "| N computes (hosts) | a: preflight gather | b: floor `Remote.run('true')` | c: `ansible -m setup` | "
           "d: `ansible -m shell` batch | a/b | a/c | a/d |", "|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        s = r["stats"]
        cell = lambda k: mm(s[k]["wall_s"]) + " s" if k in s else "–"  # noqa: E731
        ratio = lambda k: mm(s[k]) if k in s else "–"  # noqa: E731
        out.append(f"| {r['computes']} ({r['hosts']}) | {cell('a')} | {cell('b')} | {cell('c')} | {cell('d')} | "
                   f"{ratio('a/b')} | {ratio('a/c')} | {ratio('a/d')} |")
    out += ["", "All runs reached every host: " + ", ".join(
        f"N={r['computes']}: " + "/".join(f"{k}={'yes' if r['stats'][k]['all_ok'] else 'NO'}"
                                          for k in ("a", "b", "c", "d") if k in r["stats"])
        for r in data["results"]), ""]
    out += ["Targets: " + "; ".join(
        [f"a/c ≤ 0.15 at N={r['computes']}: {r['stats']['a/c']['median']:.2f} {mark(r['stats']['a/c']['median'] <= 0.15)}"
         for r in data["results"] if "a/c" in r["stats"]]
        + [f"a/b ≤ {lim} at N={n}: {r['stats']['a/b']['median']:.2f} {mark(r['stats']['a/b']['median'] <= lim)}"
           for n, lim in ((3, 1.3), (30, 2.5)) for r in data["results"] if r["computes"] == n]), ""]
    out += ["In-process split of a and b (their own timers; medians): imports, then the work itself.", "",
            "| N | a imports s | a gather s | b imports s | b run s | a/b work only | facts | raw output bytes |",
            "|---|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        s = r["stats"]
        if "a_inner" in s:
            out.append(f"| {r['computes']} | {s['a_inner']['import_s']['median']:.2f} | {s['a_inner']['work_s']['median']:.2f} | "
                       f"{s['b_inner']['import_s']['median']:.2f} | {s['b_inner']['work_s']['median']:.2f} | "
                       f"{s['a/b_work_only']['median']:.2f} | {s['a_inner']['facts']} | {s['a_inner']['raw_bytes']} |")
    out += ["", "### 4. How cost grows with N (medians)", "",
            "| N | tool | wall s | client CPU s (user+sys, process tree) | machine busy CPU s (2 cores, incl. lab hosts) | "
            "peak RSS MiB (largest process) | peak RSS MiB (sum over process tree) |", "|---|---|---|---|---|---|---|"]
    names = {"a": "a preflight", "b": "b floor", "c": "c ansible setup", "d": "d ansible shell"}
    for r in data["results"]:
        for k in ("a", "b", "c", "d"):
            if k in r["stats"]:
                s = r["stats"][k]
                out.append(f"| {r['computes']} | {names[k]} | {s['wall_s']['median']:.2f} | {s['cpu_s']['median']:.2f} | "
                           f"{s['machine_busy_cpu_s']['median']:.2f} | {s['peak_rss_mib']['median']:.0f} | "
                           f"{s['tree_rss_mib']['median']:.0f} |")
    out += ["", "Lab start (`lab.up`, ns, warm cache): " + ", ".join(
        f"N={r['computes']} {r['lab_up_s']} s" for r in data["results"]) + ".", ""]
    warm = [(r["computes"], r["warmup"]["a"]["wall_s"]) for r in data["results"] if "warmup" in r]
    if warm:
        out += ["First preflight on freshly started hosts (warm-up, not counted: libvirt fills its QEMU "
                "capability cache on the first call): " + ", ".join(f"N={n} {w:.2f} s" for n, w in warm) + ".", ""]
    return out


def runbook_table(data: dict) -> list[str]:
    s = data["stats"]
    return [f"### 2. Runbook overhead, N = 3 (measured {data['when']}, {data['rounds']} paired rounds)", "",
            "| | wall s | client CPU s | peak RSS MiB (process tree) |", "|---|---|---|---|",
            f"| A: `runbook run 00_preflight` (papermill, kernel, archive, HTML) | {mm(s['A_wall_s'])} | "
            f"{mm(s['A_cpu_s'])} | {s['A_tree_rss_mib']['median']:.0f} |",
            f"| B: the notebook's cells called directly in one process | {mm(s['B_wall_s'])} | {mm(s['B_cpu_s'])} | "
            f"{s['B_tree_rss_mib']['median']:.0f} |",
            f"| **A − B (paired)** | **{mm(s['overhead_s'])}** | {mm(s['overhead_cpu_s'])} | |", "",
            f"Target ≤ {data['target_s']:g} s: {mark(s['overhead_s']['median'] <= data['target_s'])}. "
            f"Exit codes of A: {s['A_rc']} (1 = the seeded lab has problems, as expected); archived: "
            f"{', '.join(s.get('archived_files') or [])}.", ""]


def migrate_tables(data: dict) -> list[str]:
    s = data["single"]
    out = [f"### 3. Migration orchestration (measured {data['when']}; lab + cloud up in {data['lab_plus_cloud_up_s']} s)", "",
           "| | seconds per migration, median (min–max) |", "|---|---|",
           f"| A: `migrate.migrate` (the 20_migrate step) | {mm(s['A_s'])} |",
           f"| B: `api.live_migrate` (the raw path) | {mm(s['B_s'])} |",
           f"| A − B (paired) | {mm(s['A_minus_B_s'])} |", f"| A / B (paired) | {mm(s['A_over_B'])} |", "",
           f"Every migration verified: {'yes' if s['all_ok'] else 'NO'}. Polling intervals: migrate.migrate "
           f"{s['polling_interval_s']['migrate.migrate']} s, api.live_migrate {s['polling_interval_s']['api.live_migrate']} s.", "",
           f"Host drain of {data['guests']} guests (ideal = ceil(M/k) × median A):", "",
           "| k | drained host | wall s | ideal s | ratio | per-migration s | verified | left |",
           "|---|---|---|---|---|---|---|---|"]
    for d in data["drains"]:
        out.append(f"| {d['concurrency']} | {d['source']} | {d['wall_s']:.2f} | {d['ideal_s']:.2f} | {d['ratio']:.2f} | "
                   f"{', '.join(str(x) for x in d['migration_s'])} | {d['verified']} | {d['left']} |")
    out += [""] + [f"Drain at k={k}: {v['median']:.2f}× ideal (target ≤ {data['target_drain_ratio']}): "
                   f"{mark(v['median'] <= data['target_drain_ratio'])}." for k, v in data["drain_ratio_by_k"].items()] + [""]
    return out


def render() -> str:
    lines: list[str] = []
    pf = load("preflight_scale.json")
    if pf:
        m = pf["machine"]
        lines += [f"Machine: {m['cpus']} CPUs, {m['mem_total_mib']} MiB, kernel {m['kernel']}, Python {m['python']}, "
                  f"Fabric {m['fabric']}, Paramiko {m['paramiko']}, {m['openssh']}, {m['ansible']}; "
                  f"load average at start {', '.join(f'{x:.1f}' for x in m['load_avg_at_start'])}.", ""]
        lines += preflight_tables(pf)
    rb = load("runbook_overhead.json")
    if rb:
        lines += runbook_table(rb)
    mg = load("migrate_overhead.json")
    if mg:
        lines += migrate_tables(mg)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    text = render()
    if not args.write:
        print(text)
        return 0
    doc = DOC.read_text()
    if BEGIN not in doc or END not in doc:
        print(f"{DOC} has no {BEGIN} ... {END} section", file=sys.stderr)
        return 1
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
