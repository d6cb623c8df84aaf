"""Line-based editors for the configuration files the runbook changes.

Every editor takes the file's text and returns new text; nothing here touches a host.
Edits keep comments, order, blank lines and unrelated content; a setting is changed where
it is, added next to its commented-out example when the distribution ships one (so it
lands where an operator would look), and otherwise appended. Removing a setting comments
it out with a note, so that the diff explains itself. Applying the same edit twice gives
the same text (idempotence is tested on the pristine files Debian ships).

Never round-trip these files through ``configparser``: it drops comments and merges
repeated oslo.config keys.
"""

from __future__ import annotations

import re
from typing import Iterable

MARK = "runbook"


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _join(lines: list[str], original: str) -> str:
    if not lines:
        return ""
    return "\n".join(lines) + ("\n" if original.endswith("\n") or not original else "")


# ------------------------------------------------------------------- key = value files
# libvirtd.conf, qemu.conf, virtproxyd.conf: `key = value`, `#key = example` comments


def _kv_active(key: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(key)}\s*=")


def _kv_example(key: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")


def format_libvirt_value(value: object) -> str:
    """A Python value in libvirt's config syntax (strings quoted, lists bracketed)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    return f'"{value}"'


def set_kv(text: str, key: str, value: str, sep: str = " = ") -> str:
    """Set ``key`` to the already formatted ``value`` in a ``key = value`` file."""
    lines = _lines(text)
    wanted = f"{key}{sep}{value}"
    active = [i for i, line in enumerate(lines) if _kv_active(key).match(line)]
    if active:
        last = active[-1]
        for i in active[:-1]:  # earlier duplicates would be overridden anyway: make that visible
            lines[i] = f"#{lines[i]}  # {MARK}: superseded below"
        if lines[last].strip() != wanted:
            lines[last] = wanted
        return _join(lines, text)
    examples = [i for i, line in enumerate(lines) if _kv_example(key).match(line)]
    if examples:
        lines.insert(examples[-1] + 1, wanted)
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines.append(wanted)
    return _join(lines, text)


def unset_kv(text: str, key: str, reason: str) -> str:
    """Comment out every active ``key = ...`` line, with ``reason``."""
    lines = _lines(text)
    for i, line in enumerate(lines):
        if _kv_active(key).match(line):
            lines[i] = f"#{line}  # {MARK}: {reason}"
    return _join(lines, text)


def set_libvirt(text: str, key: str, value: object) -> str:
    """Set a libvirtd.conf / qemu.conf setting (value formatted for libvirt)."""
    return set_kv(text, key, format_libvirt_value(value))


# ------------------------------------------------------------------- shell variable files
# /etc/default/libvirtd, /etc/sysconfig/libvirtd: NAME="value"


def set_shell_var(text: str, name: str, value: str) -> str:
    """Set ``NAME="value"`` in a shell variables file."""
    return set_kv(text, name, '"' + value.replace('"', '\\"') + '"', sep="=")


# ------------------------------------------------------------------- INI (oslo.config)

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def _sections(lines: list[str]) -> list[tuple[str, int, int]]:
    """(name, first line after the header, end) of each section; DEFAULT normalised."""
    found: list[tuple[str, int, int]] = []
    start_name, start = None, 0
    for i, line in enumerate(lines):
        m = _SECTION.match(line)
        if m:
            if start_name is not None:
                found.append((start_name, start, i))
            name = m.group(1).strip()
            start_name, start = ("DEFAULT" if name.lower() == "default" else name), i + 1
    if start_name is not None:
        found.append((start_name, start, len(lines)))
    return found


def _ini_active(key: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(key)}\s*[=:]")


def _ini_example(key: str) -> re.Pattern[str]:
    return re.compile(rf"^#\s*{re.escape(key)}\s*[=:]")


def set_ini(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` in ``[section]`` of an oslo.config file.

    The last active occurrence in the section is changed (oslo.config reads the last one)
    and earlier ones are commented out; a missing key goes after its commented example in
    that section, else at the end of the section; a missing section is appended.
    """
    lines = _lines(text)
    wanted = f"{key} = {value}"
    sections = [s for s in _sections(lines) if s[0] == section]
    if not sections:
        if lines and lines[-1].strip():
            lines.append("")
        lines += [f"[{section}]", wanted]
        return _join(lines, text)
    active = [i for _, a, b in sections for i in range(a, b) if _ini_active(key).match(lines[i])]
    if active:
        for i in active[:-1]:
            lines[i] = f"#{lines[i]}  # {MARK}: superseded below"
        if lines[active[-1]].strip() != wanted:
            lines[active[-1]] = wanted
        return _join(lines, text)
    examples = [i for _, a, b in sections for i in range(a, b) if _ini_example(key).match(lines[i])]
    if examples:
        # after the example's whole comment paragraph is too far; right after the example line
        lines.insert(examples[-1] + 1, wanted)
        return _join(lines, text)
    _, a, b = sections[-1]
    end = b
    while end > a and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, wanted)
    return _join(lines, text)


