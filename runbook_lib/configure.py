"""The configure phase: plan, show, apply, verify and roll back the changes live migration needs.

A **plan** is pure: the site, the hosts' facts (from the preflight's gathering) and their
current files in, a list of file changes (before/after text and a reason each) and of
actions (service restarts, ``usermod``…) out. Nothing is applied until ``apply = True``.

**Apply** is careful: each file is written only if it still has the content the plan was
made from (someone may have edited it since), after a timestamped backup next to it, via
a temporary file and an atomic rename that keeps owner and mode; its checksum is read back.
Applying the same plan again changes nothing. ``runbook rollback RUN`` puts the backups of
a run back.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import hashlib
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pandas as pd

from . import edits
from .errors import ParamsError, RunbookError
from .facts import MISSING, HostFacts
from .params import Host, Site
from .remote import Remote, sh

LIBVIRTD_CONF = "/etc/libvirt/libvirtd.conf"
VIRTPROXYD_CONF = "/etc/libvirt/virtproxyd.conf"
DEFAULT_LIBVIRTD = "/etc/default/libvirtd"
SYSCONFIG_LIBVIRTD = "/etc/sysconfig/libvirtd"
NOVA_CONF = "/etc/nova/nova.conf"
HOSTS = "/etc/hosts"
FSTAB = "/etc/fstab"
GANESHA_CONF = "/etc/ganesha/ganesha.conf"
EXPORTS = "/etc/exports"
INSTANCES = "/var/lib/nova/instances"

TRANSPORTS = ("tls", "ssh", "tcp-sasl", "tcp")
TLS_DEFAULTS = {
    "ca_cert": "/etc/pki/CA/cacert.pem",
    "server_cert": "/etc/pki/libvirt/servercert.pem",
    "server_key": "/etc/pki/libvirt/private/serverkey.pem",
}


class ConfigureError(RunbookError):
    """The configuration cannot be planned or applied as asked."""


@dataclass(frozen=True)
class Options:
    """What the operator wants (the configure notebook's parameters, validated)."""

    transport: str = "tls"
    insecure_lab_transport: bool = False
    storage: str = "none"
    nfs_server: str | None = None
    nfs_backend: str = "auto"
    reference_host: str | None = None
    nova_uid: int | None = None
    nova_gid: int | None = None
    cpu_mode: str | None = None
    cpu_models: tuple[str, ...] = ()
    vnc_listen: str | None = None
    phases: tuple[str, ...] = ("hosts", "identity", "shared-storage", "libvirt-transport", "nova-conf")


def options(site: Site, **given: Any) -> Options:
    """Validate the configure parameters; the insecure transport only when asked for by name."""
    o = Options(**{k: v for k, v in given.items() if v not in (None, "", [])} | {
        "cpu_models": tuple(given.get("cpu_models") or ()),
        "phases": tuple(given.get("phases") or Options.phases),
    })
    if o.transport not in TRANSPORTS:
        raise ParamsError(f"expected one of {', '.join(TRANSPORTS)}, got {o.transport!r}", key="transport")
    if o.transport == "tcp" and not o.insecure_lab_transport:
        raise ParamsError(
            "transport tcp means libvirt with auth_tcp = \"none\": anyone who reaches port 16509 controls "
            "every guest. Use tls (default) or ssh; for a lab, set insecure_lab_transport = True as well",
            key="transport",
        )
    if o.storage not in ("nfs", "none"):
        raise ParamsError(f"expected nfs or none, got {o.storage!r}", key="storage")
    if o.nfs_backend not in ("auto", "ganesha", "kernel"):
        raise ParamsError(f"expected auto, ganesha or kernel, got {o.nfs_backend!r}", key="nfs_backend")
    unknown = set(o.phases) - set(Options.phases)
    if unknown:
        raise ParamsError(f"unknown phase(s) {', '.join(sorted(unknown))}; expected some of {', '.join(Options.phases)}", key="phases")
    for key in ("nfs_server", "reference_host"):
        name = getattr(o, key)
        if name:
            site.host(name)
    for key in ("nova_uid", "nova_gid"):
        v = getattr(o, key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < 2**31):
            raise ParamsError(f"expected a numeric id, got {v!r}", key=key)
    if o.cpu_mode not in (None, "custom", "host-model", "host-passthrough", "none"):
        raise ParamsError(f"expected custom, host-model, host-passthrough or none, got {o.cpu_mode!r}", key="cpu_mode")
    for m in o.cpu_models:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(m)):
            raise ParamsError(f"not a CPU model name: {m!r}", key="cpu_models")
    return o


# ------------------------------------------------------------------------------ the plan


