"""Bringing the lab's cloud up and down: the controller side and the computes.

``up``
    packages and venv -> fresh runtime directory, secrets, configs -> [record] ->
    MariaDB and RabbitMQ -> databases (Keystone, Placement and Nova in parallel) ->
    Keystone -> service users and catalog -> Placement, nova-api, conductor, scheduler and the
    Glance/Neutron stand-ins -> (conductor up) -> nova-compute on every compute -> host discovery
    -> hypervisors in Placement -> flavors -> ``clouds.yaml``.
    Any failure or interruption stops what was started, then re-raises.
``down``
    nova-compute on the computes (through their service manager), then every recorded process
    session; then the runtime directory (data, logs, secrets) and ``clouds.yaml`` are removed.
    The services venv stays in the cache.

With a lab up in the same lab directory, the cloud serves that lab: it listens on the lab's bridge
address and runs one nova-compute inside each lab compute host.  Without a lab it listens on
``127.0.0.1`` and can run ``local_computes`` nova-compute processes on this machine (named
compute1, compute2, ...), which is what the cloud's own tests use before a lab exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.cloud import config, install, procs
from runbook_lib.cloud.compute import ComputeTarget, LabCompute, LocalCompute
from runbook_lib.cloud.errors import CloudError, CloudPrerequisiteError, CloudStartError
from runbook_lib.cloud.layout import (CLOUD_NAME, DEFAULT_SIZES, FLAVORS, GUEST_CMDLINE,
                                      GUEST_DISK_BYTES, GUEST_FLAVOR, GUEST_IMAGE_ID,
                                      GUEST_IMAGE_NAME, GUEST_KERNEL_ID, GUEST_RAMDISK_ID,
                                      IMAGE_ID, REGION, VIRT_DRIVERS, CloudPaths, CloudPlan,
                                      ComputeSize, default_venv, size_for)
from runbook_lib.lab.layout import resolve_cache_dir, resolve_lab_dir
from runbook_lib.lab.state import alive
from runbook_lib.lab.util import locked, write_atomic, write_json

Echo = Callable[[str], None]
HERE = Path(__file__).resolve().parent
START_TIMEOUT = 120.0
#: controller-side services, in start order (the computes follow)
SERVICES = ("mariadb", "epmd", "rabbitmq", "keystone", "placement", "nova-api",
            "nova-conductor", "nova-scheduler", "standins")


@dataclass(frozen=True)
class CloudInfo:
    """What :func:`up` brought up (or found up) and how to reach it."""

    lab_dir: Path
    clouds_yaml: Path
    cloud: str
    listen: str
    auth_url: str
    computes: tuple[str, ...]
    venv: Path
    already_up: bool
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    image_id: str = IMAGE_ID
    #: ``fake`` or ``libvirt``: the virt driver of the computes' nova-compute
    virt_driver: str = "fake"
    #: With the libvirt driver: the bootable guest image (kernel + ramdisk) and its flavor
    guest_image_id: str | None = None
    guest_flavor: str | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for the ``openstack`` CLI and ``openstack.connect()``."""
        return {"OS_CLIENT_CONFIG_FILE": str(self.clouds_yaml), "OS_CLOUD": self.cloud}

    @property
    def openstack_cli(self) -> Path:
        """python-openstackclient's ``openstack`` command (in the services venv)."""
        return self.venv / "bin/openstack"

    def connect(self) -> Any:
        """An admin :class:`openstack.connection.Connection` to the cloud."""
        from runbook_lib.cloud import api
        return api.connect(self.cloud, self.clouds_yaml)


@dataclass(frozen=True)
class CloudStatus:
    """What :func:`status` found: ``state`` is ``up``, ``down`` or ``broken``."""

    state: str
    lab_dir: str
    listen: str | None = None
    services: dict[str, bool] = field(default_factory=dict)
    computes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    rss_kib: int = 0
    pss_kib: int = 0


# ------------------------------------------------------------------------------------ helpers
def _paths(lab_dir: str | os.PathLike[str] | None,
           cache_dir: str | os.PathLike[str] | None) -> CloudPaths:
    root = resolve_lab_dir(lab_dir)
    return CloudPaths(root, default_venv(resolve_cache_dir(root, cache_dir)))


