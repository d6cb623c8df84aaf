"""``python -m runbook_lib.diagnose [--json] FILE|- ...``: the diagnose command on its own."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
