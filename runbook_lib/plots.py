"""Plots for the places where people would rather look than read.

Each public function is one notebook cell's call and returns a :class:`Plot`: a static PNG
(matplotlib, Agg backend) that JupyterLab shows inline and that nbconvert embeds in the
archived HTML as it is — no JavaScript, no widget state, the same picture everywhere — and
a one-line text summary for terminals and ``text/plain`` readers.

Figures are made with :class:`matplotlib.figure.Figure`, never through ``pyplot``: no global
state, and the inline backend does not show a figure twice.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import TYPE_CHECKING, Iterable, Mapping

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .facts import HostFacts
    from .migrate import Drain, Outcome
    from .params import Site

#: Cell colours of the pairwise heatmap, by verdict kind.
PAIR_COLOURS = {"ok (shared)": "#2e7d32", "ok (block)": "#81c784", "✗ cannot": "#c62828", "unknown": "#9e9e9e",
                "self": "#ffffff"}


class Plot:
    """A rendered figure: PNG for notebooks and the archive, a text summary elsewhere."""

    def __init__(self, figure: "Figure", summary: str) -> None:
        self.figure = figure
        self.summary = summary
        self._png: bytes | None = None

    def png(self) -> bytes:
        """The figure as PNG bytes (rendered once)."""
        if self._png is None:
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=96, bbox_inches="tight")
            self._png = buf.getvalue()
        return self._png

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        return self.summary

    def save(self, path: str) -> None:
        """Write the PNG to ``path``."""
        with open(path, "wb") as f:
            f.write(self.png())


def _figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _message(text: str, title: str) -> Plot:
    """A small figure that says why there is nothing to plot (so the cell still shows something)."""
    fig = _figure(6, 1.2)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title, loc="left")
    ax.text(0.0, 0.4, text, fontsize=11, color="#555555")
    return Plot(fig, f"{title}: {text}")


# ------------------------------------------------------------------------------ preflight


def resources_frame(site: "Site", gathered: Mapping[str, "HostFacts"]) -> pd.DataFrame:
    """Per reached compute: CPUs, RAM MiB and free RAM MiB, as plotted by :func:`resources`."""
    rows = []
    for h in site.computes:
        hf = gathered.get(h.name)
        if hf is None or not hf.reached:
            continue
        cpu, mem = hf.get("cpu") or {}, hf.get("memory") or {}
        rows.append({"host": h.name, "CPUs": cpu.get("cpus"), "RAM MiB": mem.get("total_mb"),
                     "free RAM MiB": mem.get("available_mb")})
    return pd.DataFrame(rows, columns=["host", "CPUs", "RAM MiB", "free RAM MiB"]).set_index("host")


def resources(site: "Site", gathered: Mapping[str, "HostFacts"]) -> Plot:
    """The computes side by side: CPUs, and RAM (total and free) — a smaller host stands out."""
    frame = resources_frame(site, gathered)
    title = "Computes side by side"
    if frame.empty:
        return _message("no compute was reached", title)
    frame = frame.apply(pd.to_numeric, errors="coerce").fillna(0)
    hosts = list(frame.index)
    fig = _figure(max(6, 1.1 * len(hosts) + 3), 3)
    cpu_ax, mem_ax = fig.subplots(1, 2)
    cpu_ax.bar(hosts, frame["CPUs"], color="#1565c0")
    cpu_ax.set_title("CPUs")
    x = range(len(hosts))
    mem_ax.bar(x, frame["RAM MiB"], color="#90caf9", label="total")
    mem_ax.bar(x, frame["free RAM MiB"], color="#1565c0", width=0.5, label="free")
    mem_ax.set_xticks(list(x), hosts)
    mem_ax.set_title("RAM MiB")
    mem_ax.legend(loc="lower right", fontsize=8)
    for ax in (cpu_ax, mem_ax):
        ax.tick_params(axis="x", labelrotation=30 if len(hosts) > 4 else 0)
        ax.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, x=0.01, ha="left")
    summary = "; ".join(f"{h}: {int(r['CPUs'])} CPUs, {int(r['RAM MiB'])} MiB RAM ({int(r['free RAM MiB'])} free)"
                        for h, r in frame.iterrows())
    return Plot(fig, summary)


def pair_kind(verdict: str) -> str:
    """The colour class of one pairwise cell: ok (shared), ok (block), ✗ cannot, unknown or self."""
    verdict = str(verdict)
    if verdict.startswith("ok (shared"):
        return "ok (shared)"
    if verdict.startswith("ok"):
        return "ok (block)"
    if verdict.startswith("✗"):
        return "✗ cannot"
    if verdict in ("—", ""):
        return "self"
    return "unknown"


def pairwise(matrix: pd.DataFrame) -> Plot:
    """The pairwise source × destination matrix (``preflight.pairwise``) as a heatmap.

    Green: a live migration can go this way (dark: shared storage, light: block migration);
    red: it cannot (the first reason is written in the cell); grey: a host was not reached.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    title = "Can a live migration go from each source (row) to each destination (column)?"
    if matrix.empty:
        return _message("no compute in the matrix", title)
    kinds = list(PAIR_COLOURS)
    codes = matrix.map(lambda v: kinds.index(pair_kind(v)))
    n_rows, n_cols = matrix.shape
    fig = _figure(max(5, 1.6 * n_cols + 2.5), max(2.5, 0.7 * n_rows + 1.6))
    ax = fig.add_subplot()
    ax.imshow(codes.to_numpy(), cmap=ListedColormap(list(PAIR_COLOURS.values())), vmin=0, vmax=len(kinds) - 1,
              aspect="auto")
    ax.set_xticks(range(n_cols), [str(c) for c in matrix.columns])
    ax.set_yticks(range(n_rows), [str(i) for i in matrix.index])
    ax.xaxis.tick_top()
    ax.set_xlabel("destination")
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("source")
    small = n_cols > 6
    for (i, j), verdict in _cells(matrix):
        kind = pair_kind(verdict)
        text = {"self": "", "ok (shared)": "shared", "ok (block)": "block"}.get(kind, _short(verdict, small))
        ax.text(j, i, text, ha="center", va="center", fontsize=6 if small else 8,
                color="black" if kind in ("ok (block)", "self", "unknown") else "white", wrap=True)
    ax.set_xticks([x - 0.5 for x in range(1, n_cols)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, n_rows)], minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    fig.legend(handles=[Patch(color=PAIR_COLOURS[k], label=k) for k in kinds if k != "self"],
               loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    counts = codes.stack().map(lambda c: kinds[c]).value_counts()
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in kinds if k != "self") + " pairs"
    return Plot(fig, summary)


