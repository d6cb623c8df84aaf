"""System facts: names, addresses, users, init system, CPU, memory, reachability."""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, Sequence

from ..remote import sh
from . import MISSING, Fact

# ------------------------------------------------------------------------------- parsers


def parse_hostname(out: str, rc: int) -> Any:
    """``hostname`` → the short host name."""
    name = out.strip().splitlines()[0].strip() if out.strip() else ""
    return name.split(".")[0] if name else MISSING


def parse_addresses(out: str, rc: int) -> list[dict[str, str]]:
    """``ip -o addr show`` → ``[{interface, address, prefix}]`` (IPv4 and IPv6, no link-local)."""
    found = []
    for line in out.splitlines():
        words = line.split()
        if len(words) < 4 or words[2] not in ("inet", "inet6"):
            continue
        iface = words[1].split("@")[0]
        addr, _, prefix = words[3].partition("/")
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            continue
        if ip.is_link_local:
            continue
        found.append({"interface": iface, "address": addr, "prefix": prefix})
    return found


def parse_resolution(out: str, rc: int) -> dict[str, str | None]:
    """Lines ``NAME [ADDRESS]`` → ``{name: first address or None}``."""
    resolved: dict[str, str | None] = {}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        resolved[words[0]] = words[1] if len(words) > 1 else None
    return resolved


def parse_user_ids(out: str, rc: int) -> Any:
    """``getent passwd U; getent group U`` → ``{uid, gid, group_gid}``; MISSING if no user."""
    uid = gid = group_gid = None
    for line in out.splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[2].isdigit():
            uid, gid = int(parts[2]), int(parts[3])
        elif len(parts) == 4 and parts[2].isdigit():
            group_gid = int(parts[2])
    if uid is None:
        return MISSING
    return {"uid": uid, "gid": gid, "group_gid": group_gid}


def parse_init(out: str, rc: int) -> Any:
    """``systemd`` when /run/systemd/system exists (systemd is PID 1), else ``sysv``."""
    word = out.strip()
    return word if word in ("systemd", "sysv") else MISSING


def parse_lscpu(out: str, rc: int) -> Any:
    """``lscpu`` (C locale) → vendor, model name, family/model, topology, flags."""
    fields: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if not fields:
        return MISSING

    def num(key: str) -> int | None:
        v = fields.get(key, "")
        return int(v) if v.isdigit() else None

    return {
        "arch": fields.get("Architecture"),
        "vendor": fields.get("Vendor ID"),
        "model_name": fields.get("Model name"),
        "family": fields.get("CPU family"),
        "model": fields.get("Model"),
        "cpus": num("CPU(s)"),
        "sockets": num("Socket(s)"),
        "cores_per_socket": num("Core(s) per socket"),
        "threads_per_core": num("Thread(s) per core"),
        "hypervisor": fields.get("Hypervisor vendor"),
        "flags": sorted(fields.get("Flags", "").split()),
    }


def parse_meminfo(out: str, rc: int) -> Any:
    """``/proc/meminfo`` → ``{total_mb, available_mb}``."""
    kib: dict[str, int] = {}
    for line in out.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if words and words[0].isdigit():
            kib[key.strip()] = int(words[0])
    if "MemTotal" not in kib:
        return MISSING
    return {"total_mb": kib["MemTotal"] // 1024, "available_mb": kib.get("MemAvailable", 0) // 1024}


def parse_listeners(out: str, rc: int) -> list[dict[str, Any]]:
    """``ss -ltnH`` → ``[{address, port}]`` of listening TCP sockets."""
    found = []
    for line in out.splitlines():
        words = line.split()
        if len(words) < 4:
            continue
        local = words[3]
        addr, _, port = local.rpartition(":")
        if port.isdigit():
            found.append({"address": addr.strip("[]").split("%")[0], "port": int(port)})
    return found


def parse_reachability(out: str, rc: int) -> dict[tuple[str, int], str]:
    """Lines ``reach HOST PORT open|refused|timeout`` → ``{(host, port): state}``."""
    found: dict[tuple[str, int], str] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) == 4 and words[0] == "reach" and words[2].isdigit():
            found[(words[1], int(words[2]))] = words[3]
    return found


# --------------------------------------------------------------------------- fact builders


