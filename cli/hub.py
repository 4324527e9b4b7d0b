"""`curate push` and `curate push-data`: results and D0 to the Hugging Face Hub (tasks.ops.hubpush)."""

from pathlib import Path

import typer

from cli.output import console, fail
from cli.results import STORE_HELP
from tasks.errors import WorkbenchError


def push(study: str = typer.Argument(..., help="A study YAML file (its latest run) or the MLflow run id of a study run."),
         repo: str = typer.Option(..., help="Private dataset repository for the results, e.g. my-org/curation-results."),
         adapters_repo: str = typer.Option(None, help="Also push each arm's adapter (largest size) to this private "
                                           "model repository."),
         tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help=STORE_HELP)):
    """Commit a study's ranking, scaling plot, fits, per-point metrics and a dataset card to a private Hub dataset
    repository (one commit per push). The token is read from $HF_TOKEN only."""
    from cli.review import study_run
    from tasks.ops.hubpush import push as do_push

    uri, run_id = study_run(study, tracking_uri)
    try:
        out = do_push(uri, run_id, repo, adapters_repo)
    except WorkbenchError as err:
        fail(err)
    console.print(f"pushed study run {run_id} to dataset {out['repo']}: commit {out['commit'][:12]} "
                  f"({', '.join(out['files'])})", highlight=False)
    if "adapters" in out:
        a = out["adapters"]
        console.print(f"adapters of {', '.join(a['arms'])} to model {a['repo']}: commit {a['commit'][:12]}", highlight=False)


def push_data(study: Path = typer.Argument(..., help="Study YAML file whose base.source is a local file."),
              repo: str = typer.Option(..., help="Private dataset repository for D0, e.g. my-org/my-d0.")):
    """Upload a study's local D0 to a private Hub dataset repository, for clusters whose workers read the Hub; prints
    the base: block to put in the study. The token is read from $HF_TOKEN only."""
    from tasks.ops.hubpush import push_data as do_push
    from tasks.schema.study import load_study

    try:
        spec = load_study(study)
        out = do_push(Path(spec.base.source), repo)
    except WorkbenchError as err:
        fail(err)
    console.print(f"uploaded {spec.base.source} to dataset {repo} (commit {out['commit'][:12]}); in the study use:\n"
                  f"base:\n  source: {out['source']}\n  split: {out['split']}", highlight=False)
