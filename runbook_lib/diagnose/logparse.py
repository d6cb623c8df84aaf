"""Pure parsers for the log formats a live-migration post-mortem meets.

Each physical line is reduced to a :class:`LogLine`: the message with its prefixes removed,
plus what the prefixes said (time, host, level, logger, instance). Recognised, outermost
first:

* systemd journal exports: ``journalctl -o short-iso`` / ``short-precise`` lines,
  classic syslog lines (``May 01 10:00:00 host ident[pid]: ...``) and ``-o json`` lines;
* oslo.log lines (nova): ``2024-05-01 10:00:00.123 1234 ERROR nova.compute.manager
  [req-... - - - - -] [instance: <uuid>] message``; exception lines use oslo.log's
  ``logging_exception_prefix``, which has no request context;
* libvirt's own log prefix: ``2024-05-01 10:00:00.123+0000: 812: error : func:123 : msg``;
* QEMU instance logs (``2024-05-01T10:00:00.123456Z qemu-system-x86_64: ...``).

Lines in none of these formats (bare tracebacks, virsh output, continuation lines of a
multi-line message) are kept whole, with ``prefixed`` false.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

#: A key shared by the lines of one log record (an oslo.log message and the traceback lines
#: oslo.log writes for it); ``None`` when a line is a record of its own.
RecordKey = tuple[str, ...] | None

_ANSI = re.compile(r"(?:\x1b|#033)\[[0-9;]*m")

_OSLO = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) (?P<pid>\d+) "
    r"(?P<level>TRACE|DEBUG|INFO|AUDIT|WARNING|ERROR|CRITICAL) (?P<logger>\S+) ?(?P<rest>.*)$"
)
# The request context oslo.log prints: "[-]", "[req-... - - - - -]", "[None req-... ...]".
_OSLO_CONTEXT = re.compile(r"^\[(?P<ctx>-|(?:None )?req-[^\]]*|[^\]]* - [^\]]*)\] ?")
_OSLO_INSTANCE = re.compile(r"^\[instance: (?P<uuid>[0-9a-fA-F-]{36})\] ?")
_REQUEST_ID = re.compile(r"\breq-[0-9a-f-]{36}\b")

_LIBVIRT = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4}): (?P<tid>\d+): "
    r"(?P<level>debug|info|warning|error) : (?:(?P<func>[A-Za-z_][A-Za-z0-9_]*):(?P<fline>\d+) : )?(?P<msg>.*)$"
)
# libvirt also writes its own lines into the QEMU instance log ("...+0000: starting up ...").
_LIBVIRT_QEMULOG = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+[+-]\d{4}): (?P<msg>.*)$")
_QEMU = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) (?P<msg>\S+: .*)$")

_JOURNAL_ISO = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) "
    r"(?P<host>\S*[^\s:]) (?P<ident>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$"
)
_JOURNAL_SYSLOG = re.compile(
    r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?) "
    r"(?P<host>\S*[^\s:]) (?P<ident>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)$"
)


@dataclass
class LogLine:
    """One physical log line, prefixes understood.

    Attributes
    ----------
    lineno : int
        1-based line number in its source.
    raw : str
        The line as read (without the newline).
    message : str
        The text after every recognised prefix; what signatures are matched against.
    prefixed : bool
        Whether a known log prefix was found.
    timestamp : str or None
        ISO 8601 time when the line carries one (a syslog-style time without a year is
        kept as written).
    when : datetime or None
        The same time, comparable within one source.
    host, level, logger, pid, instance, request_id : str or None
        What the prefixes told, when they told it.
    key : tuple of str or None
        Lines with equal non-``None`` keys belong to one log record.
    """

    lineno: int
    raw: str
    message: str
    prefixed: bool = False
    timestamp: str | None = None
    when: datetime | None = None
    host: str | None = None
    level: str | None = None
    logger: str | None = None
    pid: str | None = None
    instance: str | None = None
    request_id: str | None = None
    key: RecordKey = None
    extra: dict[str, str] = field(default_factory=dict)


def _iso(ts: str) -> tuple[str | None, datetime | None]:
    """Normalise the timestamp formats above; unknown formats are kept as written."""
    text = ts.replace(",", ".")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f%z", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            when = datetime.strptime(text, fmt)
            return when.isoformat(timespec="milliseconds"), when
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(text)
        return when.isoformat(timespec="milliseconds" if "." in text else "seconds"), when
    except ValueError:
        pass
    for fmt in ("%b %d %H:%M:%S.%f", "%b %d %H:%M:%S"):
        try:
            # Syslog-style times have no year: keep the text, compare within a file only.
            return ts, datetime.strptime(" ".join(text.split()), fmt)
        except ValueError:
            pass
    return ts, None


def _inner(line: LogLine, text: str, scope: tuple[str, ...]) -> None:
    """Fill ``line`` from an application prefix (oslo.log, libvirt, QEMU) in ``text``."""
    m = _OSLO.match(text)
    if m:
        rest = m.group("rest")
        ctx = _OSLO_CONTEXT.match(rest)
        if ctx:
            rid = _REQUEST_ID.search(ctx.group("ctx"))
            line.request_id = rid.group(0) if rid else None
            rest = rest[ctx.end():]
        inst = _OSLO_INSTANCE.match(rest)
        if inst:
            line.instance = inst.group("uuid").lower()
            rest = rest[inst.end():]
        line.message = rest
        line.prefixed = True
        line.level = m.group("level")
        line.logger = m.group("logger")
        line.pid = m.group("pid")
        if line.timestamp is None:
            line.timestamp, line.when = _iso(m.group("ts"))
        # oslo.log repeats time, pid and logger (not the request context) on every line of
        # the traceback it writes for a record: that triple identifies the record.
        line.key = scope + ("oslo", m.group("pid"), m.group("ts"), m.group("logger"))
        return
    m = _LIBVIRT.match(text)
    if m:
        line.message = m.group("msg")
        line.prefixed = True
        line.level = m.group("level")
        line.logger = m.group("func")
        line.pid = line.pid or m.group("tid")
        if line.timestamp is None:
            line.timestamp, line.when = _iso(m.group("ts"))
        return
    m = _QEMU.match(text) or _LIBVIRT_QEMULOG.match(text)
    if m:
        line.message = m.group("msg")
        line.prefixed = True
        if line.timestamp is None:
            line.timestamp, line.when = _iso(m.group("ts"))
        return
    line.message = text


def _journal_json(line: LogLine, text: str) -> bool:
    try:
        entry = json.loads(text)
    except ValueError:
        return False
    if not isinstance(entry, dict) or "MESSAGE" not in entry:
        return False
    message = entry["MESSAGE"]
    if isinstance(message, list):
        # journald exports non-UTF-8 or multi-line messages as a byte array.
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode("utf-8", "replace")
    if not isinstance(message, str):
        return False
    line.host = entry.get("_HOSTNAME") or None
    line.pid = entry.get("_PID") or entry.get("SYSLOG_PID") or None
    ident = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or ""
    line.extra["ident"] = ident
    realtime = entry.get("__REALTIME_TIMESTAMP")
    if realtime and str(realtime).isdigit():
        when = datetime.fromtimestamp(int(realtime) / 1_000_000, tz=timezone.utc)
        line.timestamp, line.when = when.isoformat(timespec="milliseconds"), when
    line.prefixed = True
    lines = message.splitlines() or [""]
    _inner(line, _ANSI.sub("", lines[0]), ("journal", line.host or "", ident, line.pid or ""))
    if len(lines) > 1:
        line.message = "\n".join([line.message, *lines[1:]])
    return True


def parse_line(raw: str, lineno: int = 1) -> LogLine:
    """Parse one physical log line.

    Parameters
    ----------
    raw : str
        The line, with or without its trailing newline.
    lineno : int, optional
        Its 1-based number in the source.

    Returns
    -------
    LogLine
        With ``message`` holding the text after the recognised prefixes.
    """
    raw = raw.rstrip("\r\n")
    text = _ANSI.sub("", raw)
    line = LogLine(lineno=lineno, raw=raw, message=text)
    stripped = text.lstrip()
    if stripped.startswith("{") and _journal_json(line, stripped):
        return line
    for pattern, syslog in ((_JOURNAL_ISO, False), (_JOURNAL_SYSLOG, True)):
        m = pattern.match(text)
        if not m:
            continue
        line.prefixed = True
        line.host = m.group("host")
        line.pid = m.group("pid")
        line.extra["ident"] = m.group("ident")
        if not syslog:
            line.timestamp, line.when = _iso(m.group("ts"))
        _inner(line, m.group("msg"), ("journal", m.group("host"), m.group("ident"), m.group("pid") or ""))
        if syslog and line.timestamp is None:
            # A syslog time has no year; an inner oslo/libvirt time (taken above) is better.
            line.timestamp, line.when = _iso(m.group("ts"))
        return line
    _inner(line, text, ())
    return line
