"""The preflight phase: read-only readiness checks across the site's hosts.

Each public function here is one notebook cell's call. Nothing in this module changes a
host. Facts are gathered in two rounds of one SSH round trip per host: first everything a
host can tell about itself (and what it can reach), then, on each compute, libvirt's
verdict on every other compute's CPU (the comparison Nova makes before a live migration).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Mapping

from . import checks, facts
from .checks import Check, Settings
from .facts import MISSING, Fact, HostFacts
from .facts import libvirt as lv
from .facts import nova as nv
from .facts import system as sysf
from .facts.nova import option
from .params import Host, Site
from .remote import Remote

if TYPE_CHECKING:  # pandas is imported where a table is built: 0.3 s saved per process that needs none
    import pandas as pd

    from .report import Table


def inventory(site: Site) -> pd.DataFrame:
    """The inventory as a table: name, role, SSH endpoint, management address."""
    import pandas as pd

    return pd.DataFrame(
        [
            {"host": h.name, "role": h.role, "ssh": f"{h.user}@{h.address}:{h.port}",
             "management_address": h.management_address}
            for h in site.hosts
        ]
    ).set_index("host")


def settings(transport: str = "tls", storage: str = "auto", nfs_server: str | None = None, site: Site | None = None) -> Settings:
    """Validate the phase's own parameters into :class:`Settings`."""
    from .errors import ParamsError

    if transport not in checks.TRANSPORTS:
        raise ParamsError(f"expected one of {', '.join(checks.TRANSPORTS)}, got {transport!r}", key="transport")
    if storage not in checks.STORAGE_MODES:
        raise ParamsError(f"expected one of {', '.join(checks.STORAGE_MODES)}, got {storage!r}", key="storage")
    if nfs_server and site is not None:
        from .params import check_host_names

        check_host_names(site, nfs_server, "nfs_server")
    return Settings(transport=transport, storage=storage, nfs_server=nfs_server or None)


def host_facts(site: Site, host: Host, wanted: Settings) -> list[Fact]:
    """The first-round facts for one host."""
    fs = [sysf.hostname(), sysf.addresses(), sysf.resolution(site.names), sysf.user_ids("nova"),
          sysf.init_system(), sysf.listeners()]
    if not host.is_compute:
        return fs
    fs += [
        sysf.qemu_user_ids(), sysf.cpu(), sysf.memory(),
        lv.libvirt_version(), lv.qemu_version(), lv.daemons(), lv.conf_files(), lv.host_cpu(),
        nv.nova_conf(), nv.instances_dir(),
    ]
    targets = []
    port = checks.transport_port(wanted.transport)
    for other in site.computes:
        if other.name != host.name:
            targets += [(other.name, other.management_address, port),
                        (other.name, other.management_address, checks.MIGRATION_PORT)]
    nfs = wanted.nfs_server or next((h.name for h in site.hosts if h.role == "controller"), None)
    if wanted.storage != "none" and nfs and nfs != host.name:
        targets.append((nfs, site.host(nfs).management_address, checks.NFS_PORT))
    fs.append(sysf.reachability(targets))
    return fs


def gather(site: Site, targets: Iterable[Host] | None = None, wanted: Settings | None = None,
           progress: bool = False) -> dict[str, HostFacts]:
    """Gather every preflight fact from ``targets`` (all hosts by default), in parallel.

    With ``progress``, a tqdm bar (a widget in JupyterLab, text in a terminal) counts the
    hosts' round trips as they end; the facts are the same either way.
    """
    wanted = wanted or Settings()
    hosts = list(targets if targets is not None else site.hosts)
    bar = _progress_bar(len(hosts)) if progress else None
    tick = (lambda _result: bar.update(1)) if bar is not None else None
    try:
        with Remote(site) as remote:
            gathered = facts.gather_each(remote, {h.name: host_facts(site, h, wanted) for h in hosts}, tick)
            second = cpu_compare_facts(site, gathered)
            if second:
                if bar is not None:
                    bar.set_description("comparing CPUs")
                    bar.total += len(second)
                    bar.refresh()
                facts.merge(gathered, facts.gather_each(remote, second, tick))
                spread_cpu_compares(gathered)
    finally:
        if bar is not None:
            bar.close()
    return gathered


def _progress_bar(total: int) -> "object | None":
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a progress bar is a nicety, never a reason to fail
        return None
    return tqdm(total=total, desc="gathering facts", unit="host")


def _cpu_key(xml: str) -> str:
    import hashlib

    return hashlib.sha256(xml.encode()).hexdigest()[:12]