@dataclass
class FileChange:
    """A planned edit of one file on one host."""

    host: str
    path: str
    before: str | None
    after: str
    reasons: list[str] = field(default_factory=list)
    # filled in by apply
    status: str = "planned"
    backup: str | None = None
    after_sha256: str | None = None

    @property
    def changed(self) -> bool:
        """Whether applying would change the file."""
        return self.before != self.after

    @property
    def before_sha256(self) -> str:
        """Checksum of the content the plan was made from ('absent' for a new file)."""
        return sha256(self.before) if self.before is not None else "absent"

    def diff(self) -> str:
        """The unified diff of this change."""
        return "".join(difflib.unified_diff(
            (self.before or "").splitlines(keepends=True), self.after.splitlines(keepends=True),
            fromfile=f"{self.host}:{self.path}", tofile=f"{self.host}:{self.path} (planned)",
        ))


@dataclass
class Action:
    """A non-file step (restart, usermod…). Not idempotent unless said so."""

    host: str
    phase: str
    description: str
    command: str
    order: int = 50
    status: str = "planned"
    output: str = ""
    #: run only if one of these files changes on the host... (empty: always)
    requires: tuple[str, ...] = ()
    #: ...or if nothing listens on this port yet
    unless_listening: int | None = None


@dataclass
class Plan:
    """Everything a configure run would do, and why nothing else."""

    changes: list[FileChange] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    notes: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def note(self, host: str, phase: str, text: str) -> None:
        self.notes.append({"host": host, "phase": phase, "note": text})

    @property
    def pending(self) -> list[FileChange]:
        return [c for c in self.changes if c.changed]

    def table(self) -> pd.DataFrame:
        """One row per file and action: host, what, status, why."""
        rows = [{"host": c.host, "what": c.path, "kind": "file", "status": "change" if c.changed else "no-op",
                 "why": "; ".join(c.reasons) or "already as wanted"} for c in self.changes]
        rows += [{"host": a.host, "what": a.description, "kind": "action", "status": a.status, "why": a.phase}
                 for a in self.actions]
        rows += [{"host": n["host"], "what": n["note"], "kind": "note", "status": "", "why": n["phase"]} for n in self.notes]
        return pd.DataFrame(rows, columns=["host", "what", "kind", "status", "why"])

    def diff(self) -> "DiffText":
        """Every pending change as one unified diff."""
        return DiffText("".join(c.diff() for c in self.pending) or "(no changes)\n")


class DiffText(str):
    """A diff that notebooks show as such."""

    def _repr_markdown_(self) -> str:
        return "```diff\n" + str(self) + "\n```"

    def __repr__(self) -> str:
        return str(self)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class _Files:
    """The current text of each (host, path), and the edits planned on it so far."""

    def __init__(self, current: Mapping[str, Mapping[str, str | None]]) -> None:
        self.current = current
        self.changes: dict[tuple[str, str], FileChange] = {}

    def edit(self, host: str, path: str, func, reason: str) -> None:
        key = (host, path)
        if key not in self.changes:
            before = self.current.get(host, {}).get(path)
            self.changes[key] = FileChange(host, path, before, before or "")
        ch = self.changes[key]
        new = func(ch.after)
        if new != ch.after:
            ch.after = new
            ch.reasons.append(reason)

    def exists(self, host: str, path: str) -> bool:
        return self.current.get(host, {}).get(path) is not None


def files_to_read(site: Site, opts: Options) -> dict[str, list[str]]:
    """Which files the planner needs from each host."""
    wanted: dict[str, list[str]] = {}
    nfs = nfs_server(site, opts)
    for h in site.hosts:
        paths = [HOSTS]
        if h.is_compute:
            paths += [NOVA_CONF, LIBVIRTD_CONF, VIRTPROXYD_CONF, DEFAULT_LIBVIRTD, SYSCONFIG_LIBVIRTD, FSTAB]
        if h.name == nfs:
            paths += [GANESHA_CONF, EXPORTS]
        wanted[h.name] = paths
    return wanted


def nfs_server(site: Site, opts: Options) -> str | None:
    if opts.nfs_server:
        return opts.nfs_server
    return next((h.name for h in site.hosts if h.role == "controller"), None)


def plan(site: Site, gathered: Mapping[str, HostFacts], current: Mapping[str, Mapping[str, str | None]],
         opts: Options, hosts: Iterable[Host] | None = None) -> Plan:
    """The changes that make ``hosts`` (all by default) ready for live migration."""
    targets = list(hosts if hosts is not None else site.hosts)
    p = Plan()
    files = _Files(current)
    if opts.transport == "tcp":
        p.warnings.append(
            "INSECURE LAB TRANSPORT: libvirt will accept unauthenticated TCP on 16509 (auth_tcp = \"none\"). "
            "Never on a production network."
        )
    for h in targets:
        hf = gathered.get(h.name)
        if hf is None or not hf.reached:
            p.note(h.name, "all", f"not planned: host not reached ({hf.error if hf else 'not gathered'})")
            continue
        if "hosts" in opts.phases:
            _plan_hosts(site, h, files)
        if h.is_compute:
            if "nova-conf" in opts.phases:
                _plan_nova_conf(site, h, hf, files, opts, p)
            if "libvirt-transport" in opts.phases:
                _plan_transport(h, hf, files, opts, p)
    if "identity" in opts.phases:
        _plan_identity(site, gathered, targets, opts, p)
    if "shared-storage" in opts.phases:
        _plan_storage(site, gathered, targets, files, opts, p)
    p.changes = list(files.changes.values())
    p.actions = [a for a in p.actions if _needed(a, p, gathered)]
    p.actions.sort(key=lambda a: (a.order, site.names.index(a.host)))
    return p


