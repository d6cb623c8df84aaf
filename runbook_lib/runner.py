"""Run a phase notebook headlessly with papermill and archive the run.

Exit codes (also in each run's ``summary.json``):

* 0 — the run completed and the runbook found no problems;
* 1 — the run completed and the runbook found problems (failed checks);
* 2 — the run itself failed (bad parameters, an error in a cell, nothing to run).

Everything that can be validated without a host is validated before the notebook starts:
the params file, the names and values of overrides, and host names in parameters. A run
that is refused at that stage sends nothing to any host and archives nothing.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import __version__, archive, params
from .errors import ParamsError, RunError
from .report import read_summary

EXIT_OK, EXIT_PROBLEMS, EXIT_FAILED = 0, 1, 2

#: Notebook parameters whose values name inventory hosts (validated before a run).
HOST_PARAMETERS = ("limit", "reference_host", "source_host", "destination_host", "hosts_to_drain", "nfs_server")


def notebooks_dir() -> Path:
    """Where the phase notebooks live: ``$RUNBOOK_NOTEBOOKS`` or the project's ``notebooks/``."""
    env = os.environ.get("RUNBOOK_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"


def phases(directory: Path | None = None) -> list[str]:
    """The phases that can be run (notebook names without ``.ipynb``)."""
    directory = directory or notebooks_dir()
    return sorted(p.stem for p in directory.glob("*.ipynb"))


def find_notebook(phase: str, directory: Path | None = None) -> Path:
    """The notebook for ``phase``: ``00_preflight`` or just ``preflight``."""
    directory = directory or notebooks_dir()
    known = phases(directory)
    for name in known:
        if phase == name or (name.split("_", 1)[-1] == phase and "_" in name):
            return directory / f"{name}.ipynb"
    raise RunError(f"unknown phase '{phase}': expected one of {', '.join(known) or '(no notebooks found)'}")


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares (its cell tagged ``parameters``)."""
    import papermill

    return papermill.inspect_notebook(str(path))


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` → ``(key, value)``; the value is read as YAML (``[a, b]``, ``true``, ``3``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"override {text!r}: expected key=value", source="-P")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParamsError(f"value {raw!r} is not valid YAML: {exc}", source="-P", key=key) from exc
    if isinstance(value, (dt.date, dt.datetime)):
        value = raw.strip()  # times stay text (ISO 8601), as notebooks and JSON expect them
    return key, value


def validate_overrides(
    site: params.Site, declared: Mapping[str, Any], overrides: Mapping[str, Any], phase: str
) -> None:
    """Refuse overrides the notebook does not declare, site keys, secrets and unknown hosts."""
    secrets = params.find_secrets(dict(overrides))
    if secrets:
        raise ParamsError("looks like a secret. " + params.SECRET_ADVICE, source="-P", key=secrets[0])
    for key, value in overrides.items():
        if key in params.SITE_KEYS:
            raise ParamsError(
                "site settings come from the params file (-p), not from overrides", source="-P", key=key
            )
        if key not in declared:
            allowed = sorted(k for k in declared if k not in params.SITE_KEYS and k != "params_file")
            raise ParamsError(
                f"{phase} has no such parameter; its parameters: {', '.join(allowed)}", source="-P", key=key
            )
        if key in HOST_PARAMETERS:
            params.check_host_names(site, value, key=key)


def changes_hosts(declared: Mapping[str, Any], overrides: Mapping[str, Any]) -> bool:
    """Whether a run would change hosts: its notebook has ``apply`` and the overrides set it."""
    return "apply" in declared and overrides.get("apply") in (True, "true", "True", 1)


@dataclass
class RunOutcome:
    """Where a run was archived and how it ended."""

    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any]


def run(
    phase: str,
    params_file: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    archive_root: Path | None = None,
    notebooks: Path | None = None,
    log_output: bool = False,
) -> RunOutcome:
    """Validate, execute ``phase`` with papermill and archive the run.

    Raises
    ------
    ParamsError, RunError
        Before anything ran: invalid parameters or an unknown phase. Nothing is archived.
    LockedError
        Another run is changing the same site.
    """
    overrides = dict(overrides or {})
    notebook = find_notebook(phase, notebooks)
    phase_name = notebook.stem
    site = params.load(params_file)
    declared = notebook_parameters(notebook)
    validate_overrides(site, declared, overrides, phase_name)
    parameters = {**site.as_parameters(), **overrides}

    root = archive_root or archive.default_root(site.archive_dir)
    held = None
    if changes_hosts(declared, overrides):
        from . import lock

        held = lock.acquire(root, site.name, phase_name)  # one changing run per site at a time
    try:
        return _run(notebook, phase_name, site, params_file, overrides, parameters, root, log_output,
                    held.took_over if held else None)
    finally:
        if held:
            held.release()


def _run(notebook: Path, phase_name: str, site: params.Site, params_file: Any, overrides: dict,
         parameters: dict, root: Path, log_output: bool, lock_note: str | None) -> RunOutcome:
    import papermill

    started = archive.utc_now()
    run_dir = archive.new_run_dir(root, phase_name, site.name, started)
    archive.write_text(
        run_dir / archive.PARAMETERS,
        f"# resolved parameters of {phase_name} on {site.name}, from {params_file}\n"
        + yaml.safe_dump(parameters, sort_keys=False),
    )
    out_nb = run_dir / archive.NOTEBOOK
    t0 = time.monotonic()
    error: str | None = None
    try:
        papermill.execute_notebook(
            str(notebook),
            str(out_nb),
            parameters=parameters,
            cwd=str(notebook.parent),
            log_output=log_output,
            progress_bar=False,
            report_mode=False,
        )
    except papermill.PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:  # noqa: BLE001 - anything else that stopped the run is archived too
        error = f"{type(exc).__name__}: {exc}"
    duration = time.monotonic() - t0
    ended = archive.utc_now()

    nb = _read_notebook(out_nb)
    published = read_summary(nb) if nb is not None else None
    if error is not None or published is None:
        status, code = "failed", EXIT_FAILED
        error = error or "the notebook finished without publishing a summary"
    elif published.get("problems"):
        status, code = "problems", EXIT_PROBLEMS
    else:
        status, code = "ok", EXIT_OK
    drift_info = None
    if nb is not None and published is not None and error is None:
        drift_info = _drift_section(nb, out_nb, root, phase_name, site.name, run_dir, published)
    if nb is not None:
        _export_html(nb, run_dir / archive.HTML)

    summary = {
        "phase": phase_name,
        "site": site.name,
        "status": status,
        "exit_code": code,
        "start": started.isoformat(),
        "end": ended.isoformat(),
        "duration_s": round(duration, 3),
        "hosts": (published or {}).get("hosts") or site.names,
        "verdicts": (published or {}).get("verdicts") or {},
        "problems": (published or {}).get("problems"),
        "files_changed": (published or {}).get("files_changed") or [],
        "checks": (published or {}).get("checks") or [],
        "changes": (published or {}).get("changes") or [],
        "warnings": (published or {}).get("warnings") or [],
        "error": error,
        "lock": lock_note,
        "drift": drift_info,
        "facts": (published or {}).get("facts") or {},
        "params_file": str(Path(params_file).resolve()),
        "overrides": overrides,
        "notebook": notebook.name,
        "runbook_version": __version__,
        "operator": _operator(),
    }
    for key, value in (published or {}).items():  # phase-specific data (changes, migrations…)
        summary.setdefault(key, value)
    archive.write_json(run_dir / archive.SUMMARY, summary)
    return RunOutcome(run_dir, status, code, summary)


def _drift_section(nb: Any, path: Path, root: Path, phase: str, site: str, run_dir: Path,
                   published: dict[str, Any]) -> dict[str, Any] | None:
    """Compare with the previous run of the phase and put the drift at the top of the notebook."""
    import nbformat

    from . import drift

    if not published.get("checks"):
        return None
    baseline = drift.previous_run(root, phase, site, before_dir=run_dir)
    if baseline is None:
        return None
    rows = drift.compare(baseline, published)
    cell = nbformat.v4.new_markdown_cell(drift.markdown(rows, baseline))
    cell.metadata["tags"] = ["runbook-drift"]
    nb.cells.insert(1, cell)
    nbformat.write(nb, str(path))
    return {"baseline": Path(baseline["dir"]).name, "regressed": drift.regressed(rows), "rows": rows}


def _read_notebook(path: Path) -> Any:
    import nbformat

    try:
        return nbformat.read(str(path), as_version=4)
    except (OSError, ValueError):
        return None


def _export_html(nb: Any, path: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    archive.write_text(path, body)


def _operator() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"user": user, "machine": socket.gethostname(), "python": platform.python_version()}
