#!/usr/bin/env python3
"""One benchmark workload, run as its own process by the benches (so its timing is whole-process).

    child.py preflight PARAMS   # runbook_lib.preflight.gather(site, site.hosts, Settings())
    child.py floor PARAMS       # runbook_lib.remote.Remote(site).run("true")
    child.py script PARAMS HOST # print batch_script(host_facts(site, HOST, Settings())) (for Ansible)

Prints one JSON line: in-process timings (imports, work) and a sanity summary; exits 1 if any
host was not reached (a benchmark of failures would be meaningless).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

T0 = time.monotonic()
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    mode, params_file = sys.argv[1], sys.argv[2]
    if mode == "floor":
        from runbook_lib import params
        from runbook_lib.remote import Remote
        t_import = time.monotonic()
        site = params.load(params_file)
        t_work = time.monotonic()
        with Remote(site) as remote:
            results = remote.run("true")
        done = time.monotonic()
        bad = [n for n, r in results.items() if not r.ok]
        out = {"hosts": len(results), "failed": bad}
    elif mode in ("preflight", "script"):
        from runbook_lib import facts, params, preflight
        from runbook_lib.checks import Settings
        t_import = time.monotonic()
        site = params.load(params_file)
        if mode == "script":
            sys.stdout.write(facts.batch_script(preflight.host_facts(site, site.host(sys.argv[3]), Settings())))
            return 0
        t_work = time.monotonic()
        gathered = preflight.gather(site, site.hosts, Settings())
        done = time.monotonic()
        bad = [n for n, hf in gathered.items() if not hf.reached or hf.parse_errors]
        out = {"hosts": len(gathered), "failed": bad,
               "facts": sum(len(hf.values) for hf in gathered.values()),
               "raw_bytes": sum(len(v) for hf in gathered.values() for v in hf.raw.values())}
    else:
        raise SystemExit(f"unknown mode {mode}")
    out.update(import_s=round(t_import - T0, 4), work_s=round(done - t_work, 4))
    print(json.dumps(out))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
