"""Bringing the lab up and down: the steps behind ``runbook lab up|down|status``.

``up``
    packages -> caches (guest; rootfs in nspawn mode) -> keys -> [record] -> network -> hosts
    -> wait until every sshd accepts the lab key (and, with nspawn, systemd finished booting)
    -> ``params.yaml``.  Any failure or interruption undoes what was started, then re-raises.
``down``
    kill each host's namespace init (SIGKILL: the PID-namespace init ignores SIGTERM from
    outside, and its death takes every process of the host with it), then its launcher;
    delete netns, veths, bridge; remove runtime files.  Idempotent: a ``down`` interrupted half
    way is finished by the next ``down`` or ``up``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.lab import net
from runbook_lib.lab.errors import LabBootError, LabConflictError, LabError, LabPrerequisiteError
from runbook_lib.lab.guest import GUEST_NAME, SERIAL_LOG, ensure_guest
from runbook_lib.lab.keys import ensure_keypair, write_client_files
from runbook_lib.lab.layout import (DEFAULT_NET, MAX_LAB_ID, MODES, HostSpec, LabPaths, bridge_address,
                                    bridge_name, parse_net, plan_hosts, prefix_for, resolve_cache_dir,
                                    resolve_lab_dir)
from runbook_lib.lab.packages import ensure_host_packages
from runbook_lib.lab.rootfs import ensure_rootfs
from runbook_lib.lab.state import (LabStatus, alive, inspect, mounts_under, proc_ref, read_state,
                                   write_state)
from runbook_lib.lab.util import children, locked, pid_namespace, run, write_atomic

Echo = Callable[[str], None]
HERE = Path(__file__).resolve().parent
GLOBAL_LOCK = Path("/run/runbook-lab.lock")
SHARE_MOUNT = "/usr/local/lib/rblab"
BOOT_TIMEOUT = {"ns": 60.0, "nspawn": 120.0}
#: services an ns host starts with Debian's sysv scripts (nspawn hosts: whatever systemd enables)
NS_SERVICES = {"controller": ["ssh", "rpcbind"], "compute": ["ssh", "virtlogd", "libvirtd"]}
#: host launchers started by this process, by PID: reaped by `down` when they exit
_LAUNCHED: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class LabHost:
    """One host of a running lab."""

    name: str
    role: str
    address: str
    netns: str


@dataclass(frozen=True)
class LabInfo:
    """What :func:`up` brought up (or found already up) and where its files are."""

    lab_dir: Path
    mode: str
    net: str
    lab_id: int
    prefix: str
    bridge: str
    hosts: tuple[LabHost, ...]
    params_file: Path
    ssh_config: Path
    known_hosts: Path
    key_file: Path
    guest_xml: Path
    already_up: bool
    seconds: float
    guest_name: str = GUEST_NAME
    guest_serial_log: str = SERIAL_LOG
    #: ``clouds.yaml`` of the lab's cloud (cloud ``lab``), or None when it runs without one
    clouds_yaml: Path | None = None

    @property
    def computes(self) -> tuple[LabHost, ...]:
        """The compute hosts, in order."""
        return tuple(h for h in self.hosts if h.role == "compute")

    def host(self, name: str) -> LabHost:
        """The host called ``name``."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


def _paths(lab_dir: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None) -> LabPaths:
    root = resolve_lab_dir(lab_dir)
    return LabPaths(root, resolve_cache_dir(root, cache_dir))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabPrerequisiteError("the lab needs root (network namespaces, mounts, bridges): "
                                   "run it as root")


def _info(paths: LabPaths, state: dict[str, Any], already_up: bool, seconds: float) -> LabInfo:
    hosts = tuple(LabHost(h["name"], h["role"], h["address"], h["netns"]) for h in state["hosts"])
    clouds_yaml = paths.root / "clouds.yaml"
    return LabInfo(paths.root, state["mode"], state["net"], state["lab_id"], state["prefix"],
                   state["bridge"], hosts, paths.params, paths.ssh_config, paths.known_hosts,
                   paths.key, paths.guest / "domain.xml", already_up, seconds,
                   clouds_yaml=clouds_yaml if clouds_yaml.exists() else None)


