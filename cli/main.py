"""`curate`: validate, run and submit studies; the other command groups live beside this file."""

import logging
import os
import sys
import threading
import time
from pathlib import Path

for _k, _v in {"HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
               # a new machine's first temporary Prefect server creates and migrates its database: ~30 s, over
               # Prefect's 20 s default
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
               # heartbeats every 30 s (Prefect's default is 180): the zombie-run automation waits 90 s for one
               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}.items():
    os.environ.setdefault(_k, _v)

import typer  # noqa: E402

from cli import output  # noqa: E402
from cli.catalog import catalog_app  # noqa: E402
from cli.convert import convert  # noqa: E402
from cli.review import failures, review_app  # noqa: E402
from cli.output import console, fail  # noqa: E402
from cli.hub import push, push_data  # noqa: E402
from cli.plan import confirm, plan  # noqa: E402
from cli.screen import screen  # noqa: E402
from cli.results import backtest, rank, status  # noqa: E402
from cli.team import deploy, pools_app, require_server, stack_app  # noqa: E402
from tasks.errors import WorkbenchError  # noqa: E402

app = typer.Typer(help="Which candidate dataset, mixed into your data, improves your fine-tuned model most?",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(catalog_app, name="catalog")
app.add_typer(stack_app, name="stack")
app.add_typer(pools_app, name="pools")
app.add_typer(review_app, name="review")
for _command in (deploy, rank, backtest, status, convert, failures, plan, push, screen):
    app.command()(_command)
app.command("push-data")(push_data)
VERBOSE = {"on": False}


def _version(value: bool) -> None:
    if value:
        from tasks.common import code_version

        console.print(f"curate {code_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Show every log line and library warning "
                                          "on the terminal (by default they go to <output>/curate.log)."),
             show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                               help="Print the version and the code's fingerprint, then exit.")):
    VERBOSE["on"], output.JSON["on"] = verbose, False  # --json is set by the commands that take it
    output.quiet_defaults(verbose)


def _check(study_path: Path, work_pool: str | None = None, concurrency: int | None = None, write: bool = False,
           placebos: int | None = None, smoke: bool = False):
    """Validate the study (and, when its arms go to a work pool, the server, pool, deployment and pool limit).
    write=True writes the normalized data and the validated inputs, which the flow then reads instead of
    validating again."""
    from tasks.schema.study import load_study

    given = {"concurrency": (concurrency, "--concurrency"), "work_pool": (work_pool or None, "--work-pool"),
             "noise.placebos": (placebos or None, "--placebos")}
    # the YAML first, with the options merged in and checked with it: a typo is answered before torch loads (~2 s)
    study = load_study(study_path, {k: v for k, v in given.items() if v[0] is not None}, smoke=smoke)
    from tasks.ops.workers import quiet_libraries
    from tasks.ops.validate import check_study

    quiet_libraries()
    inputs = check_study(study, write=write)
    if study.pool:
        from tasks.steps import arm_deployment

        arm_deployment.fn(study)
    return study, inputs


JSON_HELP = "Print one JSON document instead of text (errors too: {ok: false, error, problems})."


