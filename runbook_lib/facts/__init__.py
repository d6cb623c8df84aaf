"""Facts about hosts: each fact is a shell command plus a pure parser of its output.

Facts are gathered in one SSH round trip per host: the commands of all requested facts
are joined into a single batch script whose output is split back per fact by marker
lines. Parsers never touch the network, so they are tested on recorded real outputs.
A parser returns :data:`MISSING` when the thing it reads does not exist on the host (no
``nova`` user, no libvirt), which is different from an empty value.

Submodules hold the facts themselves: :mod:`.system`, :mod:`.libvirt`, :mod:`.nova`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..remote import Remote, Result, sh

MARK = "@@runbook-fact@@"


class _Missing:
    """Sentinel: the thing a fact reads is absent on the host."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Fact:
    """A named command and the pure function that parses its output."""

    name: str
    command: str
    parse: Callable[[str, int], Any]


@dataclass
class HostFacts:
    """Every fact gathered from one host, or the reason none could be."""

    host: str
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration: float = 0.0
    raw: dict[str, str] = field(default_factory=dict)
    parse_errors: dict[str, str] = field(default_factory=dict)

    @property
    def reached(self) -> bool:
        """Whether the host answered."""
        return self.error is None

    def get(self, name: str, default: Any = MISSING) -> Any:
        """The value of fact ``name``, ``default`` when absent."""
        return self.values.get(name, default)


# ------------------------------------------------------------------------------ gathering


def batch_script(facts: Iterable[Fact]) -> str:
    """One shell script that runs every fact's command and marks where each output ends."""
    parts = []
    for f in facts:
        # each fact in a subshell: a failing or exiting command cannot stop the batch
        parts.append(f"( {f.command} ) 2>/dev/null; rc=$?; echo; echo {sh(MARK)} {sh(f.name)} $rc")
    return "\n".join(parts) + "\n"


def split_batch(out: str) -> dict[str, tuple[str, int]]:
    """Batch output → ``{fact name: (output, exit code)}``."""
    sections: dict[str, tuple[str, int]] = {}
    buf: list[str] = []
    for line in out.splitlines():
        if line.startswith(MARK + " "):
            _, name, rc = line.rsplit(" ", 2)
            # the batch adds a newline after each output so that the marker starts a line
            text = "\n".join(buf).strip("\n")
            sections[name] = (text + "\n" if text else "", int(rc))
            buf = []
        else:
            buf.append(line)
    return sections


def parse_batch(host: str, facts: Iterable[Fact], result: Result) -> HostFacts:
    """Parse one host's batch result into :class:`HostFacts`."""
    hf = HostFacts(host=host, duration=result.duration)
    if not result.reached:
        hf.error = result.error
        return hf
    sections = split_batch(result.stdout)
    for f in facts:
        if f.name not in sections:
            hf.values[f.name] = MISSING
            continue
        text, rc = sections[f.name]
        hf.raw[f.name] = text
        try:
            hf.values[f.name] = f.parse(text, rc)
        except Exception as exc:  # noqa: BLE001 - one odd output must not lose the other facts
            hf.values[f.name] = MISSING
            hf.parse_errors[f.name] = f"{type(exc).__name__}: {exc}"
    return hf


def gather(
    remote: Remote,
    facts: Iterable[Fact],
    hosts: Iterable[str] | None = None,
) -> dict[str, HostFacts]:
    """Gather ``facts`` from ``hosts`` (all by default), one SSH round trip per host."""
    facts = list(facts)
    script = batch_script(facts)
    results = remote.run(script, hosts)
    return {name: parse_batch(name, facts, r) for name, r in results.items()}


def gather_each(remote: Remote, facts_per_host: Mapping[str, Iterable[Fact]],
                on_result: Callable[[Any], None] | None = None) -> dict[str, HostFacts]:
    """Gather a different list of facts from each host, one SSH round trip per host.

    ``on_result`` is called as each host's round trip ends (see ``Remote.run_each``).
    """
    lists = {name: list(fs) for name, fs in facts_per_host.items()}
    results = remote.run_each({name: batch_script(fs) for name, fs in lists.items()}, on_result=on_result)
    return {name: parse_batch(name, lists[name], r) for name, r in results.items()}


def merge(into: dict[str, HostFacts], more: Mapping[str, HostFacts]) -> dict[str, HostFacts]:
    """Add a later round's facts to ``into`` (a host that failed later keeps its earlier facts)."""
    for name, hf in more.items():
        target = into.setdefault(name, HostFacts(host=name))
        if hf.reached:
            target.values.update(hf.values)
            target.raw.update(hf.raw)
            target.parse_errors.update(hf.parse_errors)
        elif target.error is None:
            target.parse_errors["later round"] = hf.error or "not reached"
    return into
