"""``python -m runbook_lib.lab up|down|status``."""

import sys

from runbook_lib.lab.cli import main

sys.exit(main())
