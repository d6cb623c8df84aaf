"""Make the README's walkthrough screenshots: every phase notebook run in JupyterLab, in Chromium.

Not a test (the test is ``test_jupyterlab.py``): it needs a lab *with* the cloud, boots a few
servers in it, migrates one and drains a compute — run it on a throw-away lab only::

    .venv/bin/runbook lab up --computes 2 --mode ns --net 198.18.30.0/24   # or lab.up(..., lab_dir=...)
    .venv/bin/python -m tests.browser.walkthrough --params /var/lib/runbook-lab/params.yaml \
        --out docs/walkthrough

Each phase's notebook is copied with its parameters set, opened in JupyterLab (loopback,
token), run with Run > Run All Cells, and photographed at the cell that matters.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import jlab  # type: ignore[no-redef]
else:
    from . import jlab

#: phase → (parameters, the cell to show at the top of the screenshot, the cell to photograph alone)
PHASES: dict[str, tuple[dict, str, str | None]] = {
    "00_preflight": ({}, "widgets.pair_picker(", "plots.pairwise(pairs)"),
    "10_configure": ({"storage": "nfs"}, "report.Table(the_plan", "the_plan.diff()"),
    "20_migrate": ({"server": "srv-a", "destination_host": "compute2", "check_hosts": False, "apply": True},
                   "migrate.run_if(", "plots.migration_progress(outcome)"),
    "30_troubleshoot": ({"source_host": "compute1", "destination_host": "compute2"},
                        "troubleshoot.explain(", None),
    "40_maintenance": ({"host": "compute2", "concurrency": 2, "apply": True}, "migrate.drain_if(",
                       "plots.drain_timeline(drained)"),
}


def boot_servers(params_file: Path) -> None:
    """srv-a on compute1 (migrated to compute2), srv-b on compute2 (compute2 is then drained of both)."""
    from runbook_lib import params
    from runbook_lib.cloud import api
    from runbook_lib.cloud.layout import IMAGE_ID

    site = params.load(params_file)
    conn = api.connect(site.cloud, site.clouds_yaml)
    have = {s["name"] for s in api.list_servers(conn)}
    for name, host in (("srv-a", "compute1"), ("srv-b", "compute2")):
        if name not in have:
            api.boot(conn, name, IMAGE_ID, "m1.tiny", host=host)
    conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", required=True, type=Path, help="the lab's params.yaml (a lab with the cloud)")
    ap.add_argument("--out", type=Path, default=jlab.ROOT / "docs" / "walkthrough")
    ap.add_argument("--phases", nargs="*", default=list(PHASES))
    args = ap.parse_args(argv)
    why = jlab.missing_prerequisite()
    if why:
        print(why, file=sys.stderr)
        return 2
    if {"20_migrate", "40_maintenance"} & set(args.phases):
        boot_servers(args.params)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="walkthrough-") as tmp:
        work = Path(os.environ.get("RUNBOOK_WALKTHROUGH_WORK") or tmp)
        for phase in args.phases:
            jlab.notebook_copy(jlab.ROOT / "notebooks" / f"{phase}.ipynb", work / "notebooks",
                               params_file=str(args.params), **PHASES[phase][0])
        server = jlab.JupyterLab(root_dir=work / "notebooks", state_dir=work).start()
        browser = jlab.Browser(work / "profile", work / "shots")
        try:
            for phase in args.phases:
                _, top, alone = PHASES[phase]
                t0 = time.monotonic()
                page = browser.page
                jlab.open_notebook(page, server, f"{phase}.ipynb")
                before = jlab.run_all(page)
                try:
                    jlab.wait_all_executed(page, before, timeout=900)
                finally:
                    browser.shot(f"{phase}_ran")
                errors = jlab.errors_shown(page)
                if errors:
                    print(f"{phase}: error shown: {errors[0][-600:]}")
                page.evaluate("el => el.scrollIntoView({block: 'start'})", jlab.cell_with(page, top).element_handle())
                time.sleep(1)
                shutil.copy(browser.shot(phase), args.out / f"{phase}.png")
                if alone:
                    cell = jlab.cell_with(page, alone)
                    cell.scroll_into_view_if_needed()
                    shutil.copy(browser.shot(f"{phase}_plot", cell), args.out / f"{phase}_detail.png")
                print(f"{phase}: {time.monotonic() - t0:.0f} s" + (f", {len(errors)} error output(s)" if errors else ""))
                browser.page = browser.context.new_page()  # a fresh tab per phase: nothing left over
                browser.page.set_default_timeout(60_000)
                page.close()
        finally:
            browser.close()
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
