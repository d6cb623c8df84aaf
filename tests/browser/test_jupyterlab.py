"""The interactive path in a real browser: JupyterLab, the preflight notebook, a picker, plots.

A lab (2 computes, ``ns`` mode, no cloud) is brought up on 198.18.30.0/24; a copy of
``notebooks/00_preflight.ipynb`` with ``params_file`` set to the lab's ``params.yaml`` is
opened in JupyterLab (loopback, token) in headless Debian Chromium; Run > Run All Cells; then
the pair picker's source and destination are changed and the pair-detail cell is run again.

Screenshots go to ``$RUNBOOK_BROWSER_ARTIFACTS`` (default: the test's temp dir), one per
step; with ``RUNBOOK_UPDATE_WALKTHROUGH=1`` the README's ``docs/walkthrough/00_preflight*.png``
are replaced by this run's (``walkthrough.py`` makes the other phases' pictures).

    .venv/bin/python -m pytest -m browser tests/browser -v
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from . import jlab

pytestmark = [pytest.mark.browser, pytest.mark.lab]

LAB_DIR = Path(os.environ.get("RUNBOOK_BROWSER_LAB_DIR", "/var/lib/runbook-lab-test/browser"))
LAB_NET = "198.18.30.0/24"
WALKTHROUGH = jlab.ROOT / "docs" / "walkthrough"


@pytest.fixture(scope="module")
def prerequisites() -> None:
    why = jlab.missing_prerequisite()
    if why:
        pytest.skip(why)
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (netns, mounts, bridges)")


@pytest.fixture(scope="module")
def lab_params(prerequisites: None) -> Path:
    """A lab without the cloud (the preflight only needs SSH), down again at the end."""
    from runbook_lib import lab

    info = lab.up(computes=2, mode="ns", net=LAB_NET, lab_dir=LAB_DIR, cloud=False)
    try:
        yield Path(info.params_file) if getattr(info, "params_file", None) else LAB_DIR / "params.yaml"
    finally:
        lab.down(LAB_DIR)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("RUNBOOK_BROWSER_ARTIFACTS")
    path = Path(root) if root else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def jupyterlab(lab_params: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("jlab")
    jlab.notebook_copy(jlab.ROOT / "notebooks" / "00_preflight.ipynb", work / "notebooks",
                       params_file=str(lab_params))
    server = jlab.JupyterLab(root_dir=work / "notebooks", state_dir=work)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(jupyterlab: jlab.JupyterLab, artifacts: Path, tmp_path_factory: pytest.TempPathFactory):
    b = jlab.Browser(tmp_path_factory.mktemp("chromium-profile"), artifacts / "screenshots")
    try:
        yield b
    finally:
        b.close()


def _html_table_header(cell) -> list[str]:
    return [t.strip() for t in cell.locator(".jp-OutputArea-output table thead th").all_inner_texts()]


def test_preflight_in_jupyterlab(jupyterlab: jlab.JupyterLab, browser: jlab.Browser, artifacts: Path) -> None:
    page = browser.page
    started = time.monotonic()
    jlab.open_notebook(page, jupyterlab, "00_preflight.ipynb")
    shots = [browser.shot("01_opened")]

    before = jlab.run_all(page)
    try:
        prompts = jlab.wait_all_executed(page, before, timeout=600)
    finally:
        shots.append(browser.shot("01_ran_all"))
    assert all(p.strip("[]: ").isdigit() for p in prompts), prompts
    assert jlab.errors_shown(page) == []
    run_all_seconds = time.monotonic() - started

    # the inventory names the lab's hosts
    inventory = jlab.cell_with(page, "preflight.inventory(site_cfg)")
    for host in ("controller", "compute1", "compute2"):
        assert host in inventory.locator(".jp-OutputArea-output").inner_text()

    # the fact-gathering progress bar finished (tqdm's widget, or its text where widgets are off)
    facts_cell = jlab.cell_with(page, "preflight.gather(")
    facts_out = facts_cell.locator(".jp-OutputArea").inner_text().replace("\u2007", " ")  # tqdm pads with figure spaces
    assert "100%" in facts_out and ("comparing CPUs" in facts_out or "gathering facts" in facts_out), facts_out

    # plots: the resources bar chart and the pairwise heatmap are real images with pixels
    for source in ("plots.resources(site_cfg, gathered)", "plots.pairwise(pairs)"):
        cell = jlab.cell_with(page, source)
        images = list(jlab.iter_images(cell))
        assert len(images) == 1, source
        width = images[0].evaluate("img => img.complete ? img.naturalWidth : 0")
        assert width > 200, (source, width)
    heatmap = jlab.cell_with(page, "plots.pairwise(pairs)")
    heatmap.scroll_into_view_if_needed()
    shots.append(browser.shot("02_pairwise_heatmap", heatmap))
    shots.append(browser.shot("02_resources", jlab.cell_with(page, "plots.resources(site_cfg, gathered)")))

    # the readiness matrix: every host × check with a verdict; the seeded lab is not ready yet
    matrix = jlab.cell_with(page, "preflight.matrix(results)")
    matrix_text = matrix.locator(".jp-OutputArea-output").inner_text()
    for host in ("controller", "compute1", "compute2"):
        assert host in matrix_text
    assert "pass" in matrix_text and "fail" in matrix_text, matrix_text[:500]
    matrix.scroll_into_view_if_needed()
    shots.append(browser.shot("03_readiness_matrix", matrix))

    # the pair picker: defaults from the parameters (first two computes) ...
    picker = jlab.cell_with(page, "widgets.pair_picker(")
    selects = picker.locator(".jp-OutputArea-output select")
    assert selects.count() == 2
    assert [selects.nth(i).input_value() for i in range(2)] == ["compute1", "compute2"]
    detail = jlab.cell_with(page, "preflight.pair_detail(")
    assert _html_table_header(detail)[1:3] == ["compute1", "compute2"], _html_table_header(detail)
    before = detail.locator(".jp-OutputArea-output").inner_text()

    # ... then a person picks compute2 → compute1 and re-runs the cell below
    selects.nth(0).select_option("compute2")
    selects.nth(1).select_option("compute1")
    picker.scroll_into_view_if_needed()
    jlab.run_cell(page, detail)
    assert jlab.errors_shown(page) == []
    header = _html_table_header(detail)
    assert header[1:3] == ["compute2", "compute1"], header
    after = detail.locator(".jp-OutputArea-output").inner_text()
    assert after != before
    assert "compute1 as seen from compute2" in after, after
    page.evaluate("el => el.scrollIntoView({block: 'start'})", picker.element_handle())
    shots.append(browser.shot("04_pair_picked"))

    report = artifacts / "browser-test.txt"
    report.write_text(f"run all: {run_all_seconds:.0f} s\n" + "\n".join(str(s) for s in shots) + "\n")
    if os.environ.get("RUNBOOK_UPDATE_WALKTHROUGH") == "1":
        WALKTHROUGH.mkdir(parents=True, exist_ok=True)
        shutil.copy(shots[-1], WALKTHROUGH / "00_preflight.png")
        shutil.copy(shots[2], WALKTHROUGH / "00_preflight_detail.png")