def _needed(a: Action, p: Plan, gathered: Mapping[str, HostFacts]) -> bool:
    """Restarts and the like only when something they depend on changes (re-apply is a no-op)."""
    if not a.requires and a.unless_listening is None:
        return True
    if any(c.host == a.host and c.path in a.requires for c in p.pending):
        return True
    if a.unless_listening is not None:
        listeners = gathered[a.host].get("listeners") if a.host in gathered else MISSING
        if listeners is MISSING or not any(e["port"] == a.unless_listening for e in listeners):
            return True
    if not any(c.host == a.host and c.path in a.requires for c in p.changes):
        p.note(a.host, a.phase, f"no need to {a.description}: already in place")
    else:
        p.note(a.host, a.phase, f"no need to {a.description}: its files are unchanged")
    return False


def _plan_hosts(site: Site, h: Host, files: _Files) -> None:
    entries = [(o.management_address, o.name) for o in site.hosts]
    files.edit(h.name, HOSTS, lambda t: edits.hosts_entries(t, entries),
               "every host name resolves to its management address (libvirt connects by name)")


def _restart_if_present(hf: HostFacts, name: str) -> str:
    """Restart a service if the host has it (a host without nova-compute is not an error)."""
    if hf.get("init") == "systemd":
        return (f"if systemctl cat {sh(name)} >/dev/null 2>&1; then systemctl restart {sh(name)}; "
                f"else echo 'no {name} on this host'; fi")
    return (f"if [ -x /etc/init.d/{name} ]; then service {sh(name)} restart; "
            f"else echo 'no {name} on this host'; fi")


def _plan_nova_conf(site: Site, h: Host, hf: HostFacts, files: _Files, opts: Options, p: Plan) -> None:
    if not files.exists(h.name, NOVA_CONF):
        return
    # nova-compute reads nova.conf at start only: restart it after the file changes (last, after
    # libvirtd, so that it reconnects to the new libvirt)
    p.actions.append(Action(h.name, "nova-conf", "restart nova-compute", _restart_if_present(hf, "nova-compute"),
                            order=95, requires=(NOVA_CONF,)))
    addr = h.management_address
    e = lambda func, why: files.edit(h.name, NOVA_CONF, func, why)  # noqa: E731
    for legacy in ("vncserver_listen", "vncserver_proxyclient_address"):
        e(lambda t, k=legacy: edits.unset_ini(t, "DEFAULT", k, "ignored by Nova, moved to [vnc]"),
          f"[DEFAULT] {legacy} is ignored by Nova (moved to [vnc])")
    e(lambda t: edits.set_ini(t, "vnc", "server_listen", opts.vnc_listen or addr),
      f"VNC listens on the management address {opts.vnc_listen or addr}")
    e(lambda t: edits.set_ini(t, "vnc", "server_proxyclient_address", addr),
      f"the console proxy reaches this host's VNC on {addr} (not 127.0.0.1: the multi-NIC lesson)")
    e(lambda t: edits.unset_ini(t, "libvirt", "live_migration_uri", "deprecated, use live_migration_scheme"),
      "live_migration_uri is deprecated")
    scheme = {"tls": "tcp", "ssh": "ssh", "tcp": "tcp", "tcp-sasl": "tcp"}[opts.transport]
    e(lambda t: edits.set_ini(t, "libvirt", "live_migration_scheme", scheme), f"transport {opts.transport}")
    tls = "true" if opts.transport == "tls" else "false"
    e(lambda t: edits.set_ini(t, "libvirt", "live_migration_with_native_tls", tls),
      f"native TLS {'on' if tls == 'true' else 'off'} for transport {opts.transport}")
    e(lambda t: edits.set_ini(t, "libvirt", "live_migration_inbound_addr", addr),
      f"migration traffic comes in on the management address {addr}")
    if opts.cpu_mode:
        e(lambda t: edits.set_ini(t, "libvirt", "cpu_mode", opts.cpu_mode), f"cpu_mode {opts.cpu_mode}")
    if opts.cpu_models:
        e(lambda t: edits.set_ini(t, "libvirt", "cpu_models", ",".join(opts.cpu_models)), "cpu_models from params")


