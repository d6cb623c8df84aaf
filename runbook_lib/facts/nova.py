"""Nova facts: nova.conf options that matter for migration, and the instances directory."""

from __future__ import annotations

import re
from typing import Any

from . import MISSING, Fact

NOVA_CONF = "/etc/nova/nova.conf"
DEFAULT_STATE_PATH = "/var/lib/nova"

#: ``[DEFAULT]`` options Nova no longer reads (moved to ``[vnc]``); their values are ignored.
LEGACY_DEFAULT_VNC = {
    "vncserver_listen": "[vnc] server_listen",
    "vncserver_proxyclient_address": "[vnc] server_proxyclient_address",
    "vnc_enabled": "[vnc] enabled",
    "novncproxy_base_url": "[vnc] novncproxy_base_url",
}

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_OPTION = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*[=:]\s*(.*?)\s*$")


def parse_ini(text: str) -> dict[str, dict[str, list[str]]]:
    """oslo.config-style INI text → ``{section: {option: [values in file order]}}``.

    Read-only and line based: repeated options keep every value (oslo.config uses the last
    one for single-valued options and all of them for multi-valued ones). Sections and
    option names are case-sensitive except ``DEFAULT``, as in oslo.config.
    """
    data: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        m = _SECTION.match(line)
        if m:
            section = m.group(1).strip()
            if section.lower() == "default":
                section = "DEFAULT"
            data.setdefault(section, {})
            continue
        m = _OPTION.match(line)
        if m and section is not None and not line[0].isspace():
            data[section].setdefault(m.group(1), []).append(m.group(2))
    return data


def option(conf: dict[str, dict[str, list[str]]], section: str, name: str, default: Any = None) -> Any:
    """The effective value of a single-valued option (the last one), else ``default``."""
    values = conf.get(section, {}).get(name)
    return values[-1] if values else default


def parse_nova_conf(out: str, rc: int) -> Any:
    """``cat /etc/nova/nova.conf`` → parsed options; MISSING when the file is absent."""
    if rc != 0 and not out.strip():
        return MISSING
    return parse_ini(out)


def parse_instances_dir(out: str, rc: int) -> Any:
    """``stat``/``findmnt``/``df`` lines about the instances directory → a dict.

    Lines: ``path P``, ``stat MODE UID GID USER GROUP``, ``mount SOURCE FSTYPE TARGET``,
    ``avail BYTES``. MISSING when the directory does not exist.
    """
    info: dict[str, Any] = {}
    for line in out.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "path" and len(words) >= 2:
            info["path"] = " ".join(words[1:])
        elif words[0] == "stat" and len(words) >= 6:
            info.update(mode=words[1], uid=int(words[2]), gid=int(words[3]), owner=words[4], group=words[5])
        elif words[0] == "mount" and len(words) >= 4:
            info.update(source=words[1], fstype=words[2], mountpoint=words[3])
        elif words[0] == "avail" and len(words) >= 2 and words[1].isdigit():
            info["avail_bytes"] = int(words[1])
        elif words[0] == "absent":
            return MISSING
    return info if "mode" in info else MISSING


def nova_conf() -> Fact:
    """``/etc/nova/nova.conf``, parsed."""
    return Fact("nova_conf", f"cat {NOVA_CONF}", parse_nova_conf)


def instances_dir() -> Fact:
    """The instances directory (``instances_path`` from nova.conf, else the default)."""
    command = (
        f"p=$(sed -n 's/^[[:space:]]*instances_path[[:space:]]*=[[:space:]]*//p' {NOVA_CONF} 2>/dev/null | tail -n1); "
        f"s=$(sed -n 's/^[[:space:]]*state_path[[:space:]]*=[[:space:]]*//p' {NOVA_CONF} 2>/dev/null | tail -n1); "
        f"s=${{s:-{DEFAULT_STATE_PATH}}}; p=${{p:-$s/instances}}; p=$(echo \"$p\" | sed \"s|\\$state_path|$s|\"); "
        "echo \"path $p\"; [ -d \"$p\" ] || { echo absent; exit 0; }; "
        "echo \"stat $(stat -c '%a %u %g %U %G' \"$p\")\"; "
        "echo \"mount $(findmnt -n -o SOURCE,FSTYPE,TARGET -T \"$p\" | head -n1)\"; "
        "echo \"avail $(df -B1 --output=avail \"$p\" | tail -n1 | tr -d ' ')\""
    )
    return Fact("instances_dir", command, parse_instances_dir)