def _read_state(paths: CloudPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.state.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return {"broken": True, "processes": {}}


def _lab_state(paths: CloudPaths) -> dict[str, Any] | None:
    """The lab's own record, if a lab is up in this directory."""
    from runbook_lib.lab.state import read_state
    from runbook_lib.lab.layout import LabPaths
    state = read_state(LabPaths(paths.lab_dir, paths.lab_dir / "cache"))
    return state if state and state.get("phase") == "up" else None


def _run(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
         input: str | None = None, timeout: float = 300) -> None:
    """Run a set-up command, its output appended to ``log``; raise with the log's tail."""
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv[:6])}{' ...' if len(argv) > 6 else ''}\n")
        out.flush()
        proc = subprocess.run(list(argv), input=input, stdout=out, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                              cwd="/")
    if proc.returncode != 0:
        raise CloudStartError(f"`{' '.join(argv[:3])}` failed (exit {proc.returncode}); log "
                              f"{log}:\n    {procs.log_tail(log)}")


class _Starter:
    """Starts services and records each one *before* waiting for it, so a failure can undo it."""

    def __init__(self, paths: CloudPaths, state: dict[str, Any], echo: Echo) -> None:
        self.paths, self.state, self.echo = paths, state, echo
        self.popen: dict[str, subprocess.Popen] = {}
        self.t0 = time.monotonic()
        self.timings: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.timings[what] = round(time.monotonic() - self.t0, 1)

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> None:
        proc, ref = procs.spawn(argv, self.paths.log / f"{name}.out", env=env, cwd=cwd)
        self.popen[name] = proc
        self.state["processes"][name] = ref
        write_json(self.paths.state, self.state)

    def wait(self, name: str, probe: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        procs.wait_until(probe, name, timeout=timeout, log=self.paths.log / f"{name}.out",
                         proc=self.popen.get(name))
        self.mark(f"{name} up")


# ------------------------------------------------------------------------------------------ up
def up(lab_dir: str | os.PathLike[str] | None = None, *, local_computes: int = 0,
       sizes: Sequence[ComputeSize] = DEFAULT_SIZES, cache_dir: str | os.PathLike[str] | None = None,
       install_missing: bool = True, virt_driver: str | None = None,
       echo: Echo = print) -> CloudInfo:
    """Bring the lab's cloud up (or find it up already).

    Parameters
    ----------
    lab_dir
        Lab directory (default ``$RUNBOOK_LAB_DIR`` or ``/var/lib/runbook-lab``).  If a lab is up
        there, the cloud serves it: it listens on the lab's bridge address and runs nova-compute
        in every lab compute host.
    local_computes
        Without a lab: how many nova-compute processes to run on this machine (compute1, ...).
    sizes
        What the fake driver reports for compute1, compute2, ... (the last size repeats).
        Default: the source procedure's case, 4 vCPU / 8 GiB and 2 vCPU / 4 GiB.
    cache_dir
        The lab's cache, where the services venv lives (default ``$RUNBOOK_LAB_CACHE`` or
        ``<lab_dir>/cache``; ``$RUNBOOK_CLOUD_VENV`` overrides the venv's place).
    install_missing
        Install RabbitMQ/MariaDB (Debian) and the services venv (PyPI) when missing.
    virt_driver
        ``"fake"`` (default for a new cloud): Nova's fake driver, sized by ``sizes``.
        ``"libvirt"``: each lab compute's nova-compute drives that host's libvirtd (QEMU TCG),
        and the Glance stand-in serves a bootable guest (the lab guest's kernel and initramfs as
        kernel/ramdisk images, :data:`~runbook_lib.cloud.layout.GUEST_IMAGE_ID`) with the flavor
        ``rblab.guest``.  Needs a lab up in ``lab_dir``.  ``None``: whatever the running cloud
        has, else ``"fake"``.
    echo
        Progress messages go here (never a secret).

    Returns
    -------
    CloudInfo
        Where ``clouds.yaml`` is and how to connect.

    Raises
    ------
    CloudPrerequisiteError
        Not root, or something could not be installed.
    CloudStartError
        A service did not come up (the message names its log).
    """
    started = time.monotonic()
    if os.geteuid() != 0:
        raise CloudPrerequisiteError("the lab's cloud needs root (it runs MariaDB, RabbitMQ and "
                                     "enters the lab hosts): run it as root")
    paths = _paths(lab_dir, cache_dir)
    paths.lab_dir.mkdir(parents=True, exist_ok=True)
    with locked(paths.lab_dir / ".cloud.lock"):
        state = _read_state(paths)
        found = _inspect(paths, state)
        if found.state == "up" and state is not None:
            running = state.get("virt_driver", "fake")
            if virt_driver is not None and virt_driver != running:
                raise CloudError(f"a cloud with the {running} virt driver is up in "
                                 f"{paths.lab_dir}; take it down before asking for {virt_driver}")
            echo(f"cloud already up in {paths.lab_dir} ({state['listen']}); nothing to do. "
                 f"clouds.yaml: {paths.clouds_yaml}")
            return _info(paths, state, True, time.monotonic() - started, {})
        virt_driver = virt_driver or "fake"
        if virt_driver not in VIRT_DRIVERS:
            raise CloudError(f"virt_driver must be one of {', '.join(VIRT_DRIVERS)}, "
                             f"not {virt_driver!r}")
        if state is not None:
            echo(f"clearing leftovers of an earlier cloud in {paths.root}")
            _teardown(paths, state, echo)
        if install_missing:
            install.ensure_debian_packages(echo=echo)
            install.ensure_venv(paths.venv, echo=echo)
        elif not install.venv_ready(paths.venv):
            raise CloudPrerequisiteError(f"no services venv at {paths.venv}; run with "
                                         "installs allowed once")
        targets = _compute_targets(paths, local_computes, tuple(sizes), virt_driver)
        state = {}
        try:
            from runbook_lib.lab.layout import LabPaths
            guest_dir = LabPaths(paths.lab_dir, resolve_cache_dir(paths.lab_dir, cache_dir)).guest
            state, timings = _start(paths, targets, echo, virt_driver, guest_dir)
        except BaseException:
            echo("cloud up did not complete; stopping what it started")
            _teardown(paths, _read_state(paths) or state or None, lambda _m: None)
            raise
    seconds = time.monotonic() - started
    echo(f"cloud up in {seconds:.1f} s: Keystone {state['auth_url']}, computes "
         f"{', '.join(c['name'] for c in state['computes']) or 'none'}; "
         f"OS_CLIENT_CONFIG_FILE={paths.clouds_yaml} OS_CLOUD={CLOUD_NAME}")
    return _info(paths, state, False, seconds, timings)


def _info(paths: CloudPaths, state: dict[str, Any], already: bool, seconds: float,
          timings: dict[str, float]) -> CloudInfo:
    libvirt = state.get("virt_driver", "fake") == "libvirt"
    return CloudInfo(paths.lab_dir, paths.clouds_yaml, CLOUD_NAME, state["listen"],
                     state["auth_url"], tuple(c["name"] for c in state["computes"]), paths.venv,
                     already, seconds, timings, virt_driver=state.get("virt_driver", "fake"),
                     guest_image_id=GUEST_IMAGE_ID if libvirt else None,
                     guest_flavor=GUEST_FLAVOR[0] if libvirt else None)


def _compute_targets(paths: CloudPaths, local_computes: int, sizes: tuple[ComputeSize, ...],
                     virt_driver: str = "fake") -> tuple[str, list[ComputeTarget]]:
    """The listen address and the computes: the lab's hosts if a lab is up, else local ones."""
    lab = _lab_state(paths)
    if lab is not None:
        hosts = [h for h in lab["hosts"] if h["role"] == "compute"]
        return lab["bridge_address"], [
            LabCompute(h["name"], h["address"], size_for(i, sizes), lab["mode"], paths,
                       virt_driver)
            for i, h in enumerate(hosts, start=1)]
    if virt_driver != "fake":
        raise CloudPrerequisiteError(f"the {virt_driver} virt driver needs a lab up in "
                                     f"{paths.lab_dir} (its computes run libvirtd)")
    return "127.0.0.1", [LocalCompute(f"compute{i}", "127.0.0.1", size_for(i, sizes), paths)
                         for i in range(1, local_computes + 1)]


def _guest_images(paths: CloudPaths, guest: Path) -> Path:
    """Describe the bootable guest for the Glance stand-in; returns the images JSON file.

    The kernel and initramfs are the lab's cached guest (``<cache>/guest``); the machine image
    is a small all-zero raw disk in the cloud's data directory.
    """
    kernel, initrd = guest / "vmlinuz", guest / "initrd.gz"
    if not (kernel.exists() and initrd.exists()):
        raise CloudPrerequisiteError(f"the lab guest's kernel and initramfs are missing in "
                                     f"{guest}; bring the lab up first")
    disk = paths.data / "images" / "rblab-guest-disk.raw"
    disk.parent.mkdir(parents=True, exist_ok=True)
    with open(disk, "wb") as handle:
        handle.truncate(GUEST_DISK_BYTES)
    images = [
        {"id": GUEST_KERNEL_ID, "name": f"{GUEST_IMAGE_NAME}-kernel", "disk_format": "aki",
         "container_format": "aki", "file": str(kernel), "properties": {}},
        {"id": GUEST_RAMDISK_ID, "name": f"{GUEST_IMAGE_NAME}-ramdisk", "disk_format": "ari",
         "container_format": "ari", "file": str(initrd), "properties": {}},
        {"id": GUEST_IMAGE_ID, "name": GUEST_IMAGE_NAME, "disk_format": "raw",
         "container_format": "bare", "file": str(disk),
         "properties": {"kernel_id": GUEST_KERNEL_ID, "ramdisk_id": GUEST_RAMDISK_ID,
                        "os_command_line": GUEST_CMDLINE, "hw_machine_type": "pc"}},
    ]
    target = paths.etc / "images.json"
    write_atomic(target, json.dumps(images, indent=1) + "\n", 0o600)
    return target


def _start(paths: CloudPaths, targets: tuple[str, list[ComputeTarget]],
           echo: Echo, virt_driver: str = "fake",
           guest_dir: Path | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    listen, computes = targets
    shutil.rmtree(paths.root, ignore_errors=True)
    for directory in (paths.etc, paths.log, paths.run, paths.data / "nova/locks",
                      paths.data / "keystone", paths.data / "rabbit"):
        directory.mkdir(parents=True, exist_ok=True)
    paths.root.chmod(0o700)                  # secrets, DB files and logs are root's only
    plan = CloudPlan(listen, procs.free_port(), procs.free_port(),
                     tuple((c.name, c.address, c.size) for c in computes))
    _check_ports_free(plan)
    secrets = config.Secrets.generate()
    write_atomic(paths.secrets, secrets.to_json(), 0o600)
    _write_configs(paths, plan, secrets)
    state: dict[str, Any] = {
        "version": 1, "phase": "starting", "listen": listen, "auth_url": plan.url("keystone") + "/v3",
        "epmd_port": plan.epmd_port, "dist_port": plan.dist_port, "processes": {},
        "computes": [c.record() for c in computes], "virt_driver": virt_driver,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(paths.state, state)           # from here on, everything started is on record
    s = _Starter(paths, state, echo)
    echo(f"starting the cloud on {listen} (MariaDB, RabbitMQ, Keystone, Placement, Nova; "
         f"logs in {paths.log})")
    _start_mariadb(paths, s)
    _start_rabbitmq(paths, plan, s)
    s.wait("mariadb", lambda: paths.mysql_socket.exists() and _sql(paths, "SELECT 1"), 60)
    _create_databases(paths, secrets)
    s.mark("databases created")
    with ThreadPoolExecutor(max_workers=3) as pool:
        keystone = pool.submit(_init_keystone, paths, plan, secrets)
        placement = pool.submit(_run, [str(paths.bin / "placement-manage"), "--config-file",
                                       str(paths.etc / "placement.conf"), "db", "sync"],
                                paths.log / "setup-placement.log")
        nova = pool.submit(_init_nova_dbs, paths, secrets)
        keystone.result()
        s.mark("keystone bootstrapped")
        _start_keystone(paths, plan, s)
        placement.result()
        s.mark("placement db synced")
        _start_gunicorn(paths, plan, s, "placement", "placement()",
                        {"OS_PLACEMENT_CONFIG_DIR": str(paths.etc)})
        images = [str(_guest_images(paths, guest_dir))] if virt_driver == "libvirt" else []
        s.start("standins", [str(paths.venv / "bin/python"), str(paths.etc / "standins.py"),
                             listen, str(plan.ports["glance"]), str(plan.ports["neutron"]),
                             str(paths.log / "standins-requests.log"), *images])
        s.wait("keystone", procs.http_answers(plan.url("keystone") + "/v3"))
        _register(paths, plan, secrets)
        s.mark("services registered")
        nova.result()
        s.mark("nova dbs synced")
    s.wait("rabbitmq", procs.tcp_open(listen, plan.ports["rabbitmq"]))
    nova_conf = str(paths.etc / "nova.conf")
    for binary in ("nova-conductor", "nova-scheduler"):
        s.start(binary, [str(paths.bin / binary), "--config-file", nova_conf, "--log-file",
                         str(paths.log / f"{binary}.log")])
    _start_gunicorn(paths, plan, s, "nova-api", "nova_api()",
                    {"OS_NOVA_CONFIG_DIR": str(paths.etc),
                     "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf"})
    s.wait("placement", procs.http_answers(plan.url("placement")))
    s.wait("nova-api", procs.http_answers(plan.url("nova-api")))
    s.wait("standins", procs.http_answers(plan.url("neutron") + "/v2.0"))
    from runbook_lib.cloud import api
    conn = api.connect(CLOUD_NAME, paths.clouds_yaml)
    # computes ask the conductor for their service record at start and give up after a 10 s
    # timeout ("Is it running? Or did this service start before nova-conductor?"): start them
    # only once the conductor reports up
    _wait_services(conn, "nova-conductor", 1, paths, s)
    s.mark("nova-conductor up")
    if computes:
        echo(f"starting nova-compute on {', '.join(c.name for c in computes)}")
        with ThreadPoolExecutor(max_workers=len(computes)) as pool:
            list(pool.map(lambda c: c.install_and_start(plan, secrets, s), computes))
        _wait_services(conn, "nova-compute", len(computes), paths, s)
        s.mark("nova-compute up")
        _run([str(paths.bin / "nova-manage"), "--config-file", nova_conf, "cell_v2",
              "discover_hosts"], paths.log / "setup-nova.log")
        _wait_hypervisors(conn, [c.name for c in computes], paths, s)
        s.mark("hypervisors in placement")
    api.ensure_flavors(conn, FLAVORS + ((GUEST_FLAVOR,) if virt_driver == "libvirt" else ()))
    state["phase"] = "up"
    write_json(paths.state, state)
    s.mark("cloud ready")
    return state, s.timings


def _check_ports_free(plan: CloudPlan) -> None:
    taken = set(procs.listening([plan.listen]))
    clash = [f"{plan.listen}:{p}" for p in plan.ports.values() if f"{plan.listen}:{p}" in taken]
    if clash:
        raise CloudPrerequisiteError(f"ports the cloud needs are in use: {', '.join(clash)}; "
                                     "is another cloud up on this address? (`runbook lab down`)")


def _write_configs(paths: CloudPaths, plan: CloudPlan, secrets: config.Secrets) -> None:
    etc = paths.etc
    files = {
        "keystone.conf": config.keystone_conf(paths, secrets),
        "placement.conf": config.placement_conf(paths, plan, secrets),
        "nova.conf": config.nova_conf(paths, plan, secrets),
        "rabbitmq.conf": config.rabbitmq_conf(plan, secrets),
        "rabbitmq-env.conf": "# empty: the lab's RabbitMQ is configured by its environment\n",
        "enabled_plugins": "[].\n",
    }
    for name, text in files.items():
        write_atomic(etc / name, text, 0o600)
    shutil.copyfile(paths.venv / "etc/nova/api-paste.ini", etc / "api-paste.ini")
    for helper in ("standins.py", "wsgi_apps.py"):
        shutil.copyfile(HERE / helper, etc / helper)
    write_atomic(paths.clouds_yaml, config.clouds_yaml(plan, secrets), 0o600)


def _sql(paths: CloudPaths, statement: str) -> bool:
    # root logs in through the socket by uid (unix_socket auth): no password on any command line
    proc = subprocess.run(["mariadb", "--no-defaults", f"--socket={paths.mysql_socket}",
                           "-uroot"], input=statement, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise CloudStartError(f"MariaDB refused a statement: {proc.stderr.strip()[:300]}")
    return True


def _start_mariadb(paths: CloudPaths, s: _Starter) -> None:
    datadir = paths.data / "mysql"
    _run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
          "--auth-root-authentication-method=socket", "--skip-test-db",
          "--innodb-log-file-size=8M"], paths.log / "mariadb-install.log")
    s.start("mariadb", [
        "mariadbd", "--no-defaults", f"--datadir={datadir}", f"--socket={paths.mysql_socket}",
        # only the controller-side services use the DB: a Unix socket, no TCP listener at all
        "--skip-networking", f"--pid-file={paths.run / 'mariadb.pid'}", "--user=root",
        "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
        "--innodb-log-file-size=8M",
        # the lab's data is thrown away at `down`: trade durability for start-up and DDL speed
        "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0",
        "--max-connections=500", f"--log-error={paths.log / 'mariadb.log'}",
        f"--tmpdir={paths.run}"])


def _create_databases(paths: CloudPaths, secrets: config.Secrets) -> None:
    statements = [f"CREATE USER '{config.DB_USER}'@'localhost' IDENTIFIED BY '{secrets.database}';",
                  f"GRANT ALL ON *.* TO '{config.DB_USER}'@'localhost';"]
    statements += [f"CREATE DATABASE {db} CHARACTER SET utf8;" for db in config.DATABASES]
    _sql(paths, "\n".join(statements))


def _start_rabbitmq(paths: CloudPaths, plan: CloudPlan, s: _Starter) -> None:
    data = paths.data / "rabbit"
    erl_env = {
        # Erlang's cookie goes to $HOME: keep it in the lab, not in /root
        "HOME": str(data), "ERL_EPMD_ADDRESS": "127.0.0.1", "ERL_EPMD_PORT": str(plan.epmd_port),
    }
    # Our own port mapper, in the foreground, on loopback and a private port.  RabbitMQ insists
    # on one (its prelaunch starts `epmd -daemon` otherwise, listening on every address, shared
    # by every Erlang node on the machine and out of our reach); epmd always adds the IPv6
    # loopback [::1] to the addresses it is given.
    s.start("epmd", ["epmd", "-port", str(plan.epmd_port), "-address", "127.0.0.1"], env=erl_env)
    s.wait("epmd", procs.tcp_open("127.0.0.1", plan.epmd_port), 20)
    s.start("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], env={
        **erl_env,
        "RABBITMQ_NODENAME": "rblab@localhost", "RABBITMQ_NODE_IP_ADDRESS": plan.listen,
        "RABBITMQ_NODE_PORT": str(plan.ports["rabbitmq"]),
        "RABBITMQ_DIST_PORT": str(plan.dist_port),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_CONF_ENV_FILE": str(paths.etc / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(paths.etc / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(paths.etc / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"), "RABBITMQ_LOG_BASE": str(paths.log),
        "RABBITMQ_LOGS": "-", "RABBITMQ_PID_FILE": str(paths.run / "rabbitmq.pid"),
    })