def _cells(matrix: pd.DataFrame) -> Iterable[tuple[tuple[int, int], str]]:
    for i, (_, row) in enumerate(matrix.iterrows()):
        for j, v in enumerate(row):
            yield (i, j), str(v)


def _short(verdict: str, small: bool) -> str:
    """The first reason of a verdict, wrapped to fit a cell."""
    import textwrap

    first = verdict.lstrip("✗ ").split(";")[0]
    width = 14 if small else 20
    lines = textwrap.wrap(first, width)[:3]
    return "\n".join(lines) + ("…" if len(textwrap.wrap(first, width)) > 3 or ";" in verdict else "")


# ------------------------------------------------------------------------------ migrate


def migration_progress(outcome: "Outcome") -> Plot:
    """Guest memory remaining (and processed) over time during one live migration."""
    title = f"Live migration of {outcome.server}: memory over time"
    samples = pd.DataFrame(outcome.samples)
    if samples.empty or "memory_remaining_bytes" not in samples:
        why = ("not run: " + outcome.status) if not outcome.start else "no progress sample (it finished between two samples)"
        return _message(why, title)
    if samples["memory_remaining_bytes"].isna().all():
        return _message(f"{len(samples)} samples, but the hypervisor reported no memory figures "
                        f"({outcome.source} → {outcome.destination or outcome.requested or '?'}, "
                        f"{'verified' if outcome.verified else outcome.status})", title)
    mib = 1024 * 1024
    fig = _figure(7, 3)
    ax = fig.add_subplot()
    t = samples["t"]
    ax.plot(t, samples["memory_remaining_bytes"].fillna(0) / mib, marker="o", color="#c62828", label="remaining")
    if "memory_processed_bytes" in samples:
        ax.plot(t, samples["memory_processed_bytes"].fillna(0) / mib, marker=".", color="#1565c0", label="processed")
    if "memory_total_bytes" in samples and samples["memory_total_bytes"].notna().any():
        ax.axhline(samples["memory_total_bytes"].max() / mib, color="#9e9e9e", linestyle="--", label="guest memory")
    ax.set_xlabel("seconds since the migration started")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"{title} ({outcome.source} → {outcome.destination or outcome.requested or '?'}, "
                 f"{'verified' if outcome.verified else outcome.status})", fontsize=10, loc="left")
    last = samples.iloc[-1]
    summary = (f"{len(samples)} samples over {float(t.iloc[-1]):g} s; last: "
               f"{(last.get('memory_remaining_bytes') or 0) / mib:.0f} MiB remaining")
    return Plot(fig, summary)


# ------------------------------------------------------------------------------ maintenance


def _when(stamp: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None


def drain_timeline(drain: "Drain") -> Plot:
    """A host drain as a timeline: one bar per migration (green verified, red not), events as marks."""
    title = f"Drain of {drain.host}"
    spans = [(o, _when(o.start), _when(o.end)) for o in drain.outcomes]
    spans = [(o, s, e) for o, s, e in spans if s and e]
    events = [(_when(ev["t"]), ev["event"]) for ev in drain.timeline if _when(ev["t"])]
    if not spans and not events:
        return _message("nothing ran (apply = False shows only what would move)", title)
    t0 = min([s for _, s, _ in spans] + [t for t, _ in events])
    fig = _figure(8, max(2.2, 0.45 * len(spans) + 1.8))
    ax = fig.add_subplot()
    labels = []
    for row, (o, s, e) in enumerate(spans):
        start, width = (s - t0).total_seconds(), max((e - s).total_seconds(), 0.3)
        ax.barh(row, width, left=start, color="#2e7d32" if o.verified else "#c62828", height=0.6)
        ax.text(start + width, row, f" {o.destination or '?'} ({'verified' if o.verified else o.status})",
                va="center", fontsize=8)
        labels.append(o.server)
    for t, text in events:
        if text.startswith(("disabled", "re-enabled")):
            style = {"color": "#555555", "linestyle": ":"} if text.startswith("disabled") else {"color": "#1565c0", "linestyle": "--"}
            ax.axvline((t - t0).total_seconds(), label=text.split(":")[0], **style)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the drain started")
    ax.set_xlim(left=-0.5)
    ax.margins(x=0.25)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10, loc="left")
    ok = sum(o.verified for o, _, _ in spans)
    summary = f"{title}: {len(spans)} migrations, {ok} verified, {len(drain.left)} servers left"
    return Plot(fig, summary)