def _plan_transport(h: Host, hf: HostFacts, files: _Files, opts: Options, p: Plan) -> None:
    t = opts.transport
    daemons = hf.get("libvirt_daemons")
    model = daemons["model"] if daemons is not MISSING else "none"
    init = hf.get("init")
    if model == "none":
        p.note(h.name, "libvirt-transport", "no libvirt daemon found: install libvirt-daemon-system first")
        return
    if t == "ssh":
        p.note(h.name, "libvirt-transport",
               "transport ssh: libvirt is reached through sshd; give the nova user on each compute an SSH key "
               "trusted by the others (not automated in this version)")
        return
    conf_path = VIRTPROXYD_CONF if model == "split" else LIBVIRTD_CONF
    daemon = "virtproxyd" if model == "split" else "libvirtd"
    e = lambda func, why: files.edit(h.name, conf_path, func, why)  # noqa: E731
    if t in ("tcp", "tcp-sasl"):
        auth = "none" if t == "tcp" else "sasl"
        e(lambda tx: edits.set_libvirt(tx, "auth_tcp", auth),
          f"auth_tcp = {auth}" + (" (INSECURE: lab only, asked for with insecure_lab_transport)" if auth == "none" else ""))
    if t == "tls":
        for key, default in (("ca_file", TLS_DEFAULTS["ca_cert"]), ("cert_file", TLS_DEFAULTS["server_cert"]),
                             ("key_file", TLS_DEFAULTS["server_key"])):
            e(lambda tx, k=key, v=default: edits.set_libvirt(tx, k, v), f"{key}: the host's libvirt TLS certificate")
    port_kind = "tls" if t == "tls" else "tcp"
    port = 16514 if t == "tls" else 16509
    defaults_path = SYSCONFIG_LIBVIRTD if files.exists(h.name, SYSCONFIG_LIBVIRTD) else DEFAULT_LIBVIRTD
    if model in ("socket-activated", "split") and init == "systemd":
        # never --listen beside active sockets: libvirtd exits ("--listen parameter not permitted
        # with systemd activation sockets")
        if files.exists(h.name, defaults_path):
            files.edit(h.name, defaults_path,
                       lambda tx: _drop_listen(tx), "no --listen: systemd socket activation provides the listener")
        unit = f"{daemon}-{port_kind}.socket"
        p.actions.append(Action(h.name, "libvirt-transport", f"stop {daemon}, enable {unit}, start {daemon}",
                                f"systemctl stop {daemon}.service; systemctl enable --now {unit} && "
                                f"systemctl start {daemon}.service", order=60,
                                requires=(conf_path, defaults_path), unless_listening=port))
    else:
        e(lambda tx: edits.set_libvirt(tx, f"listen_{port_kind}", 1), f"listen_{port_kind} = 1 (no socket activation here)")
        if t != "tls":
            e(lambda tx: edits.set_libvirt(tx, "listen_tls", 0), "listen_tls = 0 (no certificates for TLS on this host)")
        files.edit(h.name, defaults_path, lambda tx: edits.set_shell_var(tx, "LIBVIRTD_ARGS", "--listen"),
                   "libvirtd --listen: legal here, the host has no systemd socket activation")
        restart = "systemctl restart libvirtd" if init == "systemd" else "service libvirtd restart"
        p.actions.append(Action(h.name, "libvirt-transport", "restart libvirtd", restart, order=60,
                                requires=(conf_path, defaults_path), unless_listening=port))
    if t == "tls":
        p.actions.append(Action(h.name, "libvirt-transport", "check the TLS certificates exist",
                                " && ".join(f"test -r {sh(v)}" for v in TLS_DEFAULTS.values()), order=55,
                                requires=(conf_path,), unless_listening=port))


def _drop_listen(text: str) -> str:
    vars_ = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(LIBVIRTD_ARGS|libvirtd_opts)=(.*)$", line)
        if m:
            vars_[m.group(1)] = m.group(2).strip().strip("\"'")
    for name, value in vars_.items():
        words = [w for w in value.split() if w not in ("--listen", "-l")]
        if words != value.split():
            text = edits.set_shell_var(text, name, " ".join(words))
    return text