def _init_keystone(paths: CloudPaths, plan: CloudPlan, secrets: config.Secrets) -> None:
    log = paths.log / "setup-keystone.log"
    manage = [str(paths.bin / "keystone-manage"), "--config-file", str(paths.etc / "keystone.conf")]
    _run([*manage, "db_sync"], log)
    for what in ("fernet_setup", "credential_setup"):
        _run([*manage, what, "--keystone-user", "root", "--keystone-group", "root"], log)
    # the password through the environment, never on a command line (visible in ps)
    _run([*manage, "bootstrap", "--bootstrap-username", "admin",
          "--bootstrap-project-name", "admin", "--bootstrap-role-name", "admin",
          "--bootstrap-public-url", plan.url("keystone") + "/v3",
          "--bootstrap-region-id", REGION], log, env={"OS_BOOTSTRAP_PASSWORD": secrets.admin})


def _init_nova_dbs(paths: CloudPaths, secrets: config.Secrets) -> None:
    log = paths.log / "setup-nova.log"
    manage = [str(paths.bin / "nova-manage"), "--config-file", str(paths.etc / "nova.conf")]
    _run([*manage, "api_db", "sync"], log)
    _run([*manage, "cell_v2", "map_cell0"], log)      # nova_cell0, derived from [database]
    _run([*manage, "db", "sync"], log)
    _run([*manage, "cell_v2", "create_cell", "--name", "cell1"], log)


