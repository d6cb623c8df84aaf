"""libvirt and QEMU facts: versions, daemon model, config files, host CPU, CPU comparison."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from ..remote import sh
from . import MISSING, Fact

_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)?)")

#: systemd units that tell which libvirt daemon model a host runs
UNITS = (
    "libvirtd.service", "libvirtd.socket", "libvirtd-ro.socket", "libvirtd-admin.socket",
    "libvirtd-tcp.socket", "libvirtd-tls.socket",
    "virtqemud.service", "virtqemud.socket", "virtproxyd.service", "virtproxyd.socket",
    "virtproxyd-tcp.socket", "virtproxyd-tls.socket",
)
LIBVIRT_TCP_PORT, LIBVIRT_TLS_PORT = 16509, 16514


def parse_version(out: str, rc: int) -> Any:
    """``libvirtd --version`` / ``qemu-system-x86_64 --version`` → ``'9.0.0'``."""
    for line in out.splitlines():
        if "not found" in line:
            continue
        m = _VERSION_RE.search(line)
        if m:
            return m.group(1)
    return MISSING


def parse_daemons(out: str, rc: int) -> dict[str, Any]:
    """Unit states and daemon processes → the daemon model.

    Input lines: ``unit NAME ENABLED ACTIVE`` and ``proc ARGS...``. Returns
    ``{"units": {name: (enabled, active)}, "processes": [args], "model": ...}`` where model
    is ``split`` (virtqemud/virtproxyd), ``socket-activated`` (libvirtd with systemd
    sockets), ``monolithic`` (libvirtd without sockets) or ``none``.
    """
    units: dict[str, tuple[str, str]] = {}
    procs: list[str] = []
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] == "unit":
            units[words[1]] = (words[2], words[3])
        elif len(words) >= 2 and words[0] == "proc":
            procs.append(" ".join(words[1:]))

    def active(u: str) -> bool:
        return units.get(u, ("", ""))[1] == "active"

    def enabled(u: str) -> bool:
        return units.get(u, ("", ""))[0] in ("enabled", "static", "indirect")

    names = [p.split()[0].rsplit("/", 1)[-1] for p in procs]
    if "virtqemud" in names or active("virtqemud.socket") or active("virtproxyd.socket") or (
        enabled("virtqemud.socket") and not enabled("libvirtd.service")
    ):
        model = "split"
    elif active("libvirtd.socket") or enabled("libvirtd.socket"):
        model = "socket-activated"
    elif "libvirtd" in names or active("libvirtd.service") or units:
        model = "monolithic"
    else:
        model = "none"
    listen_flag = any(
        p.split()[0].endswith("libvirtd") and re.search(r"(^|\s)(--listen|-l)(\s|$)", p) for p in procs
    )
    return {"units": units, "processes": procs, "model": model, "listen_flag": listen_flag}


_CONF_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_libvirt_conf(text: str) -> dict[str, Any]:
    """``libvirtd.conf`` / ``qemu.conf`` settings (comments ignored; last one wins).

    Values: quoted strings without quotes, integers as int, lists as Python lists.
    """
    settings: dict[str, Any] = {}
    for line in text.splitlines():
        stripped = line.split("#", 1)[0] if not line.lstrip().startswith("#") else ""
        m = _CONF_LINE.match(stripped)
        if not m:
            continue
        key, raw = m.group(1), m.group(2).strip()
        if raw.startswith("["):
            settings[key] = re.findall(r'"([^"]*)"', raw)
        elif raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            settings[key] = raw[1:-1]
        elif re.fullmatch(r"-?\d+", raw):
            settings[key] = int(raw)
        else:
            settings[key] = raw
    return settings


def parse_shell_vars(text: str) -> dict[str, str]:
    """``/etc/default/libvirtd``-style ``NAME="value"`` lines."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if not m:
            continue
        value = m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        found[m.group(1)] = value
    return found


def split_files(out: str) -> dict[str, str | None]:
    """Output of :func:`_cat_files` → ``{path: text or None when absent}``."""
    files: dict[str, str | None] = {}
    current: str | None = None
    buf: list[str] = []
    for line in out.splitlines():
        if line.startswith("==> ") and line.endswith(" <=="):
            if current is not None:
                files[current] = "\n".join(buf) + ("\n" if buf else "")
            current, buf = line[4:-4], []
        elif line.startswith("==! ") and line.endswith(" !=="):
            if current is not None:
                files[current] = "\n".join(buf) + ("\n" if buf else "")
            files[line[4:-4]] = None
            current, buf = None, []
        elif current is not None:
            buf.append(line)
    if current is not None:
        files[current] = "\n".join(buf) + ("\n" if buf else "")
    return files


def _cat_files(paths: list[str]) -> str:
    parts = [
        f'if [ -r {sh(p)} ]; then echo "==> {p} <=="; cat {sh(p)}; echo; else echo "==! {p} !=="; fi'
        for p in paths
    ]
    return "; ".join(parts)


CONF_FILES = (
    "/etc/libvirt/libvirtd.conf", "/etc/libvirt/qemu.conf", "/etc/default/libvirtd",
    "/etc/sysconfig/libvirtd", "/etc/libvirt/virtproxyd.conf",
)


