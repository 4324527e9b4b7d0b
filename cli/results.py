"""`curate rank|backtest|status`: read a study from MLflow — fit and rank it, back-test the extrapolation, or show
where each arm and point stands."""

from pathlib import Path

import typer

from cli import output
from cli.output import console, fail, fmt, print_ranking, table
from tasks.errors import WorkbenchError

STORE_HELP = "MLflow store, e.g. sqlite:///runs/NAME/mlflow.db (default: $MLFLOW_TRACKING_URI)."
JSON_HELP = "Print one JSON document instead of text."


def _missing_file(tracking_uri: str) -> str | None:
    """The path of a SQLite store that does not exist (read-only verbs never create one), else None."""
    path = tracking_uri.removeprefix("sqlite:///")
    return path if tracking_uri.startswith("sqlite:///") and not Path(path).is_file() else None


def store_uri(tracking_uri: str | None) -> str:
    """The store a read-only verb reads; a SQLite file that does not exist is an error, never created."""
    if not tracking_uri:
        fail(WorkbenchError("no MLflow store given: pass --tracking-uri or set MLFLOW_TRACKING_URI"))
    if _missing_file(tracking_uri):
        fail(WorkbenchError(f"no MLflow store at {_missing_file(tracking_uri)} (nothing ran there yet)"))
    return tracking_uri


def rank(study_run_id: str = typer.Argument(..., help="MLflow run id of a study run."),
         tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help=STORE_HELP),
         metric: str = typer.Option(None, help="Rank on this metric instead of the study's primary metric."),
         out: Path = typer.Option(None, help="Folder for ranking.csv/.md and scaling.png (default ./ranking-RUNID)."),
         as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Fit and rank a finished study from MLflow alone."""
    from tasks.backends.report import rank_from_mlflow
    from tasks.backends.tracking import StoreError

    output.JSON["on"] = as_json
    uri = store_uri(tracking_uri)
    try:
        result = rank_from_mlflow(uri, study_run_id, out or Path(f"ranking-{study_run_id[:8]}"), metric)
    except (StoreError, ValueError, KeyError, WorkbenchError) as err:
        fail(WorkbenchError(f"cannot rank run {study_run_id} in {uri}: {err}"))
    if as_json:
        keys = ("metric", "ranked_at", "method_note", "noise_line", "agreement", "placebo", "out_dir", "rows")
        output.emit({"ok": True, "study_run_id": study_run_id, **{k: result.get(k) for k in keys}})
        return
    print_ranking(result, "")
    console.print(f"written to {result['out_dir']} and logged on the study run")


def backtest(study_run_id: str = typer.Argument(..., help="MLflow run id of a finished study run."),
             tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help=STORE_HELP),
             metric: str = typer.Option(None, help="Back-test this metric instead of the study's primary metric.")):
    """Hold out the largest size, predict it from the smaller ones, and compare with ranking at one size."""
    from tasks.backends.report import backtest_from_mlflow
    from tasks.backends.tracking import StoreError

    uri = store_uri(tracking_uri)
    try:
        result = backtest_from_mlflow(uri, study_run_id, metric)
    except (StoreError, ValueError, KeyError, WorkbenchError) as err:
        fail(WorkbenchError(f"cannot back-test run {study_run_id} in {uri}: {err}"))
    title = f"back-test on {result['metric']}: fit on {result['fitted_on']}, predict {result['held_out']}"
    console.print(table([{k: v if k == "method" else f"{v:.3f}" for k, v in r.items()} for r in result["rows"]], title))
    console.print(table([{"arm": a, "observed": f"{v['truth']:.4f}", "fit": f"{v['fit']:.4f}",
                          "baseline": f"{v['baseline']:.4f}"} for a, v in result["arms"].items()], "per arm"))
    said = {"fit": "The extrapolation beats the single-scale baseline",
            "observed": "The extrapolation does not beat the single-scale baseline",
            "inconclusive": "The back-test is inconclusive"}[result["winner"]]
    uses = "fit" if result["winner"] == "fit" else "observed"
    console.print(f"{said} ({result['reason']}); the ranking uses '{uses}'. Logged on the study run (backtest_* metrics, backtest.md).")


def status(study: str = typer.Argument(None, help="Study YAML file or study name (default: every study in the store)."),
           tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: "
                                            "$MLFLOW_TRACKING_URI, or the study file's own store)."),
           run_id: str = typer.Option(None, "--run", help="A particular study run (default: the latest)."),
           points: bool = typer.Option(True, help="Show every point, not only the arms."),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Each arm and point of a study as queued / running / completed / failed, with durations (MLflow + Prefect).
    Exit code 1 when the store holds no run of the study."""
    from tasks.backends import tracking
    from tasks.ops.status import study_status

    output.JSON["on"] = as_json
    name = study
    if study and study.endswith((".yaml", ".yml")) and not Path(study).is_file():
        fail(WorkbenchError(f"{study}: no such file (a study file, or a study name in the store)"))
    if study and Path(study).is_file():
        from tasks.schema.study import load_study

        try:
            spec = load_study(study)
        except WorkbenchError as err:
            fail(err)
        name, tracking_uri = spec.name, tracking_uri or tracking.tracking_uri(spec.output_path)
    if not tracking_uri:
        fail(WorkbenchError("no MLflow store given: pass a study file, --tracking-uri, or set MLFLOW_TRACKING_URI"))
    if _missing_file(tracking_uri):
        fail(WorkbenchError(f"{name or 'no study'}: no study run yet (no store at {_missing_file(tracking_uri)})"),
             output.NOTHING_OR_FAILED)
    found = {n: study_status(tracking_uri, n, run_id) for n in ([name] if name else tracking.experiment_names(tracking_uri))}
    if as_json:
        output.emit({"ok": any(found.values()), "tracking_uri": tracking_uri,
                     "studies": [{"study": n, **info} for n, info in found.items() if info],
                     "not_run": [n for n, info in found.items() if not info]})
        raise typer.Exit(0 if any(found.values()) else output.NOTHING_OR_FAILED)
    for n, info in found.items():
        if not info:
            console.print(f"{n}: no study run in {tracking_uri}")
            continue
        extra = (f", {int(info['trained'])} points trained, {int(info['reused'])} reused"
                 if info["trained"] is not None else "")
        console.print(f"[bold]{n}[/]: study run {info['run_id']} {info['state']} ({fmt(info['seconds'], 'seconds')} s{extra})")
        console.print(table([{k: fmt(v, k) for k, v in a.items()} for a in info["arms"]], "arms"))
        if points:
            metric = info["primary_metric"] or "metric"
            console.print(table([{**{k: fmt(v, k) for k, v in p.items() if k != "metric"}, metric: fmt(p["metric"])}
                                 for p in info["points"]], "points"))
    if not any(found.values()):
        raise typer.Exit(output.NOTHING_OR_FAILED)
