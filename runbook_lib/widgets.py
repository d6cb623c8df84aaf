"""ipywidgets pickers that pre-fill a notebook's choices.

They never block: under papermill nobody clicks, the widget is just displayed with the
values the parameters gave, and the cells after it read those values. In JupyterLab an
operator changes the selection and re-runs the cells below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import ipywidgets as w

from .params import Site


@dataclass
class _Picker:
    """Two dropdowns side by side: ``first`` and ``destination``."""

    first: w.Dropdown
    destination_dropdown: w.Dropdown
    box: w.Widget

    @property
    def destination(self) -> str:
        """The chosen destination host."""
        return self.destination_dropdown.value

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)


class PairPicker(_Picker):
    """A source and a destination compute, chosen with two dropdowns."""

    @property
    def source(self) -> str:
        """The chosen source host."""
        return self.first.value

    def __repr__(self) -> str:
        return f"source: {self.source}, destination: {self.destination}"


def pair_picker(site: Site, source: str = "", destination: str = "") -> PairPicker:
    """Dropdowns over the site's computes, pre-set from parameters (else the first two)."""
    names: Sequence[str] = [h.name for h in site.computes] or site.names
    src = source or names[0]
    dst = destination or next((n for n in names if n != src), src)
    s = w.Dropdown(options=list(names), value=src, description="source")
    d = w.Dropdown(options=list(names), value=dst, description="destination")
    return PairPicker(s, d, w.HBox([s, d]))


class MigrationPicker(_Picker):
    """A server and a destination ('' lets the scheduler choose), from the cloud's live lists."""

    @property
    def server(self) -> str:
        """The chosen server (ID, or the name given as parameter)."""
        return self.first.value

    def __repr__(self) -> str:
        return f"server: {self.server}, destination: {self.destination or '(scheduler)'}"


def migration_picker(conn: object, server: str = "", destination: str = "") -> MigrationPicker:
    """Dropdowns of servers and of enabled, up computes with their free capacity; pre-set from parameters."""
    from . import migrate

    servers = migrate.api.list_servers(conn)
    options = [(f"{s['name']} ({s['status']} on {s['host']})", s["id"]) for s in servers]
    chosen = next((s["id"] for s in servers if server in (s["id"], s["name"])), server)
    if chosen and chosen not in [v for _, v in options]:
        options.append((chosen, chosen))
    hosts = migrate.computes(conn)
    usable = hosts[(hosts["status"] == "enabled") & (hosts["state"] == "up")]
    dests = [("(let the scheduler choose)", "")] + [
        (f"{r['host']} (free: {r['free VCPU']:g} VCPU, {r['free MEMORY_MB']:g} MB)", r["host"]) for _, r in usable.iterrows()]
    if destination and destination not in [v for _, v in dests]:
        dests.append((f"{destination} (not enabled/up)", destination))
    s = w.Dropdown(options=options or [("(no servers)", "")], value=chosen or (options[0][1] if options else ""),
                   description="server")
    d = w.Dropdown(options=dests, value=destination or "", description="destination")
    return MigrationPicker(s, d, w.HBox([s, d]))
