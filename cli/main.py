"""`curate`: run, validate and rank studies; list and validate the catalog."""

import os
import sys
import time
from pathlib import Path

for _k, _v in {"HF_HUB_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
               # heartbeats every 30 s (Prefect's default is 180): the zombie-run automation waits 90 s for one
               "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}.items():
    os.environ.setdefault(_k, _v)

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from tasks.errors import StudyInvalid, WorkbenchError  # noqa: E402

app = typer.Typer(help="Which candidate dataset, mixed into your data, improves your fine-tuned model most?",
                  no_args_is_help=True, pretty_exceptions_enable=False)
catalog_app = typer.Typer(help="List and validate catalog entries.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
from flows.team import deploy, pools_app, require_server, stack_app  # noqa: E402

app.add_typer(stack_app, name="stack")
app.add_typer(pools_app, name="pools")
app.command()(deploy)
console = Console(width=None if sys.stdout.isatty() else 200)  # logs and CI: don't fold the ranking table


def _fail(err: Exception) -> None:
    console.print("[bold red]error:[/]", end=" ")
    console.print(str(err), markup=False, highlight=False)  # messages hold regexes like [a-z0-9]
    raise typer.Exit(2)


def _table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("arm", "license", "method") else "right", no_wrap=col != "license",
                         max_width=24 if col == "license" else None)
    for r in rows:
        table.add_row(*r.values())
    return table


def _check(study_path: Path, work_pool: str | None = None, concurrency: int | None = None):
    """Validate the study (and, when its arms go to a work pool, the server, pool, deployment and pool limit)."""
    from tasks.inputs import check_study
    from tasks.study import load_study
    from tasks.workers import quiet_libraries

    quiet_libraries()
    study = load_study(study_path)
    inputs = check_study(study, write=False)
    if concurrency:
        study.concurrency = concurrency
    if work_pool:
        study.work_pool = work_pool
    if study.pool:
        from tasks.steps import arm_deployment

        arm_deployment.fn(study)
    return study, inputs


@app.command()
def validate(study_path: Path = typer.Argument(..., help="Study YAML file.")):
    """Check the study, its catalog entries, data and model; report every problem at once. No training."""
    try:
        study, inputs = _check(study_path)
    except WorkbenchError as err:
        _fail(err)
    arms = ", ".join(f"{a.name} ({a.rows} rows)" for a in inputs.arms)
    console.print(f"[green]OK[/] {study_path}: task {study.task}, arms: {arms}; sizes {study.mixture.sizes} x "
                  f"{study.seeds} seed(s); {len(inputs.arms) * len(study.mixture.sizes) * study.seeds} points")
    _print_contamination(study, inputs)


def _print_contamination(study, inputs) -> None:
    mode = study.contamination.mode
    for arm in inputs.arms:
        c = arm.contamination
        if c.get("exact") or c.get("near"):
            what = "D0" if arm.name == "control" else f"candidate '{arm.name}'"
            console.print(f"contamination: {what}: {c['exact']} exact + {c['near']} near copies of benchmark items "
                          f"among {c['checked']} rows ({'removed' if mode == 'remove' else 'kept, flagged'})")


@app.command()
def run(study_path: Path = typer.Argument(..., help="Study YAML file."),
        concurrency: int = typer.Option(None, help="Arms trained at once (overrides the study)."),
        work_pool: str = typer.Option(None, help="Run the arms on this Prefect work pool (overrides the study and "
                                      "$CURATE_WORK_POOL; needs PREFECT_API_URL).")):
    """Validate, then train and evaluate every point not finished before, then rank. Progress is logged per point."""
    try:
        study, inputs = _check(study_path, work_pool, concurrency)
    except WorkbenchError as err:
        _fail(err)
    n = len(inputs.arms) * len(study.mixture.sizes) * study.seeds
    console.print(f"[green]valid[/]: {len(inputs.arms)} arms x {len(study.mixture.sizes)} sizes x {study.seeds} "
                  f"seed(s) = {n} points")
    _print_contamination(study, inputs)
    from flows.curate import curate

    start = time.perf_counter()
    try:
        result = curate(study)
    except StudyInvalid as err:
        _fail(err)
    minutes = (time.perf_counter() - start) / 60
    _print_ranking(result, study.name)
    console.print(f"points trained: {result['points_trained']}, reused from earlier runs: {result['points_reused']}")
    console.print(f"done in {minutes:.1f} min. Outputs: {result['out_dir']}\n"
                  f"MLflow UI : {_mlflow_ui(result['tracking_uri'])}\n"
                  f"Re-rank   : curate rank {result['study_run_id']} --tracking-uri {result['tracking_uri']}")


def _mlflow_ui(uri: str) -> str:
    return uri if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"


@app.command()
def rank(study_run_id: str = typer.Argument(..., help="MLflow run id of a study run."),
         tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                          help="MLflow store, e.g. sqlite:///runs/NAME/mlflow.db (default: $MLFLOW_TRACKING_URI)."),
         metric: str = typer.Option(None, help="Rank on this metric instead of the study's primary metric."),
         out: Path = typer.Option(None, help="Folder for ranking.csv/.md and scaling.png (default ./ranking-RUNID).")):
    """Fit and rank a finished study from MLflow alone."""
    from mlflow.exceptions import MlflowException

    from tasks.report import rank_from_mlflow

    if not tracking_uri:
        _fail(WorkbenchError("no MLflow store given: pass --tracking-uri or set MLFLOW_TRACKING_URI"))
    try:
        result = rank_from_mlflow(tracking_uri, study_run_id, out or Path(f"ranking-{study_run_id[:8]}"), metric)
    except (MlflowException, ValueError, KeyError, WorkbenchError) as err:
        _fail(WorkbenchError(f"cannot rank run {study_run_id} in {tracking_uri}: {err}"))
    _print_ranking(result, "")
    console.print(f"written to {result['out_dir']} and logged on the study run")


