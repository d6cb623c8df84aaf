"""Match log text against the signature catalogue.

Lines are parsed (:mod:`.logparse`), grouped into log records, and each message is matched
against the catalogue; only known wordings are reported, nothing is guessed for the rest.

One failure usually leaves its wording more than once: oslo.log prints the message in the
ERROR line, again in the traceback it appends (every traceback line carries the same
time/pid/logger prefix), and often a second logger repeats it a few milliseconds later. A
signature is therefore reported once per *occurrence*:

* once per log record (an oslo.log record with its traceback lines, a bare Python
  traceback with the exception line that ends it, or any other single line);
* records of the same source repeating the same signature for the same instance and host
  within ``merge_window`` seconds count as the same occurrence.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

from .catalogue import Catalogue, load_catalogue
from .logparse import LogLine, parse_line

#: Seconds within which repeats of one signature (same source, host, instance) are one
#: occurrence: the same failure logged by two loggers lands within milliseconds.
MERGE_WINDOW = 5.0

_TB_START = "Traceback (most recent call last):"
_TB_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")


@dataclass(frozen=True)
class Match:
    """One occurrence of a known failure signature.

    Attributes
    ----------
    signature, category : str
        The catalogue entry and its category.
    cause, remediation, phase, reference : str
        Copied from the catalogue entry.
    line : str
        The matched log message, prefixes removed.
    lineno : int
        1-based line number in ``source``.
    source : str
        The name the text was given (a file name, ``-`` for stdin).
    timestamp : str or None
        ISO 8601 time of the line when it has one.
    host : str or None
        The host the line came from (journal field, or the caller's ``host``).
    instance : str or None
        The instance UUID oslo.log attached to the line, when it did.
    raw : str
        The physical line as read.
    """

    signature: str
    category: str
    cause: str
    remediation: str
    phase: str
    reference: str
    line: str
    lineno: int
    source: str
    timestamp: str | None
    host: str | None
    instance: str | None
    raw: str

    def to_dict(self) -> dict[str, object]:
        """Return the match as a JSON-ready dict."""
        return asdict(self)


@dataclass
class _Record:
    key: tuple[str, ...] | None
    lines: list[LogLine]
    in_traceback: bool = False
    after_exception: bool = False

    @property
    def joins_bare_lines(self) -> bool:
        # An oslo.log record continues over unprefixed lines (a multi-line message, or a
        # traceback printed by plain logging); so does an open bare traceback.
        return self.key is not None or self.in_traceback or self.after_exception


def _is_traceback_body(message: str) -> bool:
    return not message.strip() or message[:1].isspace() or message.startswith(_TB_CHAIN)


def _records(lines: Iterable[LogLine]) -> list[_Record]:
    records: list[_Record] = []
    current: _Record | None = None
    for line in lines:
        msg = line.message
        if line.prefixed:
            if current is not None and line.key is not None and line.key == current.key:
                current.lines.append(line)
            else:
                current = _Record(key=line.key, lines=[line])
                records.append(current)
            continue
        if current is not None and current.joins_bare_lines:
            if msg.startswith(_TB_START):
                current.in_traceback, current.after_exception = True, False
                current.lines.append(line)
                continue
            if current.in_traceback:
                current.lines.append(line)
                if not _is_traceback_body(msg):
                    # The exception line ends the traceback; a chained one may follow.
                    current.in_traceback, current.after_exception = False, True
                continue
            if current.after_exception and current.key is None:
                if _is_traceback_body(msg):
                    current.lines.append(line)
                    continue
            elif current.key is not None:
                current.lines.append(line)
                continue
        current = _Record(key=None, lines=[line], in_traceback=msg.startswith(_TB_START))
        records.append(current)
    return records


def diagnose_lines(
    lines: Iterable[str],
    source_name: str = "-",
    *,
    host: str | None = None,
    catalogue: Catalogue | None = None,
    merge_window: float = MERGE_WINDOW,
) -> list[Match]:
    """Match log lines against the catalogue.

    Parameters
    ----------
    lines : iterable of str
        Physical log lines, in order.
    source_name : str, optional
        Name reported in each match (file name, ``-`` for stdin).
    host : str, optional
        Host to report for lines that do not name one themselves.
    catalogue : Catalogue, optional
        Defaults to the bundled catalogue.
    merge_window : float, optional
        Seconds within which repeats are one occurrence (see module docstring); ``0``
        reports every log record.

    Returns
    -------
    list of Match
        In line order; empty when no known wording appears.
    """
    catalogue = catalogue or load_catalogue()
    parsed = (parse_line(raw, i) for i, raw in enumerate(lines, start=1))
    matches: list[Match] = []
    last_seen: dict[tuple[str, str | None, str | None], LogLine] = {}
    for record in _records(parsed):
        reported: set[str] = set()
        for line in record.lines:
            found = catalogue.first_match(line.message)
            if found is None:
                continue
            sig, _ = found
            if sig.id in reported:
                continue
            reported.add(sig.id)
            line_host = line.host or host
            instance = line.instance or next((ln.instance for ln in record.lines if ln.instance), None)
            key = (sig.id, line_host, instance)
            previous = last_seen.get(key)
            last_seen[key] = line
            if (
                previous is not None
                and merge_window > 0
                and previous.when is not None
                and line.when is not None
                and previous.when.tzinfo == line.when.tzinfo
                and abs((line.when - previous.when).total_seconds()) <= merge_window
            ):
                continue
            timestamp = line.timestamp or next((ln.timestamp for ln in record.lines if ln.timestamp), None)
            matches.append(
                Match(
                    signature=sig.id,
                    category=sig.category,
                    cause=sig.cause,
                    remediation=sig.remediation,
                    phase=sig.phase,
                    reference=sig.reference,
                    line=line.message.strip(),
                    lineno=line.lineno,
                    source=source_name,
                    timestamp=timestamp,
                    host=line_host,
                    instance=instance,
                    raw=line.raw,
                )
            )
    return matches


def diagnose_text(
    text: str,
    source_name: str = "-",
    *,
    host: str | None = None,
    catalogue: Catalogue | None = None,
    merge_window: float = MERGE_WINDOW,
) -> list[Match]:
    """Match a log text (a file's content, a journal export) against the catalogue.

    Parameters
    ----------
    text : str
        The log text.
    source_name : str, optional
        Name reported in each match (file name, ``-`` for stdin).
    host : str, optional
        Host to report for lines that do not name one themselves.
    catalogue : Catalogue, optional
        Defaults to the bundled catalogue.
    merge_window : float, optional
        Seconds within which repeats are one occurrence.

    Returns
    -------
    list of Match
        In line order; empty when no known wording appears.

    Examples
    --------
    >>> [m.signature for m in diagnose_text(
    ...     "libvirt.libvirtError: Unsafe migration: Migration without shared storage is unsafe")]
    ['libvirt-unsafe-migration-no-shared-storage']
    """
    return diagnose_lines(
        re.split(r"\r?\n", text.rstrip("\r\n")) if text.strip() else [],
        source_name,
        host=host,
        catalogue=catalogue,
        merge_window=merge_window,
    )
