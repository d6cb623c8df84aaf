#!/bin/bash
# Run the whole test suite: installs what it needs, then pytest (extra arguments pass through).
# As root, the tests start real sshd hosts and bring up the lab (network namespaces).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
exec python -m pytest -ra "$@"