@app.command()
def backtest(study_run_id: str = typer.Argument(..., help="MLflow run id of a finished study run."),
             tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                              help="MLflow store (default: $MLFLOW_TRACKING_URI)."),
             metric: str = typer.Option(None, help="Back-test this metric instead of the study's primary metric.")):
    """Hold out the largest size, predict it from the smaller ones, and compare with ranking at one size."""
    from mlflow.exceptions import MlflowException

    from tasks.report import backtest_from_mlflow

    if not tracking_uri:
        _fail(WorkbenchError("no MLflow store given: pass --tracking-uri or set MLFLOW_TRACKING_URI"))
    try:
        result = backtest_from_mlflow(tracking_uri, study_run_id, metric)
    except (MlflowException, ValueError, KeyError, WorkbenchError) as err:
        _fail(WorkbenchError(f"cannot back-test run {study_run_id} in {tracking_uri}: {err}"))
    title = f"back-test on {result['metric']}: fit on {result['fitted_on']}, predict {result['held_out']}"
    console.print(_table([{k: v if k == "method" else f"{v:.3f}" for k, v in r.items()} for r in result["rows"]], title))
    console.print(_table([{"arm": a, "observed": f"{v['truth']:.4f}", "fit": f"{v['fit']:.4f}",
                           "baseline": f"{v['baseline']:.4f}"} for a, v in result["arms"].items()], "per arm"))
    verdict = "beats" if result["winner"] == "fit" else "does not beat"
    console.print(f"The extrapolation {verdict} the single-scale baseline; the ranking uses '{result['winner']}'. "
                  "Logged on the study run (backtest_* metrics, backtest.md).")


TERMINAL_HIDDEN = ("license", "duplicates", "tokens_p50", "method")  # in ranking.csv/.md; too wide for a terminal


def _print_ranking(result: dict, name: str) -> None:
    title = f"{name + ': ' if name else ''}{result['metric']} at size {result['target_size']} (all columns: ranking.md)"
    short = {"delta_vs_control": "delta", "contaminated": "contam.", "removed": "rm"}
    rows = [{short.get(k, k).replace(result["metric"] + "@", "@").replace(" interval", " int."): v
             for k, v in r.items() if k not in TERMINAL_HIDDEN} for r in result["rows"]]
    console.print(_table(rows, title))
    console.print(result["method_note"], markup=False, highlight=False)
    if result["agreement"]:
        console.print(result["agreement"], markup=False, highlight=False)