def cpu_compare_facts(site: Site, gathered: Mapping[str, HostFacts]) -> dict[str, list[Fact]]:
    """Second round: on each reached compute, compare the other computes' host CPUs.

    Each distinct CPU definition is compared once per destination (a fleet of identical
    hosts costs one ``virsh`` call per host, not one per pair).
    """
    cpus = {n: hf.get("host_cpu") for n, hf in gathered.items() if hf.reached and hf.get("host_cpu") is not MISSING}
    keys = {src: _cpu_key(cpu["xml"]) for src, cpu in cpus.items()}   # once per host, not per pair
    plan: dict[str, list[Fact]] = {}
    for dest, hf in gathered.items():
        if not hf.reached or not site.host(dest).is_compute or hf.get("host_cpu") is MISSING:
            continue
        conf = hf.get("nova_conf")
        virt_type = option(conf, "libvirt", "virt_type", "kvm") if conf is not MISSING else "kvm"
        distinct = {keys[src]: cpu["xml"] for src, cpu in cpus.items() if src != dest}
        if distinct:
            plan[dest] = [lv.cpu_compare(xml, virt_type, f"cpu_xml:{key}") for key, xml in distinct.items()]
    return plan


def spread_cpu_compares(gathered: Mapping[str, HostFacts]) -> None:
    """Give each destination one ``cpu_compare:<source>`` fact per source, from the distinct compares."""
    cpus = {n: hf.get("host_cpu") for n, hf in gathered.items() if hf.reached and hf.get("host_cpu") is not MISSING}
    keys = {src: f"cpu_xml:{_cpu_key(cpu['xml'])}" for src, cpu in cpus.items()}   # once per host
    for dest, hf in gathered.items():
        for src, key in keys.items():
            if src != dest and key in hf.values:
                hf.values[f"cpu_compare:{src}"] = hf.values[key]


def facts_table(gathered: Mapping[str, HostFacts]) -> pd.DataFrame:
    """Hosts × key facts, as gathered (an unreachable host shows its error)."""
    import pandas as pd

    rows = []
    for name, hf in gathered.items():
        row: dict[str, object] = {"host": name}
        if hf.error:
            row["error"] = hf.error
            rows.append(row)
            continue
        ids = hf.get("nova_ids")
        daemons = hf.get("libvirt_daemons")
        inst = hf.get("instances_dir")
        listeners = hf.get("listeners")
        row.update(
            hostname=hf.get("hostname") or None,
            nova_uid=ids["uid"] if ids else None,
            nova_gid=ids["gid"] if ids else None,
            init=hf.get("init") or None,
            libvirt=hf.get("libvirt_version") or None,
            qemu=hf.get("qemu_version") or None,
            daemon_model=daemons["model"] if daemons else None,
            listening=", ".join(str(p) for p in sorted({e["port"] for e in listeners} & {22, 16509, 16514, 2049}))
            if listeners else None,
            instances=f"{inst['fstype']} {inst['mode']} {inst['owner']}" if inst else None,
            unresolved=", ".join(sorted(k for k, v in (hf.get("resolution") or {}).items() if not v)) or "",
        )
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("host")
    for col in ("nova_uid", "nova_gid"):
        if col in frame:
            frame[col] = frame[col].astype("Int64")  # ids stay whole numbers beside a missing one
    return frame


def evaluate(site: Site, gathered: Mapping[str, HostFacts], wanted: Settings | None = None) -> list[Check]:
    """Verdicts of every preflight check on every gathered host."""
    return checks.preflight(site, gathered, wanted)


def matrix(results: Iterable[Check]) -> Table:
    """Hosts × checks, each cell pass / warn / fail / skip (shown unwrapped)."""
    from .report import Table

    return Table(checks.matrix(results), index=True)