def _start_gunicorn(paths: CloudPaths, plan: CloudPlan, s: _Starter, name: str, factory: str,
                    env: dict[str, str]) -> None:
    s.start(name, [str(paths.bin / "gunicorn"), "--chdir", str(paths.etc), "--no-control-socket",
                   "-w", "1", "--threads", "4", "-k", "gthread", "--timeout", "120",
                   "-b", f"{plan.listen}:{plan.ports[name]}", "--access-logfile",
                   str(paths.log / f"{name}-access.log"), f"wsgi_apps:{factory}"],
            env=env, cwd=paths.etc)


def _start_keystone(paths: CloudPaths, plan: CloudPlan, s: _Starter) -> None:
    _start_gunicorn(paths, plan, s, "keystone", "keystone()",
                    {"OS_KEYSTONE_CONFIG_FILES": str(paths.etc / "keystone.conf")})


def _register(paths: CloudPaths, plan: CloudPlan, secrets: config.Secrets) -> None:
    from runbook_lib.cloud import api
    conn = api.connect(CLOUD_NAME, paths.clouds_yaml)
    api.register_services(conn, secrets.services, [
        ("nova", "compute", plan.url("nova-api") + "/v2.1"),
        ("placement", "placement", plan.url("placement")),
        ("glance", "image", plan.url("glance")),
        ("neutron", "network", plan.url("neutron")),
    ], REGION)


