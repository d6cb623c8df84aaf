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
class PairPicker:
    """A source and a destination compute, chosen with two dropdowns."""

    source_dropdown: w.Dropdown
    destination_dropdown: w.Dropdown
    box: w.Widget

    @property
    def source(self) -> str:
        """The chosen source host."""
        return self.source_dropdown.value

    @property
    def destination(self) -> str:
        """The chosen destination host."""
        return self.destination_dropdown.value

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

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