def resources(site: Site, gathered: Mapping[str, HostFacts]) -> pd.DataFrame:
    """The computes side by side: CPU, cores, RAM, versions, and flags the others lack.

    The comparison the source procedure's author needed: migrations failed between a
    4-core/8 GB and a 2-core/4 GB compute, and nothing had shown the difference.
    """
    import pandas as pd

    computes = [h.name for h in site.computes if h.name in gathered and gathered[h.name].reached]
    flags = {n: set((gathered[n].get("cpu") or {}).get("flags", [])) for n in computes}
    union = set().union(*flags.values()) if flags else set()
    table: dict[str, dict[str, object]] = {}
    for n in computes:
        hf = gathered[n]
        cpu, mem, host_cpu = hf.get("cpu") or {}, hf.get("memory") or {}, hf.get("host_cpu") or {}
        conf = hf.get("nova_conf")
        missing = sorted(union - flags[n])
        table[n] = {
            "CPU": cpu.get("model_name"),
            "vendor": cpu.get("vendor"),
            "libvirt CPU model": host_cpu.get("model"),
            "CPUs": cpu.get("cpus"),
            "sockets × cores × threads": (
                f"{cpu.get('sockets')} × {cpu.get('cores_per_socket')} × {cpu.get('threads_per_core')}" if cpu else None
            ),
            "RAM MiB": mem.get("total_mb"),
            "free RAM MiB": mem.get("available_mb"),
            "libvirt": hf.get("libvirt_version") or None,
            "QEMU": hf.get("qemu_version") or None,
            "virt_type": option(conf, "libvirt", "virt_type", "kvm") if conf is not MISSING else None,
            "cpu_mode": option(conf, "libvirt", "cpu_mode", "default") if conf is not MISSING else None,
            "CPU flags missing here": ", ".join(missing[:12]) + (f" (+{len(missing) - 12})" if len(missing) > 12 else "")
            if missing else "none",
        }
    return pd.DataFrame(table)


def pairwise(site: Site, gathered: Mapping[str, HostFacts], wanted: Settings | None = None) -> pd.DataFrame:
    """Source × destination: can a live migration go this way, and if not, why not."""
    import pandas as pd

    wanted = wanted or Settings()
    port = checks.transport_port(wanted.transport)
    computes = [h for h in site.computes if h.name in gathered]
    cells: dict[str, dict[str, str]] = {}
    for src in computes:
        row: dict[str, str] = {}
        for dst in computes:
            if src.name == dst.name:
                row[dst.name] = "—"
                continue
            row[dst.name] = _pair(site, gathered, src, dst, port, wanted)
        cells[src.name] = row
    frame = pd.DataFrame(cells).T
    frame.index.name = "source ↓ / destination →"
    return frame


def _pair(site: Site, gathered: Mapping[str, HostFacts], src: Host, dst: Host, port: int, wanted: Settings) -> str:
    s, d = gathered[src.name], gathered[dst.name]
    if not s.reached or not d.reached:
        return "unknown: " + ("source" if not s.reached else "destination") + " not reached"
    why = []
    resolved = (s.get("resolution") or {}).get(dst.name)
    if resolved != dst.management_address:
        why.append(f"{src.name} resolves {dst.name} to {resolved or 'nothing'}")
    state = (s.get("reachability") or {}).get((dst.name, port))
    if state != "open":
        why.append(f"libvirt {wanted.transport} port {port} {state or 'not probed'}")
    cmp_ = d.get(f"cpu_compare:{src.name}")
    conf = d.get("nova_conf")
    virt_type = option(conf, "libvirt", "virt_type", "kvm") if conf is not MISSING else "kvm"
    if cmp_ is not MISSING and cmp_["result"] not in ("identical", "superset") and virt_type == "kvm":
        why.append(f"CPU {cmp_['result']}" + (f": {cmp_['reason']}" if cmp_["reason"] else ""))
    si, di = s.get("instances_dir"), d.get("instances_dir")
    kind = "?"
    if si is not MISSING and di is not MISSING:
        sn, dn = checks.is_nfs(si.get("fstype")), checks.is_nfs(di.get("fstype"))
        if sn and dn and si.get("source") == di.get("source"):
            kind = "shared"
            sid, did = s.get("nova_ids"), d.get("nova_ids")
            if sid is not MISSING and did is not MISSING and sid["uid"] != did["uid"]:
                why.append(f"nova uid {sid['uid']} ≠ {did['uid']} on shared storage")
        elif not sn and not dn:
            kind = "block"
        else:
            why.append("instances dir shared on one side only")
    elif di is MISSING:
        why.append(f"no instances dir on {dst.name}")
    return f"ok ({kind})" if not why else "✗ " + "; ".join(why)


