"""The example Airflow DAG: valid, builds the expected task; run for real when Airflow is at hand.

Airflow itself is not a project dependency (788 MB, its own pins). CI checks the DAG's
structure; set RUNBOOK_AIRFLOW_VENV to a venv with apache-airflow and its papermill
provider to also run `airflow dags test` against the sshd test hosts.
"""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
DAG = ROOT / "examples" / "airflow" / "runbook_dag.py"


def test_dag_file_is_valid_python_with_a_papermill_task_per_site_and_read_only_phases():
    tree = ast.parse(DAG.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "PapermillOperator"]
    assert len(calls) == 1
    assert "exist_ok=False" in DAG.read_text()  # a run directory is never reused
    kwargs = {k.arg for k in calls[0].keywords}
    assert {"task_id", "input_nb", "output_nb", "parameters", "kernel_name"} <= kwargs
    phases = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "PHASES")
    assert ast.literal_eval(phases.value) == ["00_preflight"]  # never the applying configure phase


@pytest.mark.sshd
@pytest.mark.skipif(not os.environ.get("RUNBOOK_AIRFLOW_VENV"), reason="set RUNBOOK_AIRFLOW_VENV to run Airflow for real")
def test_airflow_dags_test_runs_the_preflight_into_the_archive_layout(sshd_site, tmp_path):
    venv = Path(os.environ["RUNBOOK_AIRFLOW_VENV"])
    # a kernel that runs this project's venv, so the Airflow side needs no runbook_lib
    kernels = tmp_path / "jupyter"
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "ipykernel", "install", "--prefix", str(kernels),
                    "--name", "runbook"], check=True, capture_output=True)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__DAGS_FOLDER": str(DAG.parent), "JUPYTER_PATH": str(kernels / "share" / "jupyter"),
           "RUNBOOK_HOME": str(ROOT), "RUNBOOK_PARAMS": str(sshd_site.params_file),
           "RUNBOOK_ARCHIVE": str(tmp_path / "runs"), "RUNBOOK_KERNEL": "runbook"}
    subprocess.run([str(venv / "bin" / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.run([str(venv / "bin" / "airflow"), "dags", "test", "runbook_preflight", "2026-11-26"],
                          env=env, capture_output=True, text=True, timeout=600)
    out = list((tmp_path / "runs").glob("*_00_preflight_testsite/notebook.ipynb"))
    assert out, proc.stdout[-3000:] + proc.stderr[-3000:]
    nb = nbformat.read(out[0], as_version=4)
    from runbook_lib.report import read_summary

    assert read_summary(nb)["site"] == "testsite"