def parse_conf_files(out: str, rc: int) -> dict[str, Any]:
    """The libvirt configuration files → parsed settings per file (None when absent)."""
    parsed: dict[str, Any] = {}
    for path, text in split_files(out).items():
        if text is None:
            parsed[path] = None
        elif path.startswith(("/etc/default/", "/etc/sysconfig/")):
            parsed[path] = parse_shell_vars(text)
        else:
            parsed[path] = parse_libvirt_conf(text)
    return parsed


def parse_host_cpu(out: str, rc: int) -> Any:
    """``virsh capabilities`` → the host CPU: model, vendor, features, topology, and its XML."""
    if "<capabilities" not in out:
        return MISSING
    try:
        root = ET.fromstring(out[out.index("<capabilities"):])
    except ET.ParseError:
        return MISSING
    cpu = root.find("./host/cpu")
    if cpu is None:
        return MISSING
    topo = cpu.find("topology")
    # the <cpu> element as Nova hands it to compareHypervisorCPU: arch, model, vendor, features
    xml = ["<cpu>"]
    for tag in ("arch", "model", "vendor"):
        el = cpu.find(tag)
        if el is not None and el.text:
            xml.append(f"  <{tag}>{el.text}</{tag}>")
    features = sorted(f.get("name", "") for f in cpu.findall("feature"))
    xml += [f"  <feature policy='require' name='{f}'/>" for f in features]
    xml.append("</cpu>")
    return {
        "arch": cpu.findtext("arch"),
        "model": cpu.findtext("model"),
        "vendor": cpu.findtext("vendor"),
        "features": features,
        "sockets": int(topo.get("sockets", 0)) if topo is not None else None,
        "cores": int(topo.get("cores", 0)) if topo is not None else None,
        "threads": int(topo.get("threads", 0)) if topo is not None else None,
        "xml": "\n".join(xml) + "\n",
    }


def parse_cpu_compare(out: str, rc: int) -> dict[str, str]:
    """``virsh hypervisor-cpu-compare --error FILE`` → ``{result, reason}``.

    result is ``identical``, ``superset``, ``incompatible`` or ``error`` (the comparison
    itself failed, e.g. the daemon is not running).
    """
    text = " ".join(out.split())
    if "is identical to the CPU provided by hypervisor" in text:
        return {"result": "identical", "reason": ""}
    if "is a superset of CPU described in" in text:
        return {"result": "superset", "reason": ""}
    m = re.search(r"error: (the CPU is incompatible with host CPU.*?)(?: error:|$)", text)
    if m or "is incompatible with the CPU provided by hypervisor" in text:
        return {"result": "incompatible", "reason": m.group(1).strip() if m else ""}
    err = re.findall(r"error: (.*?)(?= error:|$)", text)
    return {"result": "error", "reason": err[-1].strip() if err else text[:200]}


# --------------------------------------------------------------------------- fact builders

VIRSH = "virsh -c qemu:///system"


def libvirt_version() -> Fact:
    """The libvirt daemon's version."""
    command = "libvirtd --version 2>/dev/null || virtqemud --version 2>/dev/null || virsh --version"
    return Fact("libvirt_version", command, parse_version)


def qemu_version() -> Fact:
    """QEMU's version."""
    command = "qemu-system-x86_64 --version 2>/dev/null || qemu-system-aarch64 --version 2>/dev/null || /usr/libexec/qemu-kvm --version"
    return Fact("qemu_version", command, parse_version)


def daemons() -> Fact:
    """Which libvirt daemons and systemd units exist and run (the daemon model)."""
    units = " ".join(UNITS)
    command = (
        "if [ -d /run/systemd/system ]; then for u in " + units + "; do "
        "e=$(systemctl is-enabled \"$u\" 2>/dev/null); a=$(systemctl is-active \"$u\" 2>/dev/null); "
        "[ -n \"$e$a\" ] && echo \"unit $u ${e:-unknown} ${a:-unknown}\"; done; fi; "
        "ps -eo args= | awk '$1 ~ /(^|\\/)(libvirtd|virtqemud|virtproxyd)$/ {print \"proc \" $0}'"
    )
    return Fact("libvirt_daemons", command, parse_daemons)


def conf_files() -> Fact:
    """The libvirt configuration files that matter for migration, parsed."""
    return Fact("libvirt_conf", _cat_files(list(CONF_FILES)), parse_conf_files)


def host_cpu() -> Fact:
    """The host CPU as libvirt reports it (``virsh capabilities``)."""
    return Fact("host_cpu", f"{VIRSH} capabilities", parse_host_cpu)


def cpu_compare(xml: str, virttype: str, name: str) -> Fact:
    """On a destination: would a guest with the CPU ``xml`` run here? (Nova's check)."""
    command = (
        f"f=$(mktemp); printf %s {sh(xml)} > \"$f\"; "
        f"{VIRSH} hypervisor-cpu-compare --virttype {sh(virttype)} --error \"$f\" 2>&1; rc=$?; rm -f \"$f\"; exit $rc"
    )
    return Fact(name, command, parse_cpu_compare)