def pair_detail(site: Site, gathered: Mapping[str, HostFacts], source: str, destination: str,
                wanted: Settings | None = None) -> pd.DataFrame:
    """One source → destination pair, aspect by aspect, with the overall verdict first."""
    import pandas as pd

    wanted = wanted or Settings()
    src, dst = site.host(source), site.host(destination)
    s, d = gathered.get(source), gathered.get(destination)
    if s is None or d is None or not s.reached or not d.reached:
        return pd.DataFrame([{"aspect": "reached", "source": bool(s and s.reached),
                              "destination": bool(d and d.reached)}]).set_index("aspect")
    port = checks.transport_port(wanted.transport)

    def get(hf: HostFacts, fact: str, key: str | None = None) -> object:
        v = hf.get(fact)
        if v is MISSING:
            return None
        return v.get(key) if key and isinstance(v, dict) else v

    rows = [
        ("verdict", _pair(site, gathered, src, dst, port, wanted), ""),
        ("CPU model", get(s, "cpu", "model_name"), get(d, "cpu", "model_name")),
        ("libvirt host CPU", get(s, "host_cpu", "model"), get(d, "host_cpu", "model")),
        ("libvirt CPU comparison on destination", "", (get(d, f"cpu_compare:{source}") or {}).get("result")),
        ("CPUs", get(s, "cpu", "cpus"), get(d, "cpu", "cpus")),
        ("RAM MiB", get(s, "memory", "total_mb"), get(d, "memory", "total_mb")),
        ("libvirt", get(s, "libvirt_version"), get(d, "libvirt_version")),
        ("QEMU", get(s, "qemu_version"), get(d, "qemu_version")),
        ("nova uid", get(s, "nova_ids", "uid"), get(d, "nova_ids", "uid")),
        ("instances dir", get(s, "instances_dir", "fstype"), get(d, "instances_dir", "fstype")),
        (f"{destination} as seen from {source}", (s.get("resolution") or {}).get(destination), dst.management_address),
        (f"port {port} ({wanted.transport}) from {source}", (s.get("reachability") or {}).get((destination, port)), ""),
    ]
    return pd.DataFrame(rows, columns=["aspect", source, destination]).set_index("aspect")


def snapshot(gathered: Mapping[str, HostFacts]) -> dict[str, dict[str, object]]:
    """The facts worth watching for drift, per host, as plain values."""
    snap: dict[str, dict[str, object]] = {}
    for name, hf in gathered.items():
        if not hf.reached:
            continue
        s: dict[str, object] = {}
        ids = hf.get("nova_ids")
        if ids is not MISSING:
            s["nova uid:gid"] = f"{ids['uid']}:{ids['gid']}"
        q = hf.get("qemu_ids")
        if q is not MISSING:
            s["qemu uid:gid"] = f"{q['uid']}:{q['gid']}"
        for key in ("init", "libvirt_version", "qemu_version"):
            if hf.get(key) is not MISSING:
                s[key] = hf.get(key)
        d = hf.get("libvirt_daemons")
        if d is not MISSING:
            s["libvirt daemon model"] = d["model"]
            for unit, (enabled, active) in sorted(d["units"].items()):
                s[f"unit {unit}"] = f"{enabled}/{active}"
        ls = hf.get("listeners")
        if ls is not MISSING:
            s["listening ports"] = sorted({e["port"] for e in ls})
        for path, settings in (hf.get("libvirt_conf") or {}).items():
            for k, v in sorted((settings or {}).items()):
                s[f"{path} {k}"] = v
        conf = hf.get("nova_conf")
        if conf is not MISSING:
            for section, keys in (("DEFAULT", ("vncserver_listen", "vncserver_proxyclient_address")),
                                  ("vnc", ("server_listen", "server_proxyclient_address")),
                                  ("libvirt", ("virt_type", "live_migration_scheme", "live_migration_with_native_tls",
                                               "live_migration_inbound_addr", "cpu_mode", "cpu_models"))):
                for k in keys:
                    v = option(conf, section, k)
                    if v is not None:
                        s[f"nova.conf [{section}] {k}"] = v
        inst = hf.get("instances_dir")
        if inst is not MISSING:
            s["instances dir"] = f"{inst.get('fstype')} {inst.get('source')} {inst.get('mode')} {inst.get('owner')}"
        cpu = hf.get("cpu")
        if cpu is not MISSING:
            s["cpu"] = f"{cpu.get('model_name')} ×{cpu.get('cpus')}"
        snap[name] = s
    return snap


def pair_verdict(site: Site, source: str | None, destination: str | None, wanted: Settings | None = None) -> str | None:
    """The pairwise verdict for one source → destination, gathered fresh over SSH.

    None when either host is not in the inventory (the cloud's host names are what the
    inventory calls them in a consistent site) or no destination was chosen.
    """
    if not source or not destination or source == destination:
        return None
    if source not in site.names or destination not in site.names:
        return None
    gathered = gather(site, [site.host(source), site.host(destination)], wanted)
    return _pair(site, gathered, site.host(source), site.host(destination),
                 checks.transport_port((wanted or Settings()).transport), wanted or Settings())
