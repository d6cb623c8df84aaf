"""The failure-signature catalogue: load ``signatures.yaml``, validate it, compile it once.

The catalogue is data (see ``signatures.yaml``); this module only checks that the data is
well formed and turns each entry into a :class:`Signature` with compiled patterns. Entry
order is precedence: for a log line the first matching signature wins, so the file lists
specific wordings before generic ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from ..errors import RunbookError

#: The bundled catalogue.
DEFAULT_PATH = Path(__file__).with_name("signatures.yaml")

#: The failure categories of issue 8, exactly.
CATEGORIES: tuple[str, ...] = (
    "cpu-incompatible",
    "version-mismatch",
    "libvirt-unreachable",
    "name-resolution",
    "migration-transport",
    "libvirt-auth",
    "libvirt-daemon",
    "shared-storage",
    "storage-permissions",
    "capacity",
    "compute-service",
    "migration-timeout",
    "guest-state",
    "host-identity",
    "console-config",
)

#: Runbook phases (and configure sub-phases) a remediation may point at.
PHASES: tuple[str, ...] = (
    "00_preflight",
    "identity",
    "shared-storage",
    "libvirt-transport",
    "nova-conf",
    "migrate",
    "maintenance",
    "troubleshoot",
)

#: Where a signature's wording shows up; the troubleshoot notebook fetches these logs.
SOURCES: tuple[str, ...] = (
    "nova-api",
    "nova-conductor",
    "nova-scheduler",
    "nova-compute/source",
    "nova-compute/destination",
    "libvirtd/source",
    "libvirtd/destination",
    "qemu-log/source",
    "qemu-log/destination",
)

_REQUIRED = ("id", "category", "patterns", "sources", "cause", "remediation", "phase", "reference", "examples")
_EXAMPLE_KEYS = ("positive", "negative")
_ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


class CatalogueError(RunbookError, ValueError):
    """The signature catalogue is malformed; nothing was matched with it."""

    def __init__(self, message: str, *, path: str = "", entry: str = "") -> None:
        self.path = path
        self.entry = entry
        where = ", ".join(p for p in (path, f"signature '{entry}'" if entry else "") if p)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Signature:
    """One catalogue entry, patterns compiled.

    Attributes
    ----------
    id : str
        Kebab-case identifier, unique in the catalogue.
    category : str
        One of :data:`CATEGORIES`.
    patterns : tuple of re.Pattern
        Matched with ``search`` against a log message stripped of its prefix.
    sources : tuple of str
        Logs where the wording appears (subset of :data:`SOURCES`).
    cause, remediation : str
        What went wrong, and what to do about it.
    phase : str
        The runbook phase that fixes it (one of :data:`PHASES`).
    reference : str
        The public source where the wording was read.
    positive, negative : tuple of str
        Example log lines that must / must not yield this signature.
    """

    id: str
    category: str
    patterns: tuple[re.Pattern[str], ...]
    sources: tuple[str, ...]
    cause: str
    remediation: str
    phase: str
    reference: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def search(self, message: str) -> re.Match[str] | None:
        """Return the first pattern match in ``message``, or ``None``."""
        for pattern in self.patterns:
            found = pattern.search(message)
            if found:
                return found
        return None


@dataclass(frozen=True)
class Catalogue:
    """The ordered, validated signatures."""

    signatures: tuple[Signature, ...]
    path: str = ""

    def __len__(self) -> int:
        return len(self.signatures)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.signatures)

    def get(self, signature_id: str) -> Signature:
        """Return the signature called ``signature_id`` (``KeyError`` if absent)."""
        for sig in self.signatures:
            if sig.id == signature_id:
                return sig
        raise KeyError(signature_id)

    def first_match(self, message: str) -> tuple[Signature, re.Match[str]] | None:
        """Return the first signature (in catalogue order) matching ``message``."""
        for sig in self.signatures:
            found = sig.search(message)
            if found:
                return sig, found
        return None

    def by_category(self) -> dict[str, list[str]]:
        """Map each category to the ids of its signatures (every category present)."""
        out: dict[str, list[str]] = {c: [] for c in CATEGORIES}
        for sig in self.signatures:
            out[sig.category].append(sig.id)
        return out


def _text(entry: Mapping[str, Any], key: str, where: str, path: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"'{key}' must be a non-empty string", path=path, entry=where)
    return " ".join(value.split())


def _strings(value: Any, key: str, where: str, path: str, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise CatalogueError(f"'{key}' must be a list of strings", path=path, entry=where)
    items = tuple(value)
    if not items and not allow_empty:
        raise CatalogueError(f"'{key}' must not be empty", path=path, entry=where)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise CatalogueError(f"'{key}' holds a non-string or empty item: {item!r}", path=path, entry=where)
    return items


def _signature(entry: Any, index: int, path: str) -> Signature:
    if not isinstance(entry, Mapping):
        raise CatalogueError(f"entry #{index + 1} is not a mapping", path=path)
    where = str(entry.get("id") or f"#{index + 1}")
    unknown = sorted(set(entry) - set(_REQUIRED))
    if unknown:
        raise CatalogueError(f"unknown key(s) {', '.join(map(str, unknown))}; allowed: {', '.join(_REQUIRED)}", path=path, entry=where)
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise CatalogueError(f"missing key(s) {', '.join(missing)}", path=path, entry=where)

    sig_id = entry["id"]
    if not isinstance(sig_id, str) or not _ID_RE.match(sig_id):
        raise CatalogueError(f"id {sig_id!r} is not kebab-case (lowercase words joined by '-')", path=path, entry=where)
    category = entry["category"]
    if category not in CATEGORIES:
        raise CatalogueError(f"category {category!r} is not one of: {', '.join(CATEGORIES)}", path=path, entry=where)
    phase = entry["phase"]
    if phase not in PHASES:
        raise CatalogueError(f"phase {phase!r} is not one of: {', '.join(PHASES)}", path=path, entry=where)
    sources = _strings(entry["sources"], "sources", where, path)
    bad_sources = [s for s in sources if s not in SOURCES]
    if bad_sources:
        raise CatalogueError(f"unknown source(s) {', '.join(bad_sources)}; allowed: {', '.join(SOURCES)}", path=path, entry=where)

    compiled = []
    for raw in _strings(entry["patterns"], "patterns", where, path):
        try:
            compiled.append(re.compile(raw))
        except re.error as exc:
            raise CatalogueError(f"pattern {raw!r} is not a valid regular expression: {exc}", path=path, entry=where) from exc

    examples = entry["examples"]
    if not isinstance(examples, Mapping):
        raise CatalogueError("'examples' must be a mapping with 'positive' and 'negative'", path=path, entry=where)
    odd = sorted(set(examples) - set(_EXAMPLE_KEYS))
    if odd:
        raise CatalogueError(f"unknown example key(s) {', '.join(map(str, odd))}; allowed: positive, negative", path=path, entry=where)
    if any(k not in examples for k in _EXAMPLE_KEYS):
        raise CatalogueError("'examples' needs at least one 'positive' and one 'negative' line", path=path, entry=where)
    positive = _strings(examples["positive"], "examples.positive", where, path)
    negative = _strings(examples["negative"], "examples.negative", where, path)

    return Signature(
        id=sig_id,
        category=category,
        patterns=tuple(compiled),
        sources=sources,
        cause=_text(entry, "cause", where, path),
        remediation=_text(entry, "remediation", where, path),
        phase=phase,
        reference=_text(entry, "reference", where, path),
        positive=positive,
        negative=negative,
    )


def parse_catalogue(data: Any, *, path: str = "") -> Catalogue:
    """Validate already-loaded catalogue data (the ``yaml.safe_load`` result).

    Parameters
    ----------
    data : Any
        A mapping with a single key ``signatures`` holding a list of entries.
    path : str, optional
        Where the data came from, for error messages.

    Returns
    -------
    Catalogue

    Raises
    ------
    CatalogueError
        On unknown or missing keys, a bad category/phase/source, an invalid regular
        expression, a non-kebab-case or duplicate id, or missing examples.
    """
    if not isinstance(data, Mapping) or set(data) != {"signatures"}:
        raise CatalogueError("the catalogue must be a mapping with exactly one key, 'signatures'", path=path)
    entries = data["signatures"]
    if not isinstance(entries, list) or not entries:
        raise CatalogueError("'signatures' must be a non-empty list", path=path)
    signatures = [_signature(entry, i, path) for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for sig in signatures:
        if sig.id in seen:
            raise CatalogueError("duplicate id", path=path, entry=sig.id)
        seen.add(sig.id)
    return Catalogue(signatures=tuple(signatures), path=path)


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read, validate and compile a catalogue file (the bundled one by default).

    Parameters
    ----------
    path : str or Path, optional
        A YAML catalogue; :data:`DEFAULT_PATH` when omitted.

    Returns
    -------
    Catalogue

    Raises
    ------
    CatalogueError
        If the file cannot be read, is not YAML, or fails validation.
    """
    if path is None:
        return _default_catalogue()
    return _load(Path(path))


def _load(path: Path) -> Catalogue:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogueError(f"cannot read the catalogue: {exc.strerror}", path=str(path)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogueError(f"not valid YAML: {exc}", path=str(path)) from exc
    return parse_catalogue(data, path=str(path))


@lru_cache(maxsize=1)
def _default_catalogue() -> Catalogue:
    # Compiled once per process: every diagnose call reuses the same patterns.
    return _load(DEFAULT_PATH)