# ------------------------------------------------------------------------------------ the cloud
def _cloud_venv(paths: LabPaths) -> Path:
    from runbook_lib.cloud.layout import default_venv   # lazy: runbook_lib.cloud imports the lab
    return default_venv(paths.cache)


def _cloud_prepare(paths: LabPaths, echo: Echo) -> None:
    """Install what the cloud runs on before the hosts start (nspawn hosts bind the venv)."""
    from runbook_lib.cloud import install
    install.ensure_debian_packages(echo=echo)
    install.ensure_venv(_cloud_venv(paths), echo=echo)


def _cloud_up(paths: LabPaths, compute_sizes: Any, echo: Echo,
              virt_driver: str | None = None) -> None:
    from runbook_lib import cloud
    kwargs = {"sizes": tuple(compute_sizes)} if compute_sizes else {}
    if virt_driver == "libvirt":
        _share_libvirt_python(paths, echo)
    cloud.up(paths.root, cache_dir=paths.cache, echo=echo, virt_driver=virt_driver, **kwargs)


def _share_libvirt_python(paths: LabPaths, echo: Echo) -> None:
    """Debian's libvirt Python bindings into the share (hosts: /usr/local/lib/rblab/python),
    and the Debian packages the libvirt-driver computes install (``debs/``: sudo, qemu-utils)."""
    from runbook_lib.cloud import install
    source = install.ensure_libvirt_python(paths.cache, echo=echo)
    (paths.share / "debs").mkdir(exist_ok=True)
    (paths.share / "debs").chmod(0o755)
    for deb in install.ensure_compute_debs(paths.cache, echo=echo):
        shutil.copyfile(deb, paths.share / "debs" / deb.name)
    target = paths.share / "python"
    if (target / "libvirt.py").exists():
        return
    staging = paths.share / ".python.new"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    staging.chmod(0o755)
    staging.rename(target)


def _params_name_the_cloud(paths: LabPaths) -> None:
    """Point the lab's params file at its cloud (cloud ``lab`` in ``<lab_dir>/clouds.yaml``)."""
    clouds_yaml = paths.root / "clouds.yaml"
    if not paths.params.exists() or not clouds_yaml.exists():
        return
    lines = [line for line in paths.params.read_text().splitlines()
             if not line.startswith(("cloud:", "clouds_yaml:"))]
    lines += ["cloud: lab", f"clouds_yaml: {clouds_yaml}"]
    write_atomic(paths.params, "\n".join(lines) + "\n")


def _cloud_down(paths: LabPaths, echo: Echo) -> None:
    """Stop the lab's cloud (its computes die with the hosts, so they are not stopped one by one)."""
    from runbook_lib import cloud
    if (paths.root / "cloud").exists() or (paths.root / "clouds.yaml").exists():
        cloud.down(paths.root, stop_computes=False, echo=echo)


