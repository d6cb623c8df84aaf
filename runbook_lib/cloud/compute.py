"""nova-compute for the lab's cloud: inside each lab compute host, or (without a lab) locally.

Inside a lab host
    The host gets what a deployment tool would give it: the cloud's settings merged into its own
    ``/etc/nova/nova.conf`` (the lab's legacy lines stay), ``/etc/nova/nova-compute.conf`` with
    the driver (Debian reads it after ``nova.conf``), and a ``nova-compute`` service for the
    host's service manager: a systemd unit on nspawn hosts, a sysv ``/etc/init.d`` script on ns
    hosts.  So ``service nova-compute restart`` on the host is a real restart, run as the host's
    ``nova`` user from the services venv (visible in the host read-only).  Files are written over
    the lab's SSH, as root, exactly as an operator's tooling would.

Node identity across restarts
    Nova refuses to start a compute whose node identity is missing after a first start ("No
    local node identity found, but this is not our first startup on this host. Refusing to start
    after potentially having lost that state!").  ``fake.FakeDriver`` derives node UUIDs from a
    per-process random sentinel, so every restart looks like lost state.
    ``fake.FakeDriverWithoutFakeNodes`` behaves like a real single-node driver: one node named
    after the host, its UUID kept in ``<state_path>/compute_id`` by Nova's own node-identity code.
    Restarts keep the same compute node and resource provider.

The libvirt driver (``virt_driver="libvirt"``)
    ``nova-compute.conf`` then names ``libvirt.LibvirtDriver`` with ``virt_type = qemu``; the
    service still runs as the host's ``nova`` user, who is added to the ``libvirt`` group as
    Debian's ``nova-compute-libvirt`` package does (polkit lets that group use
    ``qemu:///system``).  The libvirt Python bindings come from Debian's ``python3-libvirt``,
    unpacked into the lab's share (:func:`runbook_lib.cloud.install.ensure_libvirt_python`),
    which the launcher puts on ``sys.path``.  The unit starts after libvirtd.

The fake driver keeps its guests in memory, so a restarted nova-compute no longer "runs" the
guests it had; the periodic power-state sync is switched off so that Nova does not then stop
them in the database (a real hypervisor's guests survive a nova-compute restart).
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runbook_lib.cloud import config
from runbook_lib.cloud.conffile import merge_options
from runbook_lib.cloud.errors import CloudError, CloudStartError
from runbook_lib.cloud.layout import CloudPaths, CloudPlan, ComputeSize
from runbook_lib.lab.util import write_atomic

if TYPE_CHECKING:
    from runbook_lib.cloud.lifecycle import _Starter

HERE = Path(__file__).resolve().parent
LAUNCHER = "rblab-nova-compute"
SERVICE = "nova-compute"
#: Options only the computes get, on top of :func:`config.compute_nova_options`.
COMPUTE_EXTRA = {"DEFAULT": {"sync_power_state_interval": -1}}
#: Where lab hosts see Debian's libvirt Python bindings (the lab's share, read-only)
LIBVIRT_PYTHON_ON_HOST = "/usr/local/lib/rblab/python"


class ComputeTarget(Protocol):
    """Where one nova-compute runs and how it is started and stopped."""

    name: str
    address: str
    size: ComputeSize

    def record(self) -> dict[str, Any]:
        """What the cloud's state file keeps about this compute."""

    def install_and_start(self, plan: CloudPlan, secrets: config.Secrets, s: "_Starter") -> None:
        """Configure and start nova-compute (returns once it was started, not when it is up)."""

    def stop(self, state: dict[str, Any]) -> None:
        """Stop nova-compute (a no-op when it is already gone)."""


def install_launcher(paths: CloudPaths) -> Path:
    """Put the nova-compute launcher into the services venv as ``bin/rblab-nova-compute``."""
    target = paths.bin / LAUNCHER
    text = (HERE / "compute_launcher.py").read_text()
    write_atomic(target, f"#!{paths.venv / 'bin/python'}\n{text}", 0o755)
    return target


def compute_conf_files(plan: CloudPlan, secrets: config.Secrets, size: ComputeSize,
                       seeded: str, virt_driver: str = "fake") -> tuple[str, str]:
    """(new ``nova.conf``, ``nova-compute.conf``) of a compute whose nova.conf is ``seeded``."""
    options = config.compute_nova_options(plan, secrets)
    for section, values in COMPUTE_EXTRA.items():
        options.setdefault(section, {}).update(values)
    driver_conf = (config.libvirt_driver_conf() if virt_driver == "libvirt"
                   else config.compute_driver_conf(size))
    return merge_options(seeded, options), driver_conf