def _wait_services(conn: Any, binary: str, count: int, paths: CloudPaths, s: _Starter) -> None:
    from runbook_lib.cloud import api

    def ready() -> bool:
        return sum(1 for row in api.services(conn, binary) if row.state == "up") >= count
    log = paths.log / (f"{binary}.log" if binary != "nova-compute" else "nova-conductor.log")
    procs.wait_until(ready, f"{count} x {binary} reporting up", timeout=START_TIMEOUT, log=log,
                     interval=0.5)


def _wait_hypervisors(conn: Any, names: list[str], paths: CloudPaths, s: _Starter) -> None:
    from runbook_lib.cloud import api

    def ready() -> bool:
        inventories = api.placement_inventories(conn)
        listed = {h.name for h in api.hypervisors(conn)}
        return all(n in listed and inventories.get(n, {}).get("VCPU") for n in names)
    procs.wait_until(ready, "hypervisors in placement", timeout=START_TIMEOUT,
                     log=paths.log / "nova-scheduler.log", interval=0.5)


# ---------------------------------------------------------------------------------------- down
def _compute_from_record(record: dict[str, Any], paths: CloudPaths) -> ComputeTarget:
    size = ComputeSize(*record["size"])
    if record["kind"] == "lab":
        return LabCompute(record["name"], record["address"], size, record["mode"], paths,
                          record.get("virt_driver", "fake"))
    return LocalCompute(record["name"], record["address"], size, paths)


