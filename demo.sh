#!/bin/bash
# The main job on the embedded lab: bring the lab up (a no-op when it is up), then run the
# preflight runbook against it and archive the run. Extra arguments go to `runbook lab up`.
set -uo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh || exit 2
runbook lab up "$@" || exit 2
lab_dir=${RUNBOOK_LAB_DIR:-/var/lib/runbook-lab}
runbook run 00_preflight -p "$lab_dir/params.yaml"
rc=$?
echo
echo "archive: $(pwd)/runs   (list it with: .venv/bin/runbook runs)"
echo "the lab stays up for more runs; stop it with: .venv/bin/runbook lab down"
echo "next, on the lab: .venv/bin/runbook run 10_configure -p $lab_dir/params.yaml -P transport=tcp -P insecure_lab_transport=true -P storage=nfs [-P apply=true]"
# 1 = the runbook found problems: the expected outcome on a fresh, not-yet-configured lab
[ $rc -le 1 ] && exit 0 || exit $rc