# --------------------------------------------------------------------------------------------- up
def up(computes: int = 2, mode: str = "nspawn", net: str = DEFAULT_NET,
       lab_dir: str | os.PathLike[str] | None = None, *,
       cache_dir: str | os.PathLike[str] | None = None, install: bool = True,
       cloud: bool = True, compute_sizes: Any = None, virt_driver: str | None = None,
       echo: Echo = print) -> LabInfo:
    """Bring the lab up (or find it up already).

    Parameters
    ----------
    computes
        Number of compute hosts besides the controller.
    mode
        ``"nspawn"`` (each host boots systemd from the cached Debian rootfs) or ``"ns"``
        (namespaces over the machine's own programs, sysv ``service`` scripts; fast, scales).
    net
        The lab's IPv4 network; refused if any address or route of this machine overlaps it.
    lab_dir
        Lab directory (default ``$RUNBOOK_LAB_DIR`` or ``/var/lib/runbook-lab``).
    cache_dir
        Where the rootfs and guest are cached (default ``$RUNBOOK_LAB_CACHE`` or
        ``<lab_dir>/cache``); labs may share one.
    install
        Install missing Debian packages on this machine first.
    cloud
        Also bring up the lab's cloud (:mod:`runbook_lib.cloud`: Keystone, Placement, Nova with
        a nova-compute in every compute host) and write ``<lab_dir>/clouds.yaml``.
    compute_sizes
        :class:`runbook_lib.cloud.ComputeSize` of compute1, compute2, ... as the fake virt
        driver reports them (default 4 vCPU / 8 GiB, then 2 vCPU / 4 GiB).
    virt_driver
        The computes' nova-compute driver: ``"fake"`` (Nova's fake driver, the default for a
        new lab) or ``"libvirt"`` (each compute's libvirtd runs the cloud's guests under QEMU
        TCG; the image service then serves a bootable guest, image
        :data:`runbook_lib.cloud.layout.GUEST_IMAGE_ID` with flavor ``rblab.guest``).
        ``None``: the running cloud's driver, else ``"fake"``.
    echo
        Progress messages go here.

    Returns
    -------
    LabInfo
        ``already_up`` tells whether this call found the same lab running and did nothing.

    Raises
    ------
    LabConflictError
        The network is used on this machine by something that is not this lab, or a different
        lab is up in this directory.
    LabBootError
        A host did not come up (the message names its log).
    LabPrerequisiteError
        Not root, or packages could not be installed.
    """
    started = time.monotonic()
    _require_root()
    if mode not in MODES:
        raise LabError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    network = parse_net(net)
    paths = _paths(lab_dir, cache_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o755)          # qemu (user libvirt-qemu) must reach the cached guest kernel
    with locked(paths.lock):
        state = read_state(paths)
        found = inspect(paths, state)
        if found.state == "up" and state is not None:
            wanted = (mode, str(network), computes)
            have = (state["mode"], state["net"], len(state["hosts"]) - 1)
            if wanted != have:
                raise LabConflictError(
                    f"a different lab is up in {paths.root} (mode {have[0]}, net {have[1]}, "
                    f"{have[2]} computes); run `runbook lab down` first")
            echo(f"lab already up in {paths.root} ({state['mode']}, {len(state['hosts'])} hosts, "
                 f"{state['net']}); nothing to do. Parameters: {paths.params}")
            if cloud:
                # a no-op when the cloud is up too
                _cloud_up(paths, compute_sizes, echo, virt_driver)
                _params_name_the_cloud(paths)
            return _info(paths, state, True, time.monotonic() - started)
        if found.state == "broken":
            what = "; ".join(found.problems + found.leftovers) or "stale record"
            echo(f"clearing leftovers of an earlier lab in {paths.root}: {what}")
            _teardown(paths, state, echo)
        if install:
            added = ensure_host_packages(mode)
            if added:
                echo(f"installed Debian packages: {' '.join(added)}")
        ensure_guest(paths.guest, echo=echo)
        if mode == "nspawn":
            ensure_rootfs(paths.rootfs, paths.cache / "rootfs-build.log", echo=echo)
        if cloud and install:
            _cloud_prepare(paths, echo)
        state = {}
        try:
            state = _start(paths, network, computes, mode, echo)
            if cloud:
                _cloud_up(paths, compute_sizes, echo, virt_driver)
                _params_name_the_cloud(paths)
        except BaseException:
            # ^C, a killed host, a timeout: leave nothing behind, then report the cause
            echo("lab up did not complete; removing what it started")
            with _signals_deferred():
                _teardown(paths, read_state(paths) or state or None, lambda _m: None)
            raise
    seconds = time.monotonic() - started
    echo(f"lab up in {seconds:.1f} s ({mode}): "
         + ", ".join(f"{h['name']}={h['address']}" for h in state["hosts"]))
    echo(f"parameters: {paths.params}    ssh: ssh -F {paths.ssh_config} compute1")
    return _info(paths, state, False, seconds)


def _pick_lab_id(preferred: int | None) -> int:
    """The lowest lab id whose ``rblab<ID>-`` names are unused on this machine."""
    used_links = list(net.links("rblab"))
    used_netns = net.netns_names("rblab")

    def free(lab_id: int) -> bool:
        prefix = prefix_for(lab_id)
        return not any(n.startswith(prefix) for n in used_links + used_netns)

    if preferred is not None and free(preferred):
        return preferred
    for lab_id in range(MAX_LAB_ID + 1):
        if free(lab_id):
            return lab_id
    raise LabConflictError("every lab id 0..999 is in use on this machine")