def _plan_identity(site: Site, gathered: Mapping[str, HostFacts], targets: list[Host], opts: Options, p: Plan) -> None:
    ref_name = opts.reference_host or nfs_server(site, opts)
    ref = gathered.get(ref_name).get("nova_ids") if ref_name in gathered and gathered[ref_name].reached else MISSING
    uid = opts.nova_uid if opts.nova_uid is not None else (ref["uid"] if ref is not MISSING else None)
    gid = opts.nova_gid if opts.nova_gid is not None else (ref["gid"] if ref is not MISSING else None)
    if uid is None or gid is None:
        p.note(ref_name or "-", "identity", "no reference nova uid/gid: set reference_host or nova_uid/nova_gid")
        return
    for h in targets:
        hf = gathered.get(h.name)
        if hf is None or not hf.reached:
            continue
        ids = hf.get("nova_ids")
        if ids is MISSING:
            p.note(h.name, "identity", "no nova user on this host: nothing to align")
            continue
        if (ids["uid"], ids["gid"]) == (uid, gid):
            p.note(h.name, "identity", f"nova already uid {uid} gid {gid}")
            continue
        old_uid, old_gid = ids["uid"], ids["gid"]
        stop = "nova-compute" if h.is_compute else "nova-api"
        svc = _service_cmd(hf, stop)
        # only local file systems: never walk NFS (the server owns those files) or /proc
        walk = (
            "for m in $(findmnt -rn -o TARGET,FSTYPE | awk '$2 ~ /^(ext[234]|xfs|btrfs|overlay|tmpfs|zfs|f2fs)$/ {print $1}'); do "
            f"find \"$m\" -xdev \\( -uid {old_uid} -o -gid {old_gid} \\) -print 2>/dev/null; done | sort -u > /tmp/runbook-reown.$$; "
            f"while read -r f; do [ \"$(stat -c %u \"$f\")\" = {old_uid} ] && chown -h {uid} \"$f\"; "
            f"[ \"$(stat -c %g \"$f\")\" = {old_gid} ] && chgrp -h {gid} \"$f\"; done < /tmp/runbook-reown.$$; "
            "echo \"re-owned $(wc -l < /tmp/runbook-reown.$$) files\"; rm -f /tmp/runbook-reown.$$"
        )
        p.actions += [
            Action(h.name, "identity", f"stop {stop} while ids change", f"{svc('stop')} || true", order=10),
            Action(h.name, "identity", f"nova gid {old_gid} → {gid}, uid {old_uid} → {uid}",
                   f"groupmod -g {gid} nova && usermod -u {uid} -g {gid} nova", order=20),
            Action(h.name, "identity", f"re-own files of uid {old_uid} / gid {old_gid} on local file systems", walk, order=21),
            Action(h.name, "identity", f"start {stop}", f"{svc('start')} || true", order=90),
        ]


def _service_cmd(hf: HostFacts, name: str):
    init = hf.get("init")
    if init == "systemd":
        return lambda verb: f"systemctl {verb} {sh(name)} 2>/dev/null"
    return lambda verb: f"service {sh(name)} {verb} 2>/dev/null"


def _plan_storage(site: Site, gathered: Mapping[str, HostFacts], targets: list[Host], files: _Files,
                  opts: Options, p: Plan) -> None:
    computes = [h for h in targets if h.is_compute and gathered.get(h.name) and gathered[h.name].reached]
    if opts.storage == "none":
        for h in computes:
            inst = gathered[h.name].get("instances_dir")
            if inst is not MISSING and inst.get("fstype", "").startswith(("nfs", "fuse.")):
                p.note(h.name, "shared-storage", f"{inst['path']} is on {inst.get('source')}: storage=none expects "
                       "local dirs; unmount it to use block migration (not done automatically)")
            else:
                p.note(h.name, "shared-storage", "local instances dir: migrations will be block migrations")
        return
    server = nfs_server(site, opts)
    if server is None:
        p.note("-", "shared-storage", "no NFS server: set nfs_server")
        return
    srv = site.host(server)
    if any(h.name == server for h in targets):
        backend = opts.nfs_backend
        if backend == "auto":
            backend = "ganesha" if files.exists(server, GANESHA_CONF) else "kernel"
        clients = str(site.management_cidr)
        p.actions.append(Action(server, "shared-storage", f"give {INSTANCES} o+x on the server",
                                f"mkdir -p {INSTANCES}; stat -c %A {INSTANCES} | grep -q 'x$' || chmod o+x {INSTANCES}",
                                order=39, requires=(GANESHA_CONF, EXPORTS)))
        if backend == "ganesha":
            files.edit(server, GANESHA_CONF, lambda t: edits.ganesha_export(t, 77, INSTANCES, clients),
                       f"export {INSTANCES} to {clients} only (not *)")
            p.actions.append(Action(server, "shared-storage", "restart nfs-ganesha",
                                    _service_cmd(gathered[server], "nfs-ganesha")("restart"), order=40,
                                    requires=(GANESHA_CONF,), unless_listening=2049))
        else:
            line = f"{INSTANCES} {clients}(rw,sync,no_subtree_check,no_root_squash)"
            files.edit(server, EXPORTS, lambda t: edits.ensure_line(t, line, [re.compile(rf"^{re.escape(INSTANCES)}\s")]),
                       f"export {INSTANCES} to {clients} only (not *)")
            p.actions.append(Action(server, "shared-storage", "exportfs -ra", "exportfs -ra", order=40,
                                    requires=(EXPORTS,)))
    fstab_line = f"{srv.management_address}:{INSTANCES} {INSTANCES} nfs defaults,_netdev 0 0"
    for h in computes:
        if h.name == server:
            continue
        files.edit(h.name, FSTAB, lambda t: edits.ensure_line(t, fstab_line, [re.compile(rf"\s{re.escape(INSTANCES)}\s")]),
                   f"mount the instances dir from {server}")
        inst = gathered[h.name].get("instances_dir")
        mounted = inst is not MISSING and inst.get("source") == f"{srv.management_address}:{INSTANCES}" \
            and int(inst.get("mode", "0"), 8) & 0o001
        if mounted:
            p.note(h.name, "shared-storage", f"{INSTANCES} already mounted from {server} with o+x")
        else:
            # o+x is a property of the exported directory: it is set on the server, and only
            # checked through the mount
            p.actions.append(Action(
                h.name, "shared-storage", f"mount {INSTANCES} (and check o+x)",
                f"mkdir -p {INSTANCES}; mountpoint -q {INSTANCES} || mount {INSTANCES}; "
                f"mountpoint -q {INSTANCES} && stat -c %A {INSTANCES} | grep -q 'x$' "
                f"|| {{ echo '{INSTANCES} is not mounted, or lacks o+x'; exit 1; }}",
                order=45))


