#!/bin/bash
# Install what the runbooks and their tests need, idempotently; sourced by demo.sh and test.sh.
#   - Debian packages (when root): Python venv support, OpenSSH (client, and sshd for the
#     tests' real SSH hosts), iproute2. The lab installs its own packages on `runbook lab up`.
#   - a virtualenv in .venv with this project installed (editable) and its test extras.
# Package scripts are never allowed to start daemons on this machine (policy-rc.d).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${RUNBOOK_VENV:-$HERE/.venv}
DEBS=(python3 python3-venv openssh-client openssh-server iproute2 util-linux procps libvirt-clients cron
      chromium fonts-dejavu-core)

say() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}"
    exit 2
  fi
  say "apt-get install ${missing[*]}"
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

# The venv is built from Debian's python3 (not a pyenv shim) so that it is the same
# interpreter on every machine; re-installed only when pyproject.toml changed.
stamp="$VENV/.runbook-installed"
want=$(sha256sum "$HERE/pyproject.toml" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "creating $VENV and installing the project"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e "$HERE[test]"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