def _teardown(paths: CloudPaths, state: dict[str, Any] | None, echo: Echo, *,
              stop_computes: bool = True) -> None:
    """Stop everything the record names and remove the cloud's runtime files."""
    problems: list[str] = []
    if state and stop_computes:
        def stop_one(record: dict[str, Any]) -> None:
            try:
                _compute_from_record(record, paths).stop(state)
            except CloudError as exc:         # a lab host that is gone took its compute with it
                problems.append(str(exc))
        records = state.get("computes", [])
        if records:
            with ThreadPoolExecutor(max_workers=min(8, len(records))) as pool:
                list(pool.map(stop_one, records))
    if state:
        # in stages, computes first: a nova-compute shuts down gracefully only while RabbitMQ
        # and the conductor still answer (else it waits out its RPC timeouts)
        recorded = state.get("processes", {})
        stages = [[n for n in recorded if n.startswith("nova-compute")],
                  [n for n in recorded if n.startswith("nova-") and not n.startswith("nova-compute")
                   or n in ("keystone", "placement", "standins")],
                  [n for n in recorded if n in ("rabbitmq", "mariadb")], ["epmd"]]
        stages.append([n for n in recorded if not any(n in stage for stage in stages)])
        killed = []
        for stage in stages:
            killed += procs.stop({name: recorded.get(name) for name in stage})
        if killed:
            echo(f"had to SIGKILL: {', '.join(killed)}")
    shutil.rmtree(paths.root, ignore_errors=True)
    paths.clouds_yaml.unlink(missing_ok=True)
    if problems:
        echo("note: " + "; ".join(problems))