# ------------------------------------------------------------------------------ reading and applying


def read_files(remote: Remote, wanted: Mapping[str, list[str]]) -> dict[str, dict[str, str | None]]:
    """The exact bytes (as text) of each wanted file on each host; None where absent."""
    commands = {}
    for host, paths in wanted.items():
        parts = [f'if [ -f {sh(p)} ]; then echo "F {p}"; base64 -w0 {sh(p)}; echo; else echo "A {p}"; fi' for p in paths]
        commands[host] = "; ".join(parts)
    results = remote.run_each(commands)
    found: dict[str, dict[str, str | None]] = {}
    for host, r in results.items():
        if not r.ok:
            raise ConfigureError(f"cannot read configuration files on {host}: {r.error or r.stderr.strip()}")
        files: dict[str, str | None] = {}
        lines = r.stdout.splitlines()
        i = 0
        while i < len(lines):
            kind, _, path = lines[i].partition(" ")
            if kind == "F":
                files[path] = base64.b64decode(lines[i + 1]).decode("utf-8", errors="surrogateescape") if i + 1 < len(lines) else ""
                i += 2
            else:
                files[path] = None
                i += 1
        found[host] = files
    return found


def _write_command(change: FileChange, stamp: str) -> str:
    data = base64.b64encode(change.after.encode("utf-8", errors="surrogateescape")).decode()
    p = sh(change.path)
    backup = f"{change.path}.runbook-{stamp}.bak"
    b = sh(backup)
    return "\n".join([
        "set -e",
        # whatever fails (a full disk, a dropped session), no partial backup or temp file stays
        f"t=; trap 'rm -f {b}.part \"$t\"' EXIT",
        f"cur=absent; [ -f {p} ] && cur=$(sha256sum {p} | cut -d' ' -f1)",
        f"[ \"$cur\" = {change.before_sha256} ] || {{ echo \"CHANGED-SINCE-PLAN $cur\"; exit 3; }}",
        f"if [ -f {p} ]; then cp -a {p} {b}.part; mv -f {b}.part {b}; echo \"BACKUP {backup}\"; fi",
        f"mkdir -p $(dirname {p})",
        f"t=$(mktemp {p}.runbook-tmp.XXXXXX)",
        f"printf %s {sh(data)} | base64 -d > \"$t\"",
        f"if [ -f {p} ]; then chmod --reference={p} \"$t\"; chown --reference={p} \"$t\"; else chmod 644 \"$t\"; fi",
        "sync \"$t\" 2>/dev/null || true",
        f"mv -f \"$t\" {p}",
        "t=",
        f"echo \"AFTER $(sha256sum {p} | cut -d' ' -f1)\"",
    ])


def apply(remote: Remote, p: Plan, stamp: str | None = None) -> Plan:
    """Apply a plan: files first (backup, temp file, atomic rename, read back), then actions in order.

    A host whose file write fails gets none of its actions; other hosts go on. Every
    outcome is recorded on the plan's changes and actions.
    """
    stamp = stamp or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    failed_hosts: set[str] = set()
    for host in dict.fromkeys(c.host for c in p.pending):
        for ch in [c for c in p.pending if c.host == host]:
            if host in failed_hosts:
                ch.status = "skipped (earlier failure on host)"
                continue
            r = remote.run_one(host, _write_command(ch, stamp))
            out = r.stdout
            for line in out.splitlines():
                if line.startswith("BACKUP "):
                    ch.backup = line[7:]
                elif line.startswith("AFTER "):
                    ch.after_sha256 = line[6:]
            if r.ok and ch.after_sha256 == sha256(ch.after):
                ch.status = "applied"
            else:
                failed_hosts.add(host)
                ch.status = ("refused: changed since the plan was made" if "CHANGED-SINCE-PLAN" in out
                             else f"failed: {r.error or r.stderr.strip() or out.strip()}")
    for c in p.changes:
        if not c.changed:
            c.status = "no-op"
    for a in p.actions:
        if a.host in failed_hosts:
            a.status = "skipped (file change failed)"
            continue
        r = remote.run_one(a.host, a.command, timeout=max(remote.site.ssh.command_timeout, 300))
        a.output = (r.stdout + r.stderr).strip()[-2000:]
        a.status = "done" if r.ok else f"failed: {r.error or a.output[-300:]}"
        if not r.ok and a.phase == "identity":
            failed_hosts.add(a.host)
    return p