def _install_share(paths: LabPaths) -> None:
    """Helpers every host sees read-only at /usr/local/lib/rblab (and mount.nfs over its own)."""
    paths.share.mkdir(parents=True, exist_ok=True)
    for name in ("hostinit.py", "nfsfuse.py"):
        shutil.copyfile(HERE / name, paths.share / name)
        (paths.share / name).chmod(0o755)
    write_atomic(paths.share / "mount.nfs",
                 "#!/bin/sh\n# runbook lab: NFS mounts through the libnfs+FUSE client "
                 "(this kernel has no NFS)\n"
                 f"exec /usr/bin/python3 {SHARE_MOUNT}/nfsfuse.py mount \"$@\"\n", 0o755)
    paths.share.chmod(0o755)


def _nova_conf(host: HostSpec) -> str:
    # As a deployment tool leaves it before anyone prepared live migration: the deprecated
    # [DEFAULT] vncserver_* options, instances on local disk, no [libvirt] migration settings.
    return (
        "[DEFAULT]\n"
        f"host = {host.name}\n"
        f"my_ip = {host.address}\n"
        "state_path = /var/lib/nova\n"
        "instances_path = /var/lib/nova/instances\n"
        "compute_driver = libvirt.LibvirtDriver\n"
        "vncserver_listen = 0.0.0.0\n"
        f"vncserver_proxyclient_address = {host.address}\n"
        "\n[libvirt]\n"
        "# KVM guests do not boot on the lab machine; QEMU TCG does\n"
        "virt_type = qemu\n"
    )


def _host_config(paths: LabPaths, state: dict[str, Any], host: HostSpec, pubkey: str,
                 hosts_file: str) -> dict[str, Any]:
    host_dir = paths.host_dir(host.name)
    cfg: dict[str, Any] = {
        "name": host.name, "role": host.role, "address": host.address,
        "host_dir": str(host_dir), "share_dir": str(paths.share), "guest_dir": str(paths.guest),
        "hosts_file": hosts_file, "authorized_key": pubkey + "\n", "nova_uid": host.nova_uid,
        "nova_conf": _nova_conf(host), "services": NS_SERVICES[host.role],
    }
    if state["mode"] == "nspawn":
        args = [
            "--boot", f"--directory={host_dir / 'root'}", f"--machine={host.netns}",
            f"--hostname={host.name}", "--register=no", "--keep-unit",
            f"--network-namespace-path=/run/netns/{host.netns}",
            f"--bind-ro={paths.guest}", f"--bind-ro={paths.share}:{SHARE_MOUNT}",
            f"--bind-ro={paths.share / 'mount.nfs'}:/usr/sbin/mount.nfs",
            "--bind=/dev/fuse", "--console=pipe",
        ]
        venv = _cloud_venv(paths)
        if (venv / "bin/python").exists():
            args.append(f"--bind-ro={venv}")
        if host.role == "controller":
            args += [f"--bind={host_dir / 'nova'}:/var/lib/nova",
                     # ganesha's VFS FSAL needs open_by_handle_at(2), which nspawn's seccomp
                     # filter and capability set deny by default (NFS3ERR_PERM on every LOOKUP)
                     "--capability=CAP_DAC_READ_SEARCH", "--system-call-filter=open_by_handle_at"]
        cfg.update(rootfs=str(paths.rootfs), nspawn_args=args)
    return cfg