def unset_ini(text: str, section: str, key: str, reason: str) -> str:
    """Comment out every active ``key`` in ``[section]``, with ``reason``."""
    lines = _lines(text)
    for name, a, b in _sections(lines):
        if name != section:
            continue
        for i in range(a, b):
            if _ini_active(key).match(lines[i]):
                lines[i] = f"#{lines[i]}  # {MARK}: {reason}"
    return _join(lines, text)


# ------------------------------------------------------------------- whole-line files


def ensure_line(text: str, line: str, replaces: Iterable[re.Pattern[str]] = ()) -> str:
    """Make ``line`` present once; lines matching ``replaces`` are commented out first."""
    lines = _lines(text)
    patterns = list(replaces)
    out: list[str] = []
    present = False
    for existing in lines:
        if existing.strip() == line.strip():
            if not present:
                out.append(existing)
                present = True
            continue
        if existing.strip() and not existing.lstrip().startswith("#") and any(p.search(existing) for p in patterns):
            out.append(f"#{existing}  # {MARK}: replaced")
            continue
        out.append(existing)
    if not present:
        out.append(line)
    return _join(out, text)


def hosts_entries(text: str, entries: Iterable[tuple[str, str]]) -> str:
    """/etc/hosts: each ``(address, name)`` resolves as given; other lines naming it are fixed.

    A name already on another address (Debian's ``127.0.1.1 compute1``) is removed from that
    line, keeping the line's other names.
    """
    lines = _lines(text)
    for address, name in entries:
        out: list[str] = []
        present = False
        for line in lines:
            body, hash_, comment = line.partition("#")
            words = body.split()
            if len(words) >= 2 and name in words[1:]:
                if words[0] == address:
                    present = True
                    out.append(line)
                    continue
                rest = [w for w in words[1:] if w != name]
                if rest:
                    out.append(" ".join([words[0]] + rest) + (f" #{comment}" if hash_ else ""))
                else:
                    out.append(f"#{line}  # {MARK}: {name} is {address}")
                continue
            out.append(line)
        if not present:
            out.append(f"{address} {name}")
        lines = out
    return _join(lines, text)


def ganesha_export(text: str, export_id: int, path: str, clients: str, squash: str = "No_Root_Squash") -> str:
    """nfs-ganesha: an EXPORT block for ``path`` limited to ``clients`` (replaced if present)."""
    block = [
        f"EXPORT {{  # {MARK}: nova instances",
        f"    Export_Id = {export_id};",
        f"    Path = {path};",
        f"    Pseudo = {path};",
        "    Protocols = 3, 4;",
        "    Access_Type = None;",
        f"    Squash = {squash};",
        "    FSAL { Name = VFS; }",
        f"    CLIENT {{ Clients = {clients}; Access_Type = RW; }}",
        "}",
    ]
    lines = _lines(text)
    start = next((i for i, line in enumerate(lines) if line.startswith("EXPORT {") and f"{MARK}: nova instances" in line), None)
    if start is not None:
        end = start
        depth = 0
        for j in range(start, len(lines)):
            depth += lines[j].count("{") - lines[j].count("}")
            if depth == 0:
                end = j
                break
        lines[start:end + 1] = block
    else:
        if lines and lines[-1].strip():
            lines.append("")
        lines += block
    return _join(lines, text)