@app.command()
def submit(study_path: Path = typer.Argument(..., help="Study YAML file."),
           deployment: str = typer.Option("curate/study", help="Deployment of the parent flow."),
           work_pool: str = typer.Option(None, help="Work pool for the arms (overrides the study's work_pool).")):
    """Validate here, then start the study as a flow run of the `curate/study` deployment on the team server."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    require_server()
    try:
        study, _ = _check(study_path, work_pool)
    except WorkbenchError as err:
        _fail(err)
    run = run_deployment(deployment, parameters={"study": study.model_dump(mode="json")}, timeout=0, as_subflow=False,
                         flow_run_name=study.name)
    ui = PREFECT_API_URL.value().removesuffix("/api")
    console.print(f"submitted flow run '{run.name}' ({run.id}) of {deployment}\n"
                  f"Prefect UI: {ui}/runs/flow-run/{run.id}\nProgress:   curate status {study_path}")


@app.command()
def status(study: str = typer.Argument(None, help="Study YAML file or study name (default: every study in the store)."),
           tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: "
                                            "$MLFLOW_TRACKING_URI, or the study file's own store)."),
           run_id: str = typer.Option(None, "--run", help="A particular study run (default: the latest)."),
           points: bool = typer.Option(True, help="Show every point, not only the arms.")):
    """Each arm and point of a study as queued / running / completed / failed, with durations (MLflow + Prefect)."""
    from tasks import tracking
    from tasks.status import study_status

    name = study
    if study and Path(study).is_file():
        from tasks.study import load_study

        try:
            spec = load_study(study)
        except WorkbenchError as err:
            _fail(err)
        name, tracking_uri = spec.name, tracking_uri or tracking.tracking_uri(spec.output_path)
    if not tracking_uri:
        _fail(WorkbenchError("no MLflow store given: pass a study file, --tracking-uri, or set MLFLOW_TRACKING_URI"))
    names = [name] if name else sorted(e.name for e in tracking.MlflowClient(tracking_uri).search_experiments()
                                        if e.name != "Default")
    for n in names:
        info = study_status(tracking_uri, n, run_id)
        if not info:
            console.print(f"{n}: no study run in {tracking_uri}")
            continue
        extra = (f", {int(info['trained'])} points trained, {int(info['reused'])} reused"
                 if info["trained"] is not None else "")
        console.print(f"[bold]{n}[/]: study run {info['run_id']} {info['state']} ({fmt(info['seconds'], 'seconds')} s{extra})")
        console.print(_table([{k: fmt(v, k) for k, v in a.items()} for a in info["arms"]], "arms"))
        if points:
            metric = info["primary_metric"] or "metric"
            console.print(_table([{**{k: fmt(v, k) for k, v in p.items() if k != "metric"}, metric: fmt(p["metric"])}
                                  for p in info["points"]], "points"))


def fmt(v, key: str = "") -> str:
    """A status cell: seconds with one decimal, metrics with four."""
    if v is None:
        return ""
    return f"{v:.1f}" if key == "seconds" else f"{v:.4f}" if isinstance(v, float) else str(v)


@catalog_app.command("publish")
def catalog_publish(directory: Path = typer.Option(Path("catalog"), "--dir", help="Catalog folder."),
                    everything: bool = typer.Option(False, "--all", help="Announce every entry, changed or not.")):
    """Validate the catalog, find entries new or changed since the last publish, and emit `catalog.changed`
    (the `reevaluate` deployment's trigger) naming them."""
    from tasks.catalog import publish

    try:
        result = publish(directory, everything)
    except WorkbenchError as err:
        _fail(err)
    if not result["changed"]:
        console.print(f"nothing changed in {directory} since the last publish; no event emitted (use --all to force)")
        return
    console.print(f"emitted catalog.changed for {', '.join(result['changed'])} (event {result['event_id']}); "
                  f"state saved in {result['state_file']}")


@catalog_app.command("list")
def catalog_list(directory: Path = typer.Option(Path("catalog"), "--dir", help="Catalog folder.")):
    """Show every catalog entry with its task, license and size."""
    from tasks.catalog import load_catalog

    try:
        entries = load_catalog(directory)
    except WorkbenchError as err:
        _fail(err)
    table = Table(title=f"catalog: {directory}")
    for col in ("name", "version", "task", "license", "source", "rows (hint)", "description"):
        table.add_column(col)
    for e in entries.values():
        table.add_row(e.name, str(e.version), e.task, e.license, f"{e.path or e.hub_id} [{e.split}]",
                      str(e.size_hint or ""), e.description)
    console.print(table)


@catalog_app.command("validate")
def catalog_validate(directory: Path = typer.Option(Path("catalog"), "--dir", help="Catalog folder."),
                     data: bool = typer.Option(False, help="Also load each entry's data and check its columns.")):
    """Check every catalog file against the schema (and optionally its data); all problems at once."""
    from tasks.catalog import load_catalog
    from tasks.data import DataError, load_split, normalize

    try:
        entries = load_catalog(directory)
        problems = []
        for e in entries.values() if data else []:
            try:
                normalize(load_split(e.data_ref()), e.task, e.data_ref(), f"catalog entry '{e.name}'")
            except DataError as err:
                problems.append(str(err))
        if problems:
            raise StudyInvalid(problems, f"catalog {directory}")
    except WorkbenchError as err:
        _fail(err)
    console.print(f"[green]OK[/] {len(entries)} catalog entries in {directory}")


def main() -> None:  # pragma: no cover
    sys.exit(app())
