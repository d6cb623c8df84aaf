"""Explain live-migration failures from their log lines.

A catalogue of known failure wordings (``signatures.yaml``, data not code) maps log lines
from nova-conductor, nova-compute, libvirtd's journal and QEMU instance logs to a cause and
the runbook phase or parameter that fixes it. Lines that match no signature are not
guessed at.

>>> from runbook_lib.diagnose import diagnose_text
>>> [m.category for m in diagnose_text("nova.exception.ComputeServiceUnavailable: "
...                                    "Compute service of compute2 is unavailable at this time.")]
['compute-service']
"""

from __future__ import annotations

from .catalogue import CATEGORIES, PHASES, SOURCES, Catalogue, CatalogueError, Signature, load_catalogue, parse_catalogue
from .match import MERGE_WINDOW, Match, diagnose_lines, diagnose_text

__all__ = [
    "CATEGORIES",
    "PHASES",
    "SOURCES",
    "MERGE_WINDOW",
    "Catalogue",
    "CatalogueError",
    "Match",
    "Signature",
    "diagnose_lines",
    "diagnose_text",
    "load_catalogue",
    "parse_catalogue",
]