def down(lab_dir: str | os.PathLike[str] | None = None, *, stop_computes: bool = True,
         echo: Echo = print) -> CloudStatus:
    """Stop the lab's cloud and remove its runtime files (the venv cache stays).

    Parameters
    ----------
    lab_dir
        Lab directory (default ``$RUNBOOK_LAB_DIR`` or ``/var/lib/runbook-lab``).
    stop_computes
        Stop nova-compute in the lab hosts through their service manager first.  ``lab down``
        passes False: it is about to end the hosts, and their services with them.
    echo
        Progress messages go here.

    Returns
    -------
    CloudStatus
        The status afterwards (``state == "down"``).

    Raises
    ------
    CloudError
        When something the cloud started is still running or listening afterwards.
    """
    paths = _paths(lab_dir, None)
    with locked(paths.lab_dir / ".cloud.lock"):
        state = _read_state(paths)
        if state is None and not paths.clouds_yaml.exists():
            echo(f"no cloud in {paths.lab_dir}; nothing to do")
            return CloudStatus("down", str(paths.lab_dir))
        _teardown(paths, state, echo, stop_computes=stop_computes)
        echo(f"cloud in {paths.lab_dir} is down")
    if state and state.get("listen"):
        left = procs.listening([state["listen"]]) if state["listen"] != "127.0.0.1" else []
        if left:
            raise CloudError(f"after cloud down, still listening on {', '.join(left)}")
    return CloudStatus("down", str(paths.lab_dir))


