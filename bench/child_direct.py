#!/usr/bin/env python3
"""The 00_preflight notebook's code cells, run directly in one plain Python process.

    child_direct.py PARAMS

No papermill, no Jupyter kernel, no archive, no HTML: the same library calls, in the same order,
with the parameters cell's defaults and ``params_file = PARAMS`` (what ``runbook run -p`` gives
the notebook).  The baseline of bench/runbook_overhead.py.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

T0 = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    import nbformat
    nb = nbformat.read(REPO / "notebooks" / "00_preflight.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    ns: dict = {"__name__": "__main__"}
    exec(compile(code[0], "parameters", "exec"), ns)          # the parameters cell's defaults
    ns["params_file"] = sys.argv[1]
    for i, src in enumerate(code[1:], 1):
        exec(compile(src, f"cell {i}", "exec"), ns)
    print(f"direct: {time.monotonic() - T0:.2f} s in-process", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
