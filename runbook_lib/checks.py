"""Checks: pure functions from gathered facts to verdicts with a reason and a remedy.

A verdict is one of ``pass``, ``warn``, ``fail``, ``skip`` (not applicable or not
reachable). Each failing or warning verdict carries a one-line remediation that names
what to do and, where one exists, the runbook phase or parameter that does it.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .facts import MISSING, HostFacts
from .facts.libvirt import LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT
from .facts.nova import LEGACY_DEFAULT_VNC, option
from .params import Site

if TYPE_CHECKING:  # pandas is imported where a table is built: 0.3 s saved per process that needs none
    import pandas as pd

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
VERDICTS = (PASS, WARN, FAIL, SKIP)
#: Verdicts that make a run's outcome "problems found".
PROBLEMS = (FAIL,)

TRANSPORTS = ("tls", "ssh", "tcp")
STORAGE_MODES = ("auto", "nfs", "none")
MIGRATION_PORT = 49152  # first port of QEMU's default live-migration range 49152-49215
NFS_PORT = 2049
NFS_FSTYPES = ("nfs", "nfs4")


def transport_port(transport: str) -> int:
    """The TCP port a destination must accept for the libvirt transport."""
    return {"tls": LIBVIRT_TLS_PORT, "ssh": 22, "tcp": LIBVIRT_TCP_PORT}[transport]


def is_nfs(fstype: str | None) -> bool:
    """Whether a mount type is NFS (kernel client, or the lab's user-space NFS client)."""
    return bool(fstype) and (fstype in NFS_FSTYPES or (fstype.startswith("fuse.") and "nfs" in fstype))


@dataclass(frozen=True)
class Check:
    """One check's verdict on one host."""

    host: str
    check: str
    verdict: str
    detail: str
    remediation: str = ""


@dataclass(frozen=True)
class Settings:
    """What the site intends; the preflight checks the hosts against it."""

    transport: str = "tls"
    storage: str = "auto"
    nfs_server: str | None = None


@dataclass
class Context:
    """Everything a check may look at."""

    site: Site
    gathered: Mapping[str, HostFacts]
    settings: Settings = field(default_factory=Settings)

    def reached(self, name: str) -> bool:
        hf = self.gathered.get(name)
        return hf is not None and hf.reached

    def fact(self, name: str, fact: str) -> Any:
        hf = self.gathered.get(name)
        return hf.get(fact) if hf is not None else MISSING

    def computes(self) -> list[str]:
        return [h.name for h in self.site.computes if h.name in self.gathered]

    def nfs_server(self) -> str | None:
        if self.settings.nfs_server:
            return self.settings.nfs_server
        for h in self.site.hosts:
            if h.role == "controller":
                return h.name
        return None


# ------------------------------------------------------------------------------ host checks


def check_ssh(ctx: Context, name: str) -> Check:
    h, hf = ctx.site.host(name), ctx.gathered[name]
    if hf.reached:
        return Check(name, "ssh", PASS, f"{h.user}@{h.address}:{h.port} answered in {hf.duration:.2f} s")
    return Check(
        name, "ssh", FAIL, hf.error or "not reached",
        f"make {h.address}:{h.port} reachable over SSH as {h.user} (sshd running, key in "
        "authorized_keys, host key in known_hosts), then run the preflight again",
    )


def check_hostname(ctx: Context, name: str) -> Check:
    got = ctx.fact(name, "hostname")
    if got is MISSING:
        return Check(name, "hostname", FAIL, "hostname printed nothing", "check the host's hostname")
    if got.lower() == name.lower():
        return Check(name, "hostname", PASS, f"hostname is {got}")
    return Check(
        name, "hostname", FAIL, f"hostname is '{got}', the inventory calls it '{name}'",
        f"nova names compute services and migration URIs by host name: set it "
        f"(hostnamectl set-hostname {name}) or fix the inventory",
    )


def check_management_address(ctx: Context, name: str) -> Check:
    h = ctx.site.host(name)
    addrs = ctx.fact(name, "addresses")
    if addrs is MISSING:
        return Check(name, "management-address", SKIP, "could not list addresses")
    mine = ipaddress.ip_address(h.management_address)
    for a in addrs:
        if a["address"] == h.management_address:
            return Check(name, "management-address", PASS, f"{a['interface']} {a['address']}/{a['prefix']}")
        # the kernel answers the whole loopback prefix on lo, not only the listed address
        if a["interface"] == "lo" and mine in ipaddress.ip_network(f"{a['address']}/{a['prefix']}", strict=False):
            return Check(name, "management-address", PASS, f"lo {a['address']}/{a['prefix']} (loopback)")
    in_cidr = [f"{a['interface']} {a['address']}" for a in addrs
               if ipaddress.ip_address(a["address"]) in ctx.site.management_cidr]
    return Check(
        name, "management-address", FAIL,
        f"{h.management_address} is on no interface"
        + (f"; in {ctx.site.management_cidr}: {', '.join(in_cidr)}" if in_cidr else ""),
        "set management_address in the params file to the host's address on the management "
        "network (VNC and migration traffic use it)",
    )


def check_resolution(ctx: Context, name: str) -> Check:
    resolved = ctx.fact(name, "resolution")
    if resolved is MISSING:
        return Check(name, "name-resolution", FAIL, "could not run getent", "check that getent works on the host")
    wrong = [o for o in ctx.site.hosts if o.name != name and resolved.get(o.name) != o.management_address]
    if not wrong:
        return Check(name, "name-resolution", PASS, f"resolves all {len(ctx.site.hosts) - 1} other hosts")
    detail = "; ".join(f"{o.name} → {resolved.get(o.name) or 'unresolved'} (want {o.management_address})" for o in wrong)
    lines = "; ".join(f"'{o.management_address} {o.name}'" for o in wrong)
    return Check(
        name, "name-resolution", FAIL, detail,
        f"libvirt connects to the destination by name: add {lines} to /etc/hosts on {name} "
        "(or fix DNS); a name on 127.0.1.1 is wrong",
    )


def _reference_ids(ctx: Context, fact: str, prefer: str | None) -> tuple[dict | None, str]:
    ids = {n: ctx.fact(n, fact) for n in ctx.gathered if ctx.reached(n) and ctx.fact(n, fact) is not MISSING}
    if prefer and prefer in ids:
        return ids[prefer], f"{prefer}"
    if not ids:
        return None, ""
    (uid, gid), _ = Counter((v["uid"], v["gid"]) for v in ids.values()).most_common(1)[0]
    return {"uid": uid, "gid": gid}, "most hosts"


def check_nova_ids(ctx: Context, name: str) -> Check:
    ids = ctx.fact(name, "nova_ids")
    ref, ref_from = _reference_ids(ctx, "nova_ids", ctx.nfs_server())
    if ids is MISSING:
        return Check(name, "nova-ids", FAIL, "no 'nova' user", "install nova (or create the nova user) on this host")
    here = f"nova uid {ids['uid']} gid {ids['gid']}"
    if ref is None or (ids["uid"], ids["gid"]) == (ref["uid"], ref["gid"]):
        return Check(name, "nova-ids", PASS, here)
    return Check(
        name, "nova-ids", FAIL, f"{here}; {ref_from} has uid {ref['uid']} gid {ref['gid']}",
        f"files on shared instance storage are owned by numeric ids: align nova to "
        f"uid {ref['uid']} gid {ref['gid']} (configure phase: identity)",
    )


def check_qemu_ids(ctx: Context, name: str) -> Check:
    ids = ctx.fact(name, "qemu_ids")
    if ids is MISSING:
        return Check(name, "qemu-ids", FAIL, "no libvirt-qemu/qemu user", "install libvirt-daemon-system (it creates the user)")
    first = next((c for c in ctx.computes() if ctx.reached(c) and ctx.fact(c, "qemu_ids") is not MISSING), None)
    ref = ctx.fact(first, "qemu_ids") if first else None
    here = f"qemu uid {ids['uid']} gid {ids['gid']}"
    if not ref or (ids["uid"], ids["gid"]) == (ref["uid"], ref["gid"]):
        return Check(name, "qemu-ids", PASS, here)
    verdict = FAIL if ctx.settings.storage == "nfs" else WARN
    return Check(
        name, "qemu-ids", verdict, f"{here}; {first} has uid {ref['uid']} gid {ref['gid']}",
        f"guest disk files on shared storage must be readable by QEMU on every compute: align "
        f"the qemu user to uid {ref['uid']} gid {ref['gid']} (configure phase: identity)",
    )


def _version_check(ctx: Context, name: str, fact: str, label: str, package: str) -> Check:
    ver = ctx.fact(name, fact)
    if ver is MISSING:
        return Check(name, label, FAIL, f"{label} is not installed", f"install {package} on this compute host")
    others = sorted({ctx.fact(n, fact) for n in ctx.computes()
                     if n != name and ctx.reached(n) and ctx.fact(n, fact) not in (MISSING, ver)})
    if others:
        return Check(
            name, label, WARN, f"{label} {ver}; other computes run {', '.join(others)}",
            f"migrating to an older {label} can fail: run one {label} version on every compute",
        )
    return Check(name, label, PASS, f"{label} {ver}")


def check_libvirt(ctx: Context, name: str) -> Check:
    return _version_check(ctx, name, "libvirt_version", "libvirt", "libvirt-daemon-system")


def check_qemu(ctx: Context, name: str) -> Check:
    return _version_check(ctx, name, "qemu_version", "qemu", "qemu-system-x86 (qemu-kvm)")


def _listening(ctx: Context, name: str, port: int) -> bool:
    ls = ctx.fact(name, "listeners")
    return ls is not MISSING and any(entry["port"] == port for entry in ls)


def check_libvirt_daemon(ctx: Context, name: str) -> Check:
    t = ctx.settings.transport
    d = ctx.fact(name, "libvirt_daemons")
    conf = ctx.fact(name, "libvirt_conf") or {}
    libvirtd_conf = conf.get("/etc/libvirt/libvirtd.conf") or {}
    defaults = conf.get("/etc/default/libvirtd") or conf.get("/etc/sysconfig/libvirtd") or {}
    if d is MISSING or d["model"] == "none":
        return Check(name, "libvirt-daemon", FAIL, "no libvirt daemon found", "install and start libvirt-daemon-system")
    model = d["model"]
    args = defaults.get("LIBVIRTD_ARGS", "") + " " + defaults.get("libvirtd_opts", "")
    legacy_listen = d.get("listen_flag") or "--listen" in args.split() or "-l" in args.split()
    units = d.get("units", {})
    if model == "socket-activated" and legacy_listen:
        return Check(
            name, "libvirt-daemon", FAIL,
            "libvirtd --listen is configured while systemd sockets are active: libvirtd refuses to start "
            "('--listen parameter not permitted with systemd activation sockets')",
            f"remove --listen from LIBVIRTD_ARGS and enable libvirtd-{'tls' if t == 'tls' else 'tcp'}.socket "
            f"(configure phase: libvirt-transport, transport={t})",
        )
    if t == "ssh":
        ok = _listening(ctx, name, 22)
        detail = f"{model} libvirt; sshd {'listens' if ok else 'does not listen'} on 22"
        return Check(name, "libvirt-daemon", PASS if ok else FAIL, detail,
                     "" if ok else "start sshd (the ssh transport tunnels libvirt over SSH)")
    port = transport_port(t)
    listening = _listening(ctx, name, port)
    socket_unit = ("virtproxyd" if model == "split" else "libvirtd") + f"-{t}.socket"
    state = units.get(socket_unit)
    detail = f"{model} libvirt; {socket_unit} {state[1] if state else 'absent'}; " \
             f"{'listening' if listening else 'nothing listens'} on {port}"
    if not listening:
        return Check(name, "libvirt-daemon", FAIL, detail,
                     f"the destination's libvirt must accept {t.upper()} on {port} ('Failed to connect to remote "
                     f"libvirt URI'): configure phase libvirt-transport, transport={t}")
    if t == "tcp" and str(libvirtd_conf.get("auth_tcp", "sasl")) == "none":
        return Check(name, "libvirt-daemon", WARN, detail + "; auth_tcp = \"none\"",
                     "unauthenticated TCP gives anyone on the network full control of libvirt: use transport=tls "
                     "(or ssh); keep tcp with auth_tcp=none for labs only")
    return Check(name, "libvirt-daemon", PASS, detail)


def check_vnc(ctx: Context, name: str) -> Check:
    conf = ctx.fact(name, "nova_conf")
    h = ctx.site.host(name)
    if conf is MISSING:
        return Check(name, "vnc-config", FAIL, "/etc/nova/nova.conf not found", "install and configure nova-compute")
    legacy = [k for k in LEGACY_DEFAULT_VNC if option(conf, "DEFAULT", k) is not None]
    listen = option(conf, "vnc", "server_listen")
    proxy = option(conf, "vnc", "server_proxyclient_address")
    problems = []
    if proxy != h.management_address:
        problems.append(f"[vnc] server_proxyclient_address is {proxy or 'unset'} (want {h.management_address})")
    if listen is None:
        problems.append("[vnc] server_listen unset (Nova listens on 127.0.0.1 only)")
    note = f"legacy [DEFAULT] {', '.join(legacy)} ignored by Nova" if legacy else ""
    if problems:
        return Check(
            name, "vnc-config", FAIL, "; ".join(problems + ([note] if note else [])),
            f"set [vnc] server_listen and server_proxyclient_address = {h.management_address} "
            "(the address on the management network, not 127.0.0.1 on multi-NIC hosts) and drop the "
            "legacy lines (configure phase: nova-conf)",
        )
    if legacy:
        return Check(name, "vnc-config", WARN, note, "remove the legacy lines (configure phase: nova-conf)")
    return Check(name, "vnc-config", PASS, f"[vnc] server_listen {listen}, server_proxyclient_address {proxy}")


def check_migration_config(ctx: Context, name: str) -> Check:
    conf = ctx.fact(name, "nova_conf")
    if conf is MISSING:
        return Check(name, "migration-config", FAIL, "/etc/nova/nova.conf not found", "install and configure nova-compute")
    t = ctx.settings.transport
    scheme = option(conf, "libvirt", "live_migration_scheme")
    native_tls = str(option(conf, "libvirt", "live_migration_with_native_tls", "false")).lower() in ("true", "1", "yes", "on")
    uri = option(conf, "libvirt", "live_migration_uri")
    inbound = option(conf, "libvirt", "live_migration_inbound_addr")
    issues = []
    if uri:
        issues.append(f"live_migration_uri is deprecated ({uri}): use live_migration_scheme")
    if t == "tls" and not native_tls:
        issues.append("live_migration_with_native_tls is not true")
    if t == "ssh" and scheme != "ssh":
        issues.append(f"live_migration_scheme is {scheme or 'unset (tcp)'}, want ssh")
    if t == "tcp" and scheme not in (None, "tcp"):
        issues.append(f"live_migration_scheme is {scheme}, want tcp")
    if inbound:
        try:
            ok = ipaddress.ip_address(inbound) in ctx.site.management_cidr
        except ValueError:
            ok = True  # a host name: name-resolution covers it
        if not ok:
            issues.append(f"live_migration_inbound_addr {inbound} is outside {ctx.site.management_cidr}")
    if issues:
        return Check(name, "migration-config", FAIL, "; ".join(issues),
                     f"configure phase nova-conf with transport={t} sets the [libvirt] live_migration_* options")
    return Check(name, "migration-config", PASS,
                 f"transport {t}: scheme {scheme or 'tcp'}, native TLS {'on' if native_tls else 'off'}")


def check_instances_dir(ctx: Context, name: str) -> Check:
    info = ctx.fact(name, "instances_dir")
    if info is MISSING:
        return Check(name, "instances-dir", FAIL, "the instances directory does not exist",
                     "create it owned by nova (configure phase: shared-storage)")
    nova = ctx.fact(name, "nova_ids")
    issues = []
    mode = int(info["mode"], 8)
    if not mode & 0o001:
        issues.append(f"mode {info['mode']} lacks o+x (QEMU cannot reach guest files)")
    if nova is not MISSING and info["uid"] != nova["uid"]:
        issues.append(f"owned by uid {info['uid']} ({info['owner']}), nova is {nova['uid']}")
    shared = is_nfs(info.get("fstype"))
    storage = ctx.settings.storage
    if storage == "nfs" and not shared:
        issues.append(f"{info['path']} is local ({info.get('fstype', '?')}), storage=nfs wants the NFS export mounted")
    if storage == "none" and shared:
        issues.append(f"{info['path']} is on NFS ({info.get('source')}), storage=none wants local dirs")
    free = info.get("avail_bytes")
    detail = (f"{info['path']} {info['mode']} {info['owner']}:{info['group']} on "
              f"{info.get('source', '?')} ({info.get('fstype', '?')})"
              + (f", {free / 2**30:.1f} GiB free" if free is not None else ""))
    if issues:
        return Check(name, "instances-dir", FAIL, "; ".join(issues) + f" — {detail}",
                     "configure phase shared-storage (storage=nfs mounts the export; storage=none uses block migration) "
                     "and identity (ownership)")
    return Check(name, "instances-dir", PASS, detail)


def check_reachability(ctx: Context, name: str) -> Check:
    reach = ctx.fact(name, "reachability")
    if reach is MISSING:
        return Check(name, "reachability", SKIP, "not measured")
    port = transport_port(ctx.settings.transport)
    bad = []
    for (peer, p), state in sorted(reach.items()):
        if p == port and state != "open":
            bad.append(f"{peer}:{p} {state}")
        elif p == MIGRATION_PORT and state == "timeout":
            bad.append(f"{peer}:{p} timeout (filtered)")
        elif p == NFS_PORT and state != "open":
            bad.append(f"{peer}:{p} (NFS) {state}")
    if bad:
        return Check(
            name, "reachability", FAIL, "from here: " + ", ".join(bad),
            f"open TCP {port} (libvirt {ctx.settings.transport}), 49152-49215 (migration), 2049 (NFS) between "
            "the computes on the management network; 'refused' means nothing listens (configure phase "
            "libvirt-transport), 'timeout' means a firewall drops it",
        )
    peers = sorted({peer for peer, _ in reach})
    return Check(name, "reachability", PASS, f"{', '.join(peers) or 'no peers'}: required ports answer")


def check_cpu(ctx: Context, name: str) -> Check:
    """As a destination: can every other compute's guests run here? (Nova's check for kvm)."""
    results = {k.split(":", 1)[1]: v for k, v in ctx.gathered[name].values.items() if k.startswith("cpu_compare:")}
    virt_type = _virt_type(ctx, name)
    if not results:
        host_cpu = ctx.fact(name, "host_cpu")
        if host_cpu is MISSING:
            return Check(name, "cpu-compat", WARN if virt_type == "kvm" else SKIP,
                         "libvirt did not report the host CPU (daemon not running?)",
                         "start libvirtd and run the preflight again")
        return Check(name, "cpu-compat", SKIP, "no other compute to compare with")
    bad = {src: r for src, r in results.items() if r["result"] not in ("identical", "superset")}
    if not bad:
        return Check(name, "cpu-compat", PASS, "guests from " + ", ".join(sorted(results)) + " run here")
    detail = "; ".join(f"from {s}: {r['result']} {r['reason']}".strip() for s, r in sorted(bad.items()))
    if virt_type != "kvm":
        return Check(name, "cpu-compat", PASS,
                     f"virt_type={virt_type}: QEMU emulates the CPU and Nova skips the comparison ({detail})")
    return Check(
        name, "cpu-compat", FAIL, detail,
        "Nova refuses this ('CPU doesn't have compatibility'): set [libvirt] cpu_mode = custom with "
        "cpu_models = a model every compute supports (configure phase: nova-conf), or migrate only "
        "between matching hosts",
    )


def _virt_type(ctx: Context, name: str) -> str:
    conf = ctx.fact(name, "nova_conf")
    return option(conf, "libvirt", "virt_type", "kvm") if conf is not MISSING else "kvm"


#: (name, check) run on every host after ssh, then on computes only
ALL_HOSTS = (("hostname", check_hostname), ("management-address", check_management_address),
             ("name-resolution", check_resolution), ("nova-ids", check_nova_ids))
COMPUTES_ONLY = (
    ("qemu-ids", check_qemu_ids), ("libvirt", check_libvirt), ("qemu", check_qemu),
    ("libvirt-daemon", check_libvirt_daemon), ("vnc-config", check_vnc), ("migration-config", check_migration_config),
    ("instances-dir", check_instances_dir), ("reachability", check_reachability), ("cpu-compat", check_cpu),
)
CHECK_NAMES = ["ssh"] + [name for name, _ in ALL_HOSTS + COMPUTES_ONLY]


def preflight(site: Site, gathered: Mapping[str, HostFacts], settings: Settings | None = None) -> list[Check]:
    """Every preflight check on every gathered host, in inventory order."""
    ctx = Context(site, gathered, settings or Settings())
    results: list[Check] = []
    for h in site.hosts:
        if h.name not in gathered:
            continue
        ssh = check_ssh(ctx, h.name)
        results.append(ssh)
        for label, func in ALL_HOSTS + COMPUTES_ONLY:
            if (label, func) in COMPUTES_ONLY and not h.is_compute:
                results.append(Check(h.name, label, SKIP, "not a compute host"))
            elif ssh.verdict != PASS:
                results.append(Check(h.name, label, SKIP, "host not reached"))
            else:
                results.append(func(ctx, h.name))
    return results


# --------------------------------------------------------------------------- tables


def to_frame(checks: Iterable[Check]) -> pd.DataFrame:
    """Checks as a long table: host, check, verdict, detail, remediation."""
    import pandas as pd

    return pd.DataFrame([asdict(c) for c in checks], columns=["host", "check", "verdict", "detail", "remediation"])


def matrix(checks: Iterable[Check]) -> pd.DataFrame:
    """Hosts × checks, each cell the verdict (inventory and check order kept)."""
    frame = to_frame(checks)
    hosts = list(dict.fromkeys(frame["host"]))
    names = list(dict.fromkeys(frame["check"]))
    return frame.pivot(index="host", columns="check", values="verdict").reindex(index=hosts, columns=names)


def counts(checks: Iterable[Check]) -> dict[str, int]:
    """How many checks got each verdict."""
    c = Counter(ch.verdict for ch in checks)
    return {v: c.get(v, 0) for v in VERDICTS}
