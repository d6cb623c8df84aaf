"""JupyterLab on loopback and Debian's Chromium driven by Playwright, for the browser tests.

No browser is downloaded: Playwright drives ``/usr/bin/chromium`` (Debian package
``chromium``). JupyterLab runs from the project's venv on 127.0.0.1 with a random token, its
own settings and workspaces directories (no news pop-up, no restored layout, every cell kept
in the page), and is stopped by its process id.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import nbformat

CHROMIUM = Path(os.environ.get("RUNBOOK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]


def missing_prerequisite() -> str | None:
    """Why the browser test cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM}: apt-get install chromium fonts-dejavu-core (or set RUNBOOK_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (pip install -e .[test])"
    return None


def notebook_copy(src: Path, dest_dir: Path, **params: Any) -> Path:
    """Copy a notebook into ``dest_dir`` with its parameters cell's defaults replaced by ``params``.

    Each ``name = value  # help`` line named in ``params`` gets ``repr(value)`` and keeps its help.
    """
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        m = re.match(r"^(\w+) = .*?(  # .*)?$", line)
        if m and m.group(1) in params:
            line = f"{m.group(1)} = {params.pop(m.group(1))!r}{m.group(2) or ''}"
        lines.append(line)
    assert not params, f"not parameters of {src.name}: {sorted(params)}"
    cell.source = "\n".join(lines)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / src.name
    nbformat.write(nb, out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JupyterLab:
    """A JupyterLab server started for a test; ``stop()`` ends it (and only it) by its process id."""

    root_dir: Path
    state_dir: Path
    port: int = field(default_factory=_free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """A URL in the server, with the token."""
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"

    def start(self, timeout: float = 120) -> "JupyterLab":
        settings = self.state_dir / "settings"
        _write_settings(settings)
        log = open(self.state_dir / "jupyterlab.log", "wb")
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(self.state_dir / "config"),
               "JUPYTER_RUNTIME_DIR": str(self.state_dir / "runtime"), "PYTHONUNBUFFERED": "1"}
        env.pop("JUPYTER_TOKEN", None)
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--allow-root",
             "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root_dir}",
             f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.state_dir / 'workspaces'}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             "--ServerApp.open_browser=False"],
            cwd=self.root_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # its kernels share its process group: stopped with it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {self.proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(self.url("api/status"), timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"JupyterLab did not answer within {timeout:g} s; see {log.name}")

    def stop(self) -> None:
        """Stop the server and its kernels: SIGTERM to its process group, SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        pgid = self.proc.pid  # start_new_session: the group is the server's own
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(10)
        try:  # kernels that outlived the server (same group)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _write_settings(settings: Path) -> None:
    """User settings: no news or update toasts, every cell kept in the DOM, no autosave surprises."""
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    }
    for rel, content in files.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


class Browser:
    """Headless Debian Chromium with a fresh profile, through Playwright."""

    def __init__(self, profile: Path, shots: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.shots = shots
        shots.mkdir(parents=True, exist_ok=True)
        self._pw = sync_playwright().start()
        self.context = self._pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.set_default_timeout(60_000)

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()

    def shot(self, name: str, locator: Any = None) -> Path:
        """A screenshot of the page (or of one element) under the artifacts directory."""
        path = self.shots / f"{name}.png"
        (locator or self.page).screenshot(path=str(path))
        return path


# ------------------------------------------------------------------------------ JupyterLab page helpers


def open_notebook(page: Any, jl: JupyterLab, name: str, timeout: float = 120) -> None:
    """Open a notebook and wait for its kernel to be idle."""
    workspace = re.sub(r"\W", "-", Path(name).stem)  # its own workspace: no tabs restored from another page
    page.goto(jl.url(f"lab/workspaces/{workspace}/tree/{name}"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
    wait_idle(page, timeout)


def wait_idle(page: Any, timeout: float = 120) -> None:
    """Wait until the notebook's kernel is connected and says Idle (toolbar and status bar)."""
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=timeout * 1000)
    page.wait_for_function("() => /Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '')",
                           timeout=timeout * 1000)
    time.sleep(1)  # the kernel's websocket settles just after the first idle


def _prompts(page: Any) -> list[str]:
    return [p.strip() for p in page.locator(".jp-Notebook .jp-CodeCell .jp-InputPrompt").all_inner_texts()]


def run_all(page: Any, tries: int = 3) -> list[str]:
    """Run > Run All Cells, through the menu bar as a person would; returns the prompts before.

    Waits until the first cell has started (queued, running or numbered); a click that a
    kernel still connecting dropped is made again.
    """
    before = _prompts(page)
    for _ in range(tries):
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            now = _prompts(page)
            if now and re.search(r"\[(\*|\d+)\]", now[0]) and now != before:
                return before
            time.sleep(0.5)
    raise AssertionError(f"Run All Cells started nothing: {_prompts(page)}")


def wait_all_executed(page: Any, before: list[str], timeout: float = 600) -> list[str]:
    """Wait until the run that changed ``before`` is over: nothing queued or running, kernel idle.

    A cell that raised stops the run (the cells after it keep an empty prompt): that is an
    end too, and :func:`errors_shown` says what happened.
    """
    deadline = time.monotonic() + timeout
    prompts: list[str] = []
    quiet = 0
    while time.monotonic() < deadline:
        prompts = _prompts(page)
        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count() > 0
        busy = any("*" in p for p in prompts)
        quiet = quiet + 1 if (prompts != before and not busy and idle) else 0
        if quiet >= 3:
            return prompts
        time.sleep(1)
    raise AssertionError(f"cells still running after {timeout:g} s: {prompts}")


def cell_with(page: Any, source_text: str) -> Any:
    """The code cell whose source contains ``source_text`` (exactly one)."""
    cells = page.locator(".jp-Notebook .jp-CodeCell").filter(
        has=page.locator(".jp-InputArea", has_text=source_text))
    assert cells.count() == 1, f"{cells.count()} cells contain {source_text!r}"
    return cells.first


def run_cell(page: Any, cell: Any) -> None:
    """Select a cell and run it with Ctrl+Enter (the selection stays), then wait for it."""
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Control+Enter")
    time.sleep(0.5)
    page.wait_for_function(
        "el => !el.querySelector('.jp-InputPrompt').innerText.includes('*')", arg=cell.element_handle(),
        timeout=120_000)


def errors_shown(page: Any) -> list[str]:
    """Tracebacks in the notebook's outputs (JupyterLab renders them as stderr text)."""
    texts = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
    return [t for t in texts if "Traceback" in t or re.search(r"^\w+(Error|Exception)\b", t, re.M)]


def iter_images(cell: Any) -> Iterator[Any]:
    images = cell.locator(".jp-OutputArea-output img")
    for i in range(images.count()):
        yield images.nth(i)