def _start(paths: LabPaths, network: ipaddress.IPv4Network, computes: int, mode: str,
           echo: Echo) -> dict[str, Any]:
    """Create the network and the hosts; return the completed record."""
    _install_share(paths)
    pubkey = ensure_keypair(paths.key, f"runbook-lab@{paths.root}")
    shutil.rmtree(paths.hosts, ignore_errors=True)
    previous = read_state(paths) or {}
    with locked(GLOBAL_LOCK):               # two labs coming up at once pick different ids
        lab_id = _pick_lab_id(previous.get("lab_id"))
        hosts = plan_hosts(network, computes, lab_id)
        clashes = net.conflicts(network)
        if clashes:
            raise LabConflictError(
                f"{network} overlaps what this machine already uses: "
                + "; ".join(map(str, clashes)) + ". Choose another range with --net")
        state: dict[str, Any] = {
            "version": 1, "phase": "starting", "lab_id": lab_id, "prefix": prefix_for(lab_id),
            "mode": mode, "net": str(network), "bridge": bridge_name(lab_id),
            "bridge_address": bridge_address(network), "lab_dir": str(paths.root),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "up_pid": os.getpid(),
            "hosts": [dict(name=h.name, role=h.role, address=h.address, netns=h.netns,
                           veth=h.veth, nova_uid=h.nova_uid, launcher=None, init=None)
                      for h in hosts],
        }
        write_state(paths, state)            # from here on, everything created is on record
        net.create_bridge(state["bridge"], state["bridge_address"], network.prefixlen,
                          net.bridge_alias(str(paths.root)))
        for host in hosts:
            net.create_host_link(state["bridge"], host.netns, host.veth, host.address,
                                 network.prefixlen)
    # host keys first: known_hosts is exact before any host starts
    entries = []
    for host in hosts:
        paths.host_dir(host.name).mkdir(parents=True)
        entries.append((host, ensure_keypair(paths.host_dir(host.name) / "ssh_host_ed25519_key",
                                             f"root@{host.name}")))
    write_client_files(paths, network, entries)
    paths.params.unlink()                    # written again once the lab is really up
    hosts_file = "127.0.0.1\tlocalhost\n" + "".join(f"{h.address}\t{h.name}\n" for h in hosts)
    echo(f"starting {len(hosts)} {mode} hosts on {state['bridge']} ({network})")
    procs = {}
    for host, record in zip(hosts, state["hosts"]):
        cfg = _host_config(paths, state, host, pubkey, hosts_file)
        cfg_path = paths.host_dir(host.name) / "config.json"
        write_atomic(cfg_path, json.dumps(cfg, indent=1), 0o600)
        procs[host.name] = _launch(paths, state, host, cfg_path)
        record["launcher"] = proc_ref(procs[host.name].pid)
        write_state(paths, state)            # on record before the next host starts
    _wait_for_hosts(paths, state, procs, echo)
    for record in state["hosts"]:
        init = _find_init(record["launcher"]["pid"])
        record["init"] = proc_ref(init) if init else None
        if not alive(record["init"]):
            raise LabBootError(f"{record['name']}: its namespace init is gone; see "
                               f"{paths.host_dir(record['name']) / 'log'}")
    state["phase"] = "up"
    state.pop("up_pid", None)
    write_state(paths, state)
    write_client_files(paths, network, entries)
    return state


def _launch(paths: LabPaths, state: dict[str, Any], host: HostSpec, cfg_path: Path) -> subprocess.Popen:
    hostinit = str(paths.share / "hostinit.py")
    if state["mode"] == "ns":
        # --kill-child: if the launcher dies (even by SIGKILL), the host's init dies too
        argv = ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--pid",
                "--fork", "--kill-child", "--mount-proc", "/usr/bin/python3", hostinit, "ns",
                str(cfg_path)]
    else:
        argv = ["unshare", "--mount", "--propagation", "private", "/usr/bin/python3", hostinit,
                "nspawn", str(cfg_path)]
    log = open(paths.host_dir(host.name) / "log", "ab")
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd="/")
    finally:
        log.close()
    _LAUNCHED[proc.pid] = proc
    return proc


def _find_init(launcher: int) -> int | None:
    """The launcher's child that is PID 1 of a new PID namespace (the host's init)."""
    own = pid_namespace(launcher)
    for child in children(launcher):
        ns = pid_namespace(child)
        if ns is not None and ns != own:
            return child
    return None