# ------------------------------------------------------------------------------- local computes
class LocalCompute:
    """nova-compute as a process on this machine (``[DEFAULT] host = <name>``): no lab needed."""

    kind = "local"

    def __init__(self, name: str, address: str, size: ComputeSize, paths: CloudPaths) -> None:
        self.name, self.address, self.size, self.paths = name, address, size, paths

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "address": self.address,
                "size": [self.size.vcpus, self.size.memory_mb, self.size.disk_gb]}

    def config_files(self) -> tuple[Path, Path]:
        return self.paths.etc / f"{self.name}-nova.conf", self.paths.etc / f"{self.name}-compute.conf"

    def install_and_start(self, plan: CloudPlan, secrets: config.Secrets, s: "_Starter") -> None:
        state_path = self.paths.data / self.name
        (state_path / "tmp").mkdir(parents=True, exist_ok=True)
        seeded = (f"[DEFAULT]\nhost = {self.name}\nmy_ip = {self.address}\n"
                  f"state_path = {state_path}\n")
        nova_conf, driver_conf = compute_conf_files(plan, secrets, self.size, seeded)
        nova_conf = merge_options(nova_conf, {
            "DEFAULT": {"log_dir": str(self.paths.log), "log_file": f"{self.name}.log"},
            "oslo_concurrency": {"lock_path": str(state_path / "tmp")}})
        conf, driver = self.config_files()
        write_atomic(conf, nova_conf, 0o600)
        write_atomic(driver, driver_conf, 0o600)
        launcher = install_launcher(self.paths)
        s.start(f"nova-compute-{self.name}", [str(launcher), "--config-file", str(conf),
                                               "--config-file", str(driver)])

    def stop(self, state: dict[str, Any]) -> None:
        # recorded with the controller-side processes: stopped with them
        return None


# --------------------------------------------------------------------------------- lab computes
def _driver_words(virt_driver: str) -> str:
    return ("Nova's libvirt driver (QEMU TCG)" if virt_driver == "libvirt"
            else "Nova's fake virt driver")


def systemd_unit(paths: CloudPaths, virt_driver: str = "fake") -> str:
    """``/etc/systemd/system/nova-compute.service`` of an nspawn lab host."""
    after = "network.target libvirtd.service" if virt_driver == "libvirt" else "network.target"
    return f"""\
# runbook lab: nova-compute with {_driver_words(virt_driver)}, from the lab's services venv
# (bound read-only into this host); generated by runbook_lib.cloud
[Unit]
Description=OpenStack Compute (nova-compute)
After={after}

[Service]
Type=simple
User=nova
Group=nova
ExecStart={paths.bin / LAUNCHER} --config-file=/etc/nova/nova.conf --config-file=/etc/nova/nova-compute.conf --log-file=/var/log/nova/nova-compute.log
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
KillMode=mixed

[Install]
WantedBy=multi-user.target
"""


def sysv_script(paths: CloudPaths, virt_driver: str = "fake") -> str:
    """``/etc/init.d/nova-compute`` of an ns lab host (``service nova-compute start|stop|...``)."""
    return f"""\
#!/bin/sh
### BEGIN INIT INFO
# Provides:          nova-compute
# Required-Start:    $network $local_fs $remote_fs
# Required-Stop:     $remote_fs
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: OpenStack Compute (nova-compute)
### END INIT INFO
# runbook lab: nova-compute with {_driver_words(virt_driver)}, from the lab's services venv;
# generated by runbook_lib.cloud
NAME=nova-compute
DAEMON={paths.bin / LAUNCHER}
DAEMON_ARGS="--config-file=/etc/nova/nova.conf --config-file=/etc/nova/nova-compute.conf --log-file=/var/log/nova/nova-compute.log"
PIDFILE=/run/nova/$NAME.pid
OUTPUT=/var/log/nova/$NAME.out
[ -r /etc/default/$NAME ] && . /etc/default/$NAME

do_start() {{
    mkdir -p /run/nova /var/log/nova /var/lib/nova/tmp
    chown nova:nova /run/nova /var/log/nova /var/lib/nova/tmp
    start-stop-daemon --start --quiet --background --make-pidfile --pidfile $PIDFILE \\
        --chuid nova:nova --output $OUTPUT --startas $DAEMON --name python3 -- $DAEMON_ARGS
}}

do_stop() {{
    start-stop-daemon --stop --quiet --retry TERM/20/KILL/5 --pidfile $PIDFILE --remove-pidfile
    rc=$?
    [ $rc -eq 1 ] && rc=0     # "nothing was running" is a successful stop
    return $rc
}}

case "$1" in
    start)   echo "Starting $NAME"; do_start ;;
    stop)    echo "Stopping $NAME"; do_stop ;;
    restart|force-reload) echo "Restarting $NAME"; do_stop && do_start ;;
    status)
        if start-stop-daemon --status --pidfile $PIDFILE; then
            echo "$NAME is running"
        else
            echo "$NAME is not running"; exit 3
        fi ;;
    *) echo "Usage: $0 {{start|stop|restart|force-reload|status}}" >&2; exit 3 ;;
esac
"""


