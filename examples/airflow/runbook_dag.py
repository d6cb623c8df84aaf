"""Apache Airflow DAG: the runbook's preflight on a schedule, for fleets past one machine's timers.

The same notebooks, the same parameters (the site's params file) and the same archive layout
as ``runbook run``: each task runs a phase notebook with Airflow's papermill operator and
writes ``<archive>/<UTC timestamp>_<phase>_<site>/notebook.ipynb``. Like ``runbook schedule``,
it never applies changes: the configure phase is not scheduled here.

Settings (environment of the Airflow workers):
    RUNBOOK_HOME      this repository (notebooks/ and params/), default /opt/runbook
    RUNBOOK_PARAMS    comma-separated site params files, default $RUNBOOK_HOME/params/example.yaml
    RUNBOOK_ARCHIVE   archive root, default $RUNBOOK_HOME/runs
    RUNBOOK_KERNEL    Jupyter kernel with runbook_lib installed, default python3
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow import DAG
from airflow.operators.python import PythonOperator
from airflow.providers.papermill.operators.papermill import PapermillOperator

HOME = Path(os.environ.get("RUNBOOK_HOME", "/opt/runbook"))
PARAMS = [Path(p) for p in os.environ.get("RUNBOOK_PARAMS", str(HOME / "params" / "example.yaml")).split(",") if p]
ARCHIVE = Path(os.environ.get("RUNBOOK_ARCHIVE", str(HOME / "runs")))
KERNEL = os.environ.get("RUNBOOK_KERNEL", "python3")
PHASES = ["00_preflight"]  # read-only phases only: scheduled runs never apply changes


def site_parameters(path: Path) -> dict:
    """The site keys of a params file, as notebook parameters (the runner validates the same file)."""
    data = yaml.safe_load(path.read_text())
    data.pop("allow_scheduled_apply", None)  # runner-side, not a notebook parameter
    return data


with DAG(
    dag_id="runbook_preflight",
    description="Live-migration readiness: the runbook's preflight notebook for every site",
    schedule=timedelta(hours=1),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["runbook", "openstack", "live-migration"],
) as dag:
    for params_file in PARAMS:
        site = site_parameters(params_file)
        for phase in PHASES:
            # the runner's layout: <UTC timestamp>_<phase>_<site>/notebook.ipynb
            run_dir = str(ARCHIVE) + "/{{ ts_nodash }}Z_" + f"{phase}_{site['site']}"
            prepare = PythonOperator(
                task_id=f"archive_dir_{phase}_{site['site']}",
                python_callable=lambda path: Path(path).mkdir(parents=True, exist_ok=False),
                op_kwargs={"path": run_dir},  # exist_ok=False: runs are never overwritten
            )
            run = PapermillOperator(
                task_id=f"{phase}_{site['site']}",
                input_nb=str(HOME / "notebooks" / f"{phase}.ipynb"),
                output_nb=run_dir + "/notebook.ipynb",
                parameters=site,
                kernel_name=KERNEL,
            )
            prepare >> run