@app.command()
def validate(study_path: Path = typer.Argument(..., help="Study YAML file."),
             as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Check the study, its catalog entries, data and model; report every problem at once. Writes nothing."""
    output.JSON["on"] = as_json
    try:
        study, inputs = _check(study_path)
    except WorkbenchError as err:
        fail(err)
    n = sum(len(study.arm_points(a.name)) for a in inputs.arms)
    if as_json:
        output.emit({"ok": True, "study": study.name, "file": str(study_path), "task": study.task,
                     "sizes": study.mixture.sizes, "seeds": study.seeds, "points": n, "warnings": inputs.warnings,
                     "arms": [{"name": a.name, "rows": a.rows, "points": len(study.arm_points(a.name)),
                               "contamination": a.contamination} for a in inputs.arms]})
        return
    arms = ", ".join(f"{a.name} ({a.rows} rows)" for a in inputs.arms)
    console.print(f"[green]OK[/] {study_path}: task {study.task}, arms: {arms}; sizes {study.mixture.sizes} x "
                  f"{study.seeds} seed(s); {n} points")
    _print_contamination(study, inputs)


def _print_contamination(study, inputs) -> None:
    from tasks.common import CONTROL

    for warning in inputs.warnings:
        console.print(f"[yellow]warning[/] {warning}", highlight=False)
    mode = study.contamination.mode
    for arm in inputs.arms:
        c = arm.contamination
        if c.get("exact") or c.get("near"):
            what = "D0" if arm.name == CONTROL else f"candidate '{arm.name}'"
            console.print(f"contamination: {what}: {c['exact']} exact + {c['near']} near copies of benchmark items "
                          f"among {c['checked']} rows ({'removed' if mode == 'remove' else 'kept, flagged'})")


def _start_prefect() -> threading.Thread | None:
    """Start the temporary Prefect server (none when PREFECT_API_URL names one) in the background, so that it starts
    — and on a first run creates its database — while the plan is computed (10-30 s saved); say so on a first run."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    db = settings.home / "prefect.db"
    if not db.exists():
        console.print(f"first run on this machine: Prefect creates its database in {db} (about 30 s)")
    def start():
        try:
            SubprocessASGIServer().start()
        except Exception:  # noqa: BLE001 - the flow starts it again and reports what fails, as before
            logging.getLogger("curate").exception("the temporary Prefect server did not start in the background")

    starting = threading.Thread(target=start, name="prefect-server", daemon=True)
    starting.start()
    return starting


@app.command()
def run(study_path: Path = typer.Argument(..., help="Study YAML file."),
        concurrency: int = typer.Option(None, min=1, help="Points trained at once, shared by all arms (overrides the study)."),
        work_pool: str = typer.Option(None, help="Run the arms on this Prefect work pool (overrides the study and "
                                      "$CURATE_WORK_POOL; needs PREFECT_API_URL)."),
        smoke: bool = typer.Option(False, "--smoke", help="Prove the set-up in about a minute: sizes 8 and 16, 8 "
                                   "benchmark rows, 2 steps per point, into '<name>-smoke' (results mean nothing)."),
        yes: bool = typer.Option(False, "--yes", "-y", help="Start without asking (a terminal is asked after the plan).")):
    """Validate, show the plan, then train and evaluate every point not finished before, then rank. Shows progress
    per point."""
    _run(study_path, work_pool, concurrency, smoke=smoke, yes=yes)


@app.command()
def calibrate(study_path: Path = typer.Argument(..., help="Study YAML file."),
              placebos: int = typer.Option(5, min=1, max=20, help="Placebo arms (each its own draw of D0 rows)."),
              concurrency: int = typer.Option(None, min=1, help="Points trained at once, shared by all arms (overrides the study)."),
              yes: bool = typer.Option(False, "--yes", "-y", help="Start without asking.")):
    """A/A check: run the study with placebo arms (more rows of D0 as the 'candidate') and report how often the
    ranking wrongly calls a placebo better or worse than the control: its false-positive rate at the study's
    confidence. Points finished before (by `curate run`) are reused."""
    result = _run(study_path, None, concurrency, placebos, yes=yes)
    if not result.get("placebo"):
        fail(WorkbenchError("the ranking has no placebo check (ranking.intervals is off, or no placebo arm finished)"))


def _run(study_path: Path, work_pool: str | None, concurrency: int | None, placebos: int | None = None,
         smoke: bool = False, yes: bool = False) -> dict:
    try:
        study, inputs = _check(study_path, work_pool, concurrency, write=True, placebos=placebos, smoke=smoke)
    except WorkbenchError as err:
        fail(err)
    from tasks.backends.tracking import tracking_uri

    plan = {a.name: study.arm_points(a.name) for a in inputs.arms}
    per_arm = {arm: len(points) for arm, points in plan.items()}
    log = output.log_to_file(study.output_path / "curate.log", VERBOSE["on"])
    extra = sum(per_arm.values()) - len(inputs.arms) * len(study.mixture.sizes) * study.seeds
    console.print(f"[green]valid[/]: {len(inputs.arms)} arms x {len(study.mixture.sizes)} sizes x {study.seeds} "
                  f"seed(s){f' + {extra} control replicates (training noise)' if extra else ''} = "
                  f"{sum(per_arm.values())} points; {study.concurrency} "
                  f"{'arm(s) on the work pool' if study.pool else 'point(s)'} at once; log: {log}")
    _print_contamination(study, inputs)
    prefect = _start_prefect()
    confirm(study, yes, inputs)
    if prefect is not None:
        prefect.join()  # the flow's client finds it running (SubprocessASGIServer is one per process)
    from flows.curate import curate

    start = time.perf_counter()
    uri = tracking_uri(study.output_path)
    try:
        with output.StudyProgress(uri, study.name, plan, study.concurrency):
            result = curate(study)
    except WorkbenchError as err:  # validated before: a problem found while running is the study failing
        fail(err, output.NOTHING_OR_FAILED)
    except Exception as err:  # noqa: BLE001 - the study ran and failed: exit 1, the traceback is in the log
        logging.getLogger("curate").exception("the study failed")
        fail(WorkbenchError(f"the study failed: {type(err).__name__}: {err} (finished points are kept; the same "
                            f"command resumes; details: {log})"), output.NOTHING_OR_FAILED)
    minutes = (time.perf_counter() - start) / 60
    output.print_ranking(result, study.name)
    console.print(f"points trained: {result['points_trained']}, reused from earlier runs: {result['points_reused']}")
    if result.get("busy"):
        b = result["busy"]
        console.print(f"workers busy {b['share']:.0%} of the {output.clock(b['wall_s'])} the points ran "
                      f"({b['workers']} worker(s), {output.clock(b['busy_s'])} of work)", highlight=False)
    console.print(f"done in {minutes:.1f} min. Outputs: {result['out_dir']}\n"
                  f"MLflow UI : {_mlflow_ui(result['tracking_uri'])}\n"
                  f"            the arms ranked: {_ranking_url(result)}\n"
                  f"Re-rank   : curate rank {result['study_run_id']} --tracking-uri {result['tracking_uri']}")
    return result


def _ranking_url(result: dict) -> str:
    from tasks.backends import mlflowui, tracking

    return mlflowui.ranking_url(result["tracking_uri"], tracking.experiment_of(result["tracking_uri"], result["study_run_id"]))


def _mlflow_ui(uri: str) -> str:
    return uri if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"


@app.command()
def submit(study_path: Path = typer.Argument(..., help="Study YAML file."),
           deployment: str = typer.Option("curate/study", help="Deployment of the parent flow."),
           work_pool: str = typer.Option(None, help="Work pool for the arms (overrides the study's work_pool)."),
           yes: bool = typer.Option(False, "--yes", "-y", help="Submit without asking.")):
    """Validate and show the plan here, then start the study as a flow run of the `curate/study` deployment on the
    team server."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    require_server()
    try:
        study, _ = _check(study_path, work_pool)
    except WorkbenchError as err:
        fail(err)
    confirm(study, yes)  # submit validates without writing files: the plan reads the sources
    run = run_deployment(deployment, parameters={"study": study.model_dump(mode="json")}, timeout=0, as_subflow=False,
                         flow_run_name=study.name)
    ui = PREFECT_API_URL.value().removesuffix("/api")
    console.print(f"submitted flow run '{run.name}' ({run.id}) of {deployment}\n"
                  f"Prefect UI: {ui}/runs/flow-run/{run.id}\nProgress:   curate status {study_path}")


@app.command()
def tasks():
    """The registered task types: their row fields and metrics (primary first; the continuous one ranks reliably
    at small scale)."""
    from tasks import tasktypes

    rows = []
    for name in tasktypes.names():
        kind = tasktypes.get(name)
        others = [m for m in kind.metrics if m != kind.primary]
        rows.append({"task": name, "row fields": ", ".join(kind.fields), "metrics": ", ".join([kind.primary, *others]),
                     "continuous": kind.continuous, "lower is better": ", ".join(sorted(kind.lower_is_better))})
    console.print(output.table(rows, "task types (add one: tasks/tasktypes/, or $CURATE_TASK_TYPES)"))


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