class LabCompute:
    """nova-compute inside a lab compute host, run by that host's service manager."""

    kind = "lab"

    def __init__(self, name: str, address: str, size: ComputeSize, mode: str,
                 paths: CloudPaths, virt_driver: str = "fake") -> None:
        self.name, self.address, self.size, self.mode, self.paths = name, address, size, mode, paths
        self.virt_driver = virt_driver

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "address": self.address, "mode": self.mode,
                "size": [self.size.vcpus, self.size.memory_mb, self.size.disk_gb],
                "virt_driver": self.virt_driver}

    def ssh(self, script: str, *, input: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with ``sh -ec`` on the host, as root, over the lab's SSH."""
        argv = ["ssh", "-F", str(self.paths.lab_dir / "ssh_config"), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", self.name, f"sh -ec {shlex.quote(script)}"]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise CloudError(f"{self.name}: `{script.splitlines()[0][:80]}` failed "
                             f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-400:]}")
        return proc

    def put(self, path: str, text: str, mode: str, owner: str) -> None:
        """Write a file on the host atomically (via a temporary file and ``mv``)."""
        tmp = f"{path}.rblab-new"
        self.ssh(f"umask 077; cat > {shlex.quote(tmp)}; chmod {mode} {shlex.quote(tmp)}; "
                 f"chown {owner} {shlex.quote(tmp)}; mv -f {shlex.quote(tmp)} {shlex.quote(path)}",
                 input=text)

    def install_and_start(self, plan: CloudPlan, secrets: config.Secrets, s: "_Starter") -> None:
        install_launcher(self.paths)
        probe = self.ssh(f"test -x {shlex.quote(str(self.paths.bin / LAUNCHER))} && "
                         "cat /etc/nova/nova.conf", check=False)
        if probe.returncode != 0:
            raise CloudStartError(
                f"{self.name} cannot see the services venv at {self.paths.venv} or has no "
                f"/etc/nova/nova.conf: {probe.stderr.strip()[-300:]}")
        nova_conf, driver_conf = compute_conf_files(plan, secrets, self.size, probe.stdout,
                                                    self.virt_driver)
        self.put("/etc/nova/nova.conf", nova_conf, "0640", "root:nova")
        self.put("/etc/nova/nova-compute.conf", driver_conf, "0640", "root:nova")
        self.ssh("mkdir -p /var/log/nova /var/lib/nova/tmp; "
                 "chown nova:nova /var/log/nova /var/lib/nova /var/lib/nova/tmp")
        if self.virt_driver == "libvirt":
            # as Debian's nova-compute-libvirt does: nova may use qemu:///system (polkit rule
            # of the libvirt group)
            probe = self.ssh(f"test -r {shlex.quote(LIBVIRT_PYTHON_ON_HOST)}/libvirt.py",
                             check=False)
            if probe.returncode != 0:
                raise CloudStartError(f"{self.name} has no libvirt Python bindings at "
                                      f"{LIBVIRT_PYTHON_ON_HOST} (the lab's share)")
            # (libvirtd itself: socket-activated on nspawn hosts, started at boot on ns hosts)
            self.ssh("usermod -a -G libvirt nova")
        if self.mode == "nspawn":
            self.put("/etc/systemd/system/nova-compute.service",
                     systemd_unit(self.paths, self.virt_driver), "0644", "root:root")
            self.ssh("systemctl daemon-reload; systemctl enable --now nova-compute.service "
                     ">/dev/null 2>&1 || (systemctl status --no-pager nova-compute.service; "
                     "exit 1)")
        else:
            self.put("/etc/init.d/nova-compute", sysv_script(self.paths, self.virt_driver),
                     "0755", "root:root")
            self.ssh("service nova-compute start")

    def service(self, action: str) -> subprocess.CompletedProcess[str]:
        """``service nova-compute ACTION`` on the host (systemd or sysv alike)."""
        return self.ssh(f"service nova-compute {shlex.quote(action)}", check=False)

    def stop(self, state: dict[str, Any]) -> None:
        try:
            self.ssh("if [ -e /etc/systemd/system/nova-compute.service ] || "
                     "[ -e /etc/init.d/nova-compute ]; then service nova-compute stop; fi",
                     timeout=40)
        except (subprocess.TimeoutExpired, CloudError) as exc:
            raise CloudError(f"{self.name}: could not stop nova-compute: {exc}") from exc
