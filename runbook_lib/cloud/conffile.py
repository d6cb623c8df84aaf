"""Merging options into an existing INI file (``nova.conf``) line by line.

A lab compute's ``/etc/nova/nova.conf`` is seeded by the lab with legacy lines the runbooks must
find (``[DEFAULT] vncserver_*``); joining the cloud adds ``transport_url`` and the service
credentials *into* that file, the way a deployment tool would, without disturbing anything else:
comments, order, repeated keys and unknown sections survive.  It is never round-tripped through
:mod:`configparser`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_OPTION = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*[=:]")


def merge_options(text: str, options: Mapping[str, Mapping[str, Any]]) -> str:
    """Return ``text`` with every ``options[section][key] = value`` set.

    An existing (uncommented) ``key`` in the section is rewritten in place (the last one, which is
    the one oslo.config uses, when it is repeated); a missing key is added at the end of its
    section; a missing section is appended.  Setting what is already set changes nothing.
    Keys starting with ``#`` are ignored (they document generated files only).
    """
    lines = text.splitlines()
    for section, values in options.items():
        for key, value in values.items():
            if str(key).startswith("#"):
                continue
            lines = _set(lines, section, str(key), str(value))
    return "\n".join(lines) + "\n"


def _set(lines: list[str], section: str, key: str, value: str) -> list[str]:
    wanted = f"{key} = {value}"
    current = None
    last_in_section: int | None = None       # last non-blank line of the (last) section block
    found: int | None = None
    for index, line in enumerate(lines):
        match = _SECTION.match(line)
        if match:
            current = match.group(1).strip()
            if current == section:
                last_in_section = index
            continue
        if current == section:
            if line.strip():
                last_in_section = index
            option = _OPTION.match(line)
            if option and option.group(1) == key:
                found = index
    if found is not None:
        if lines[found].strip() != wanted:
            lines = lines[:found] + [wanted] + lines[found + 1:]
        return lines
    if last_in_section is not None:
        return lines[:last_in_section + 1] + [wanted] + lines[last_in_section + 1:]
    tail = [""] if lines and lines[-1].strip() else []
    return lines + tail + [f"[{section}]", wanted]
