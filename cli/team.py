"""`curate stack|pools|deploy`: the team server (Prefect + MLflow on PostgreSQL), work pools and deployments."""

import os
import sys
import subprocess
from pathlib import Path

import typer

from cli.output import console, fail as _fail
from tasks.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
stack_app = typer.Typer(help="Start and stop the team stack: Prefect server + MLflow server on PostgreSQL.",
                        no_args_is_help=True)
pools_app = typer.Typer(help="Create the work pools: a control pool for parent flows, a pool for the arms.",
                        no_args_is_help=True)


def require_server() -> None:
    """Commands that talk to the team server stop here, with the way to get one, when none is configured."""
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        _fail(WorkbenchError("PREFECT_API_URL is not set; start the stack (`curate stack up`) and source its stack.env"))


@stack_app.command("up")
def stack_up(folder: Path = typer.Option(Path(".curate-stack"), "--dir", help="Logs, pid files, stack.env, artifacts."),
             postgres: str = typer.Option("postgresql://postgres@127.0.0.1:5432", help="PostgreSQL server (no database)."),
             prefix: str = typer.Option("curate", help="Databases <prefix>_prefect and <prefix>_mlflow."),
             host: str = typer.Option("127.0.0.1", help="Interface the servers listen on (0.0.0.0 for a team)."),
             prefect_port: int = typer.Option(4200), mlflow_port: int = typer.Option(5000),
             artifacts: str = typer.Option(None, help="Artifact store: a shared folder or s3://bucket/prefix "
                                           "(default: DIR/artifacts).")):
    """Start PostgreSQL (when local and stopped), the MLflow server and the Prefect server; idempotent."""
    from tasks.ops.stack import StackConfig, up

    cfg = StackConfig(folder=folder, postgres=postgres, prefix=prefix, host=host, prefect_port=prefect_port,
                      mlflow_port=mlflow_port, artifacts=artifacts)
    try:
        info = up(cfg, log=console.print)
    except WorkbenchError as err:
        _fail(err)
    console.print(f"[green]up[/]  Prefect UI  {info['prefect_ui']}   (database {info['prefect_db']})\n"
                  f"    MLflow UI   {info['MLFLOW_TRACKING_URI']}   (database {info['mlflow_db']}, artifacts "
                  f"{info['artifacts']})\n"
                  f"Use it from this shell:  source {info['env_file']}")


@stack_app.command("down")
def stack_down(folder: Path = typer.Option(Path(".curate-stack"), "--dir")):
    """Stop the servers `stack up` started from DIR (the databases and artifacts stay)."""
    from tasks.ops.stack import down

    stopped = down(folder)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@pools_app.command("create")
def pools_create(arm_pool: str = typer.Option("curate-gpu", help="Pool for the arm flow runs."),
                 kind: str = typer.Option("process", "--type", help="process | docker | kubernetes "
                                          "(base job templates in infra/pools/)."),
                 gpus: int = typer.Option(None, help="Concurrency limit of the arm pool: the number of GPUs "
                                          "(process pools: arms at once on this machine)."),
                 control_pool: str = typer.Option("curate-control", help="Process pool for parent flows.")):
    """Create or update both pools on $PREFECT_API_URL."""
    from tasks.ops.stack import StackError, create_pool

    require_server()
    try:
        for pool in (create_pool(control_pool, "process", None), create_pool(arm_pool, kind, gpus)):
            console.print(f"{pool['action']} work pool '{pool['pool']}' (type {pool['type']}, concurrency limit "
                          f"{pool['concurrency_limit'] or 'none'})")
    except StackError as err:
        _fail(err)
    console.print(f"Start workers:  prefect worker start --pool {control_pool}\n"
                  f"                prefect worker start --pool {arm_pool}   (one per machine with GPUs)")


def deploy(arm_pool: str = typer.Option("curate-gpu", help="Work pool of the arm deployment."),
           control_pool: str = typer.Option("curate-control", help="Work pool of the `curate` and `reevaluate` deployments."),
           studies: str = typer.Option("deployments/studies", help="Study files/folders `reevaluate` watches (comma-separated)."),
           project_dir: str = typer.Option(str(ROOT), help="Where workers find this project (/opt/curate in the image)."),
           example: Path = typer.Option(ROOT / "deployments/studies/sst2-demo.yaml", exists=True, dir_okay=False,
                                        help="Study the curate/study run form opens with (every field filled, defaults "
                                             "included); edit it in the UI and submit.")):
    """Register deployments/prefect.yaml on $PREFECT_API_URL: curate/study, evaluate-arm/arm, reevaluate/on-catalog-change."""
    from tasks.ops.stack import prefill_form
    from tasks.schema.study import load_study

    require_server()
    try:
        form = {"study": load_study(example).model_dump(mode="json")}  # a bad example fails before anything deploys
    except WorkbenchError as err:
        _fail(err)
    env = {**os.environ, "CURATE_ARM_POOL": arm_pool, "CURATE_CONTROL_POOL": control_pool, "CURATE_STUDIES": studies,
           "CURATE_PROJECT_DIR": project_dir}
    prefect = str(Path(sys.executable).with_name("prefect"))
    done = subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        _fail(WorkbenchError(f"prefect deploy failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"))
    prefill_form("curate/study", form)
    console.print(f"deployed curate/study and reevaluate/on-catalog-change on '{control_pool}', evaluate-arm/arm on "
                  f"'{arm_pool}'; the trigger listens for catalog.changed, the nightly schedule is off\n"
                  f"the curate/study run form opens with {example}")