# -------------------------------------------------------------------------------------- status
def _inspect(paths: CloudPaths, state: dict[str, Any] | None, memory: bool = False) -> CloudStatus:
    if state is None:
        return CloudStatus("down", str(paths.lab_dir))
    running = {name: alive(ref) for name, ref in state.get("processes", {}).items()}
    problems = [f"{name} is not running" for name, ok in running.items() if not ok]
    missing = [name for name in SERVICES if name not in running]
    if missing:
        problems.append(f"never started: {', '.join(missing)}")
    if state.get("phase") != "up":
        problems.append(f"`cloud up` did not finish (phase {state.get('phase', '?')})")
    rss = pss = 0
    if memory:
        from runbook_lib.lab.state import memory_kib
        pids = [pid for ref in state.get("processes", {}).values() if alive(ref)
                for pid in procs.session_members(ref)]
        rss, pss = memory_kib(pids)
    return CloudStatus("broken" if problems else "up", str(paths.lab_dir), state.get("listen"),
                       running, tuple(c["name"] for c in state.get("computes", [])),
                       tuple(problems), rss, pss)


def status(lab_dir: str | os.PathLike[str] | None = None, *, memory: bool = False) -> CloudStatus:
    """Report whether the lab's cloud is up (controller-side processes; ``memory``: their RSS/PSS).

    The computes' nova-compute run inside the lab hosts and are counted in the lab's own
    memory figures (``runbook lab status``); local computes are counted here.
    """
    paths = _paths(lab_dir, None)
    return _inspect(paths, _read_state(paths), memory)