def records(p: Plan) -> list[dict[str, Any]]:
    """The plan's outcome as plain data for the archive (no file contents, only checksums)."""
    out = []
    for c in p.changes:
        out.append({"host": c.host, "path": c.path, "status": c.status, "reasons": c.reasons,
                    "backup": c.backup, "before_sha256": c.before_sha256, "after_sha256": c.after_sha256})
    for a in p.actions:
        out.append({"host": a.host, "action": a.description, "phase": a.phase, "status": a.status,
                    "output": a.output[-500:]})
    return out


def rollback_commands(changes: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    """Per host, the (path, command) pairs that restore a run's backups atomically.

    A file is restored only if it still has the content the run wrote (else someone changed
    it since, and the command refuses).
    """
    per_host: dict[str, list[tuple[str, str]]] = {}
    for c in changes:
        if c.get("status") != "applied" or not c.get("path"):
            continue
        p, after = sh(c["path"]), c.get("after_sha256") or ""
        if c.get("backup"):
            b = sh(c["backup"])
            cmd = (f"set -e; cur=$(sha256sum {p} | cut -d' ' -f1); [ \"$cur\" = {sh(after)} ] || "
                   f"{{ echo \"CHANGED-SINCE-RUN $cur\"; exit 3; }}; t=$(mktemp {p}.runbook-tmp.XXXXXX); "
                   f"cp -a {b} \"$t\"; mv -f \"$t\" {p}; echo restored")
        else:  # the run created the file
            cmd = (f"set -e; cur=$(sha256sum {p} | cut -d' ' -f1); [ \"$cur\" = {sh(after)} ] || "
                   f"{{ echo \"CHANGED-SINCE-RUN $cur\"; exit 3; }}; rm -f {p}; echo removed")
        per_host.setdefault(c["host"], []).append((c["path"], cmd))
    return per_host


def diff_table(before: Iterable[Any], after: Iterable[Any]) -> pd.DataFrame:
    """Checks before and after the change, side by side (only those that differ or still fail)."""
    b = {(c.host, c.check): c.verdict for c in before}
    rows = []
    for c in after:
        old = b.get((c.host, c.check), "")
        if old != c.verdict or c.verdict != "pass":
            rows.append({"host": c.host, "check": c.check, "before": old, "after": c.verdict, "detail": c.detail})
    return pd.DataFrame(rows, columns=["host", "check", "before", "after", "detail"])


def as_checks(p: Plan) -> list[Any]:
    """The plan's outcome as verdicts for the run summary: a failed write or action is a failure."""
    from .checks import FAIL, PASS, SKIP, WARN, Check

    out = []
    for c in p.changes:
        verdict = {"applied": PASS, "no-op": PASS, "planned": SKIP}.get(c.status, FAIL)
        out.append(Check(c.host, f"file {c.path}", verdict, c.status, "" if verdict != FAIL else "see the apply table"))
    for a in p.actions:
        verdict = PASS if a.status == "done" else SKIP if a.status == "planned" else FAIL
        out.append(Check(a.host, f"action {a.description}", verdict, a.status))
    for w in p.warnings:
        out.append(Check("-", "warning", WARN, w))
    return out


# ------------------------------------------------------------------------------ offline (render-config)


def offline_facts(root: Path, host: Host) -> HostFacts:
    """What the planner needs to know about a host, read from a directory laid out like ``/``."""
    from .facts.system import parse_user_ids

    root = Path(root)
    unit_dirs = [root / "lib/systemd/system", root / "usr/lib/systemd/system", root / "etc/systemd/system"]
    has = lambda unit: any((d / unit).exists() for d in unit_dirs)  # noqa: E731
    init = "systemd" if any(d.is_dir() for d in unit_dirs) else "sysv"
    if has("virtproxyd.socket") and not has("libvirtd.socket"):
        model = "split"
    elif has("libvirtd.socket") and init == "systemd":
        model = "socket-activated"
    elif (root / "etc/libvirt/libvirtd.conf").exists():
        model = "monolithic"
    else:
        model = "none"
    passwd = (root / "etc/passwd").read_text() if (root / "etc/passwd").exists() else ""
    group = (root / "etc/group").read_text() if (root / "etc/group").exists() else ""
    nova = [line for line in (passwd + group).splitlines() if line.startswith("nova:")]
    return HostFacts(host.name, {
        "init": init,
        "libvirt_daemons": {"model": model, "units": {}, "processes": [], "listen_flag": False},
        "nova_ids": parse_user_ids("\n".join(nova), 0),
        "instances_dir": MISSING,
    })


def offline_files(root: Path, paths: Iterable[str]) -> dict[str, str | None]:
    """The files under ``root`` (None where absent)."""
    out: dict[str, str | None] = {}
    for p in paths:
        f = Path(root) / p.lstrip("/")
        out[p] = f.read_text(encoding="utf-8", errors="surrogateescape") if f.is_file() else None
    return out


def apply_offline(root: Path, p: Plan, stamp: str) -> None:
    """Apply a plan's file changes under ``root`` (backup, temp file, atomic rename)."""
    import os
    import shutil
    import tempfile

    for ch in p.pending:
        target = Path(root) / ch.path.lstrip("/")
        cur = target.read_text(encoding="utf-8", errors="surrogateescape") if target.is_file() else None
        if (sha256(cur) if cur is not None else "absent") != ch.before_sha256:
            ch.status = "refused: changed since the plan was made"
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if cur is not None:
            backup = target.with_name(f"{target.name}.runbook-{stamp}.bak")
            shutil.copy2(target, backup)
            ch.backup = str(backup)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.runbook-tmp.")
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(ch.after)
        if cur is not None:
            shutil.copymode(target, tmp)
        os.replace(tmp, target)
        ch.after_sha256 = sha256(target.read_text(encoding="utf-8", errors="surrogateescape"))
        ch.status = "applied" if ch.after_sha256 == sha256(ch.after) else "failed: read back differs"


# ------------------------------------------------------------------------------ notebook calls


def preflight_settings(opts: Options) -> "Any":
    """The preflight settings that check what this configuration should achieve."""
    from .checks import Settings

    return Settings(transport="tcp" if opts.transport in ("tcp", "tcp-sasl") else opts.transport,
                    storage=opts.storage, nfs_server=opts.nfs_server)


def read_current(site: Site, hosts: Iterable[Host], opts: Options) -> dict[str, dict[str, str | None]]:
    """The current content of every file the plan may edit, from the hosts (one round trip each)."""
    names = {h.name for h in hosts}
    wanted = {h: paths for h, paths in files_to_read(site, opts).items() if h in names}
    with Remote(site) as remote:
        return read_files(remote, wanted)


def apply_if(site: Site, p: Plan, apply_changes: bool) -> pd.DataFrame:
    """Apply the plan when ``apply_changes`` is true; the outcome table either way."""
    if apply_changes:
        with Remote(site) as remote:
            apply(remote, p)
    table = p.table()
    if not apply_changes:
        table["status"] = table["status"].replace({"change": "planned (apply = False)"})
    return table


def outcome(p: Plan, after: Iterable[Any] | None) -> list[Any]:
    """The verdicts a configure run archives: the plan's outcome, then the re-checked hosts."""
    return as_checks(p) + list(after or [])


def changed_files(p: Plan) -> list[str]:
    """``host:path`` of every file the run changed."""
    return [f"{c.host}:{c.path}" for c in p.changes if c.status == "applied"]


def verify_storage(site: Site, opts: Options, hosts: Iterable[Host], applied: bool, timeout: float = 240) -> list[Any]:
    """Prove the instances dir is shared (or local) as wanted, with real files.

    ``nfs``: nova on one compute writes a file, another compute reads it back and must see
    nova as its owner (the numeric ids agree). A freshly restarted NFS server refuses
    writes during its grace period (90 s by default): the write waits it out, up to
    ``timeout``. ``none``: every instances dir is on a local file system.
    """
    from .checks import FAIL, PASS, SKIP, Check, is_nfs

    computes = [h for h in hosts if h.is_compute]
    if not applied:
        return [Check(h.name, "storage-verified", SKIP, "not applied") for h in computes]
    if "shared-storage" not in opts.phases:
        return []
    out: list[Any] = []
    with Remote(site) as remote:
        if opts.storage == "none":
            res = remote.run(f"findmnt -n -o FSTYPE -T {INSTANCES}", [h.name for h in computes])
            for name, r in res.items():
                fstype = r.stdout.strip()
                ok = r.ok and not is_nfs(fstype)
                out.append(Check(name, "storage-verified", PASS if ok else FAIL,
                                 f"{INSTANCES} on {fstype or r.error or '?'}" + ("" if ok else ": not local"),
                                 "" if ok else "unmount the NFS share for block migration"))
            return out
        if len(computes) < 2:
            return [Check(h.name, "storage-verified", SKIP, "one compute: nothing to share with") for h in computes]
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        f = f"{INSTANCES}/.runbook-verify-{stamp}"
        writer = computes[0]
        w = remote.run_one(writer.name, f"su -s /bin/sh nova -c {sh(f'echo {stamp} > {f}')}", timeout=timeout)
        if not w.ok:
            return [Check(writer.name, "storage-verified", FAIL, f"nova cannot write {f}: {(w.error or w.stderr).strip()}",
                          "check the export (rw), the mount, and the nova uid (configure phases shared-storage, identity)")]
        out.append(Check(writer.name, "storage-verified", PASS, f"nova wrote {f}"))
        for reader in computes[1:]:
            r = remote.run_one(reader.name, f"stat -c '%U %u' {sh(f)} && cat {sh(f)}", timeout=timeout)
            words = r.stdout.split()
            ok = r.ok and len(words) == 3 and words[0] == "nova" and words[2] == stamp
            out.append(Check(reader.name, "storage-verified", PASS if ok else FAIL,
                             f"reads {f} as {' '.join(words[:2]) or (r.error or r.stderr).strip()}",
                             "" if ok else "the owner must be nova on every compute: align the ids (identity)"))
        remote.run_one(writer.name, f"rm -f {sh(f)}")
    return out
