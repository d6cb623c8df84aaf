"""Plots: each returns a PNG (what JupyterLab and the archived HTML show) and a text summary."""

from __future__ import annotations

import pandas as pd

from runbook_lib import plots
from runbook_lib.migrate import Drain, Outcome

PNG = b"\x89PNG\r\n\x1a\n"


def test_pair_kinds():
    assert plots.pair_kind("ok (shared)") == "ok (shared)"
    assert plots.pair_kind("ok (block)") == "ok (block)"
    assert plots.pair_kind("✗ libvirt tls port 16514 refused") == "✗ cannot"
    assert plots.pair_kind("unknown: source not reached") == "unknown"
    assert plots.pair_kind("—") == "self"


def test_pairwise_heatmap_is_a_png_with_counts():
    m = pd.DataFrame({"c1": ["—", "✗ CPU incompatible; port closed", "unknown: source not reached"],
                      "c2": ["ok (block)", "—", "unknown: source not reached"],
                      "c3": ["ok (shared)", "ok (shared)", "—"]}, index=["c1", "c2", "c3"])
    p = plots.pairwise(m)
    assert p._repr_png_().startswith(PNG)
    assert repr(p) == "2 ok (shared), 1 ok (block), 1 ✗ cannot, 2 unknown pairs"


def test_migration_progress_plots_samples_and_says_when_there_are_none():
    o = Outcome("vm", "id", "c1", "c2", destination="c2", status="completed", verified=True,
                start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:00:04+00:00",
                samples=[{"t": t, "memory_total_bytes": 64 << 20, "memory_processed_bytes": t * (16 << 20),
                          "memory_remaining_bytes": (64 - 16 * t) << 20} for t in range(5)])
    p = plots.migration_progress(o)
    assert p.png().startswith(PNG)
    assert "5 samples" in repr(p) and "0 MiB remaining" in repr(p)
    planned = plots.migration_progress(Outcome("vm", "id", "c1", None, status="planned (apply = False)"))
    assert planned.png().startswith(PNG) and "not run" in repr(planned)
    blind = Outcome("vm", "id", "c1", "c2", start="2026-01-01T00:00:00+00:00",
                    samples=[{"t": 1.0, "status": "running", "memory_remaining_bytes": None}])
    assert "no memory figures" in repr(plots.migration_progress(blind))


def test_drain_timeline():
    d = Drain("c1", outcomes=[
        Outcome("a", "1", "c1", None, destination="c2", status="completed", verified=True,
                start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:00:05+00:00"),
        Outcome("b", "2", "c1", None, destination="c1", status="error",
                start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:00:09+00:00")],
        left=[{"name": "b", "status": "ACTIVE"}],
        timeline=[{"t": "2026-01-01T00:00:00+00:00", "event": "disabled nova-compute on c1: patching"}])
    p = plots.drain_timeline(d)
    assert p.png().startswith(PNG)
    assert repr(p) == "Drain of c1: 2 migrations, 1 verified, 1 servers left"
    assert "nothing ran" in repr(plots.drain_timeline(Drain("c1")))