def hostname() -> Fact:
    """The host's own name."""
    return Fact("hostname", "hostname", parse_hostname)


def addresses() -> Fact:
    """Every interface address."""
    return Fact("addresses", "ip -o addr show", parse_addresses)


def resolution(names: Iterable[str]) -> Fact:
    """How this host resolves each of ``names`` through NSS (/etc/hosts, DNS…)."""
    words = " ".join(sh(n) for n in names)
    # the first word of getent's first line, by parameter expansion: one process per name
    # (a pipe into awk cost three, which at 100 hosts was 30 000 processes per preflight)
    command = (f"for n in {words}; do a=$(getent ahostsv4 \"$n\"); "
               f"echo \"$n ${{a%%[[:space:]]*}}\"; done")
    return Fact("resolution", command, parse_resolution)


def user_ids(user: str, name: str | None = None) -> Fact:
    """uid/gid of ``user`` (and of the group of the same name)."""
    return Fact(name or f"{user}_ids", f"getent passwd {sh(user)}; getent group {sh(user)}", parse_user_ids)


def qemu_user_ids() -> Fact:
    """The user QEMU runs guests as: ``libvirt-qemu`` (Debian/Ubuntu) or ``qemu`` (RHEL)."""
    command = "getent passwd libvirt-qemu || getent passwd qemu; getent group kvm || getent group qemu"
    return Fact("qemu_ids", command, parse_user_ids)


def init_system() -> Fact:
    """systemd or sysv (what restarts services on this host)."""
    return Fact("init", "[ -d /run/systemd/system ] && echo systemd || echo sysv", parse_init)


def cpu() -> Fact:
    """CPU vendor, model, topology and flags (lscpu in the C locale)."""
    return Fact("cpu", "LC_ALL=C lscpu", parse_lscpu)


def memory() -> Fact:
    """Total and available RAM."""
    return Fact("memory", "cat /proc/meminfo", parse_meminfo)


def listeners() -> Fact:
    """Listening TCP sockets."""
    return Fact("listeners", "ss -ltnH", parse_listeners)


def reachability(targets: Sequence[tuple[str, str, int]], timeout: float = 2.0) -> Fact:
    """TCP connect from this host to each ``(name, address, port)``: open, refused or timeout.

    ``refused`` still proves the network path (a host answered with a reset); ``timeout``
    means something drops the packets (a firewall) or the host is down.
    """
    if not targets:
        return Fact("reachability", "true", parse_reachability)
    # Every probe at once from one python3 process (Nova's hosts have python3): a shell probe
    # costs three processes (subshell, timeout, bash), 600 per host at 100 computes. Where
    # python3 is missing or fails, the same probes in bash. Values reach the shell quoted,
    # as positional parameters.
    words = " ".join(f"{sh(name)} {sh(address)} {int(port)}" for name, address, port in targets)
    fallback = (
        "while [ $# -ge 3 ]; do "
        f"( timeout {timeout:g} bash -c 'exec 3<>/dev/tcp/$0/$1' \"$2\" \"$3\" 2>/dev/null; rc=$?; "
        "case $rc in 0) s=open;; 124) s=timeout;; *) s=refused;; esac; "
        "echo \"reach $1 $3 $s\" ) & shift 3; done; wait"
    )
    command = (f"set -- {words}\n"
               f"python3 -c {sh(_PROBE_PY)} {timeout:g} \"$@\" 2>/dev/null || {{ {fallback}; }}")
    return Fact("reachability", command, parse_reachability)


#: TCP connect to each (name, address, port) triple in argv at once; one line per probe, as
#: the shell probes print it: open (connected), timeout (no answer in time), refused (else)
_PROBE_PY = """
import socket, sys, threading
limit, args, lock = float(sys.argv[1]), sys.argv[2:], threading.Lock()
def probe(name, address, port):
    try:
        socket.create_connection((address, int(port)), timeout=limit).close()
        state = "open"
    except socket.timeout:
        state = "timeout"
    except Exception:
        state = "refused"
    with lock:
        sys.stdout.write("reach %s %d %s\\n" % (name, int(port), state))
        sys.stdout.flush()
threads = [threading.Thread(target=probe, args=args[i:i + 3]) for i in range(0, len(args), 3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""