def _ssh(paths: LabPaths, host: str, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", str(paths.ssh_config), "-o", "ConnectTimeout=5", host,
                           command], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _wait_for_hosts(paths: LabPaths, state: dict[str, Any], procs: dict[str, subprocess.Popen],
                    echo: Echo) -> None:
    """Wait until each host's sshd accepts the lab key (nspawn: and systemd has booted)."""
    mode = state["mode"]
    deadline = time.monotonic() + BOOT_TIMEOUT[mode] + 2 * len(state["hosts"])

    def log_tail(name: str) -> str:
        try:
            lines = (paths.host_dir(name) / "log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return "\n    ".join(lines[-4:])

    stop = threading.Event()

    def wait_one(record: dict[str, Any]) -> str:
        name, address = record["name"], record["address"]
        proc = procs[name]
        while not stop.is_set():
            if proc.poll() is not None:
                raise LabBootError(f"{name} exited during start-up (exit {proc.returncode}); log "
                                   f"{paths.host_dir(name) / 'log'}:\n    {log_tail(name)}")
            if time.monotonic() > deadline:
                raise LabBootError(f"{name} ({address}) did not accept SSH in time; log "
                                   f"{paths.host_dir(name) / 'log'}:\n    {log_tail(name)}")
            try:
                with socket.create_connection((address, 22), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            probe = "systemctl is-system-running --wait" if mode == "nspawn" else "hostname"
            try:
                result = _ssh(paths, name, probe, timeout=max(5.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            out = result.stdout.strip()
            if mode == "ns" and result.returncode == 0 and out == name:
                return "ready"
            if mode == "nspawn" and out in ("running", "degraded"):
                return out
            time.sleep(0.2)
        return "stopped"

    pool = ThreadPoolExecutor(max_workers=min(16, len(state["hosts"])))
    try:
        results = list(pool.map(wait_one, state["hosts"]))
    finally:
        stop.set()           # on ^C or a failed host, the other waits end at their next poll
        pool.shutdown(wait=True, cancel_futures=True)
    degraded = [r["name"] for r, res in zip(state["hosts"], results) if res == "degraded"]
    if degraded:
        echo(f"note: systemd reports 'degraded' on {', '.join(degraded)} "
              "(see `systemctl --failed` there)")


# ------------------------------------------------------------------------------------------- down
@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold off SIGINT/SIGTERM while cleaning up, then deliver what arrived."""
    if not _in_main_thread():
        yield
        return
    pending: list[int] = []
    old = {sig: signal.signal(sig, lambda s, _f: pending.append(s))
           for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        for sig in pending:
            os.kill(os.getpid(), sig)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _kill_hosts(state: dict[str, Any]) -> None:
    """SIGKILL every recorded host's PID-namespace init, then make sure its launcher is gone.

    PID 1 of a namespace ignores SIGTERM from outside; SIGKILL on it ends every process of the
    host at once (sshd, libvirtd, qemu, FUSE clients).  The launcher (``unshare`` or
    ``systemd-nspawn``) then reaps it and exits by itself, which leaves no zombie behind; only a
    launcher that does not is killed too.
    """
    launchers = []
    for host in state.get("hosts", []):
        launcher, init = host.get("launcher"), host.get("init")
        if alive(launcher) and not alive(init):
            found = _find_init(launcher["pid"])   # the init was not recorded yet
            init = proc_ref(found) if found else None
        if alive(init):
            with contextlib.suppress(ProcessLookupError):
                os.kill(init["pid"], signal.SIGKILL)
        if alive(launcher):
            launchers.append(launcher)
        elif alive(init):
            launchers.append(init)                # orphaned init: wait for it below
    deadline = time.monotonic() + 5
    while any(alive(ref) for ref in launchers) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    for ref in launchers:
        if alive(ref):
            with contextlib.suppress(ProcessLookupError):
                os.kill(ref["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(ref) for ref in launchers) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)
    stuck = [str(ref["pid"]) for ref in launchers if alive(ref)]
    if stuck:
        raise LabError(f"lab processes {', '.join(stuck)} survived SIGKILL; run `lab down` again")


def _kill_netns_processes(netns: str) -> None:
    """SIGKILL every process in network namespace ``netns`` and wait (5 s) until they are gone."""
    refs = []
    for pid in net.netns_pids(netns):
        ref = proc_ref(pid)
        if ref:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            refs.append(ref)
    deadline = time.monotonic() + 5
    while any(alive(ref) for ref in refs) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.05)


def _reap() -> None:
    """Collect launchers this process started that have exited, so they are not left as zombies.

    Only our own launchers: reaping any child (``waitpid(-1)``) would steal exit statuses from
    the caller's other subprocesses.
    """
    for pid, proc in list(_LAUNCHED.items()):
        if proc.poll() is not None:
            del _LAUNCHED[pid]


def _teardown(paths: LabPaths, state: dict[str, Any] | None, echo: Echo) -> None:
    """Remove every trace of the lab recorded in ``state`` (and of its orphaned bridge)."""
    _cloud_down(paths, echo)
    if state:
        _kill_hosts(state)
    prefixes = {state["prefix"]} if state and state.get("prefix") else set()
    alias = net.bridge_alias(str(paths.root))
    for name, link in net.links("rblab").items():
        if link.get("ifalias") == alias and name.endswith("-br0"):
            prefixes.add(name[: -len("br0")])
    for prefix in prefixes:
        for name in net.netns_names(prefix):
            # whatever still runs in the lab's own netns is the lab's (e.g. a host launched just
            # before `up` was killed, too early to be on record): it goes with the netns
            _kill_netns_processes(name)
            net.delete_netns(name)
        for name in sorted(net.links(prefix), key=lambda n: n.endswith("-br0")):
            net.delete_link(name)        # veths first, the bridge last
        for machine in Path("/run/systemd/nspawn/propagate").glob(f"{prefix}*"):
            shutil.rmtree(machine, ignore_errors=True)
    for point in mounts_under(paths.root):
        # nothing should be mounted here (hosts mount in their own namespaces); belt and braces
        run(["umount", "-l", point], check=False)
    for leftover in (paths.hosts, paths.share):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in (paths.params, paths.ssh_config, paths.known_hosts):
        leftover.unlink(missing_ok=True)
    paths.state.unlink(missing_ok=True)      # last: until here a rerun knows what to remove
    _reap()


def down(lab_dir: str | os.PathLike[str] | None = None, purge: bool = False, *,
         cache_dir: str | os.PathLike[str] | None = None, echo: Echo = print) -> LabStatus:
    """Take the lab down and remove everything it created on this machine.

    Parameters
    ----------
    lab_dir
        Lab directory (default ``$RUNBOOK_LAB_DIR`` or ``/var/lib/runbook-lab``).
    purge
        Also delete the lab directory, including its caches (rootfs, guest) if they are inside.
    cache_dir
        Only used with ``purge``: a cache outside the lab directory is deleted as well.
    echo
        Progress messages go here.

    Returns
    -------
    LabStatus
        The status afterwards (``state == "down"``).
    """
    _require_root()
    paths = _paths(lab_dir, cache_dir)
    if not paths.root.exists():
        echo(f"no lab in {paths.root}; nothing to do")
        return LabStatus("down", str(paths.root))
    with locked(paths.lock), _signals_deferred():
        state = read_state(paths)
        before = inspect(paths, state)
        if before.state == "down":
            _cloud_down(paths, echo)          # a cloud may run without its lab (127.0.0.1)
            echo(f"lab in {paths.root} is not up; nothing to do")
        else:
            _teardown(paths, state, echo)
            echo(f"lab in {paths.root} is down")
        after = inspect(paths, None)
    if after.leftovers:
        raise LabError(f"after lab down these remain: {'; '.join(after.leftovers)}")
    if purge:
        if cache_dir is not None or os.environ.get("RUNBOOK_LAB_CACHE"):
            shutil.rmtree(paths.cache, ignore_errors=True)
        shutil.rmtree(paths.root, ignore_errors=True)
        echo(f"purged {paths.root}")
    return after


def status(lab_dir: str | os.PathLike[str] | None = None, *, memory: bool = False) -> LabStatus:
    """Report whether the lab in ``lab_dir`` is up, down or broken (and its memory use).

    Parameters
    ----------
    lab_dir
        Lab directory (default ``$RUNBOOK_LAB_DIR`` or ``/var/lib/runbook-lab``).
    memory
        Also sum RSS and PSS over every process of every host.
    """
    paths = _paths(lab_dir, None)
    return inspect(paths, read_state(paths), memory=memory)
