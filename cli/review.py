"""`curate failures RUN_ID`: mine a finished study's benchmark failures into sft_candidates.jsonl and the review
store; `curate review import|list|summary`: the review store (tasks.backends.reviewstore)."""

import getpass
from pathlib import Path

import typer

from cli.output import console, fail, table
from cli.results import STORE_HELP, store_uri
from tasks.errors import WorkbenchError

review_app = typer.Typer(help="The failure-review store: import harness files, list and summarize records.",
                         no_args_is_help=True)
DB_HELP = "Review database (SQLAlchemy URL; default $CURATE_REVIEW_DB, else sqlite:///runs/review.db)."


def _open(db: str | None):
    from tasks.backends.reviewstore import ReviewStore

    return ReviewStore(db)


def study_run(study: str, tracking_uri: str | None) -> tuple[str, str]:
    """(store, study run id) from a study YAML file (its latest study run, in its own store unless one is given)
    or a run id (with --tracking-uri or $MLFLOW_TRACKING_URI)."""
    from tasks.backends import tracking

    if not study.endswith((".yaml", ".yml")):
        return store_uri(tracking_uri), study
    from tasks.schema.study import load_study

    try:
        spec = load_study(study)
    except WorkbenchError as err:
        fail(err)
    uri = store_uri(tracking_uri or tracking.tracking_uri(spec.output_path))
    latest = tracking.latest_study_run(uri, spec.name)
    if latest is None:
        fail(WorkbenchError(f"study '{spec.name}' has no study run in {uri}: run it first (curate run {study})"))
    return uri, latest.info.run_id


def failures(study: str = typer.Argument(..., help="A study YAML file (its latest run) or the MLflow run id of a "
                                         "finished study run."),
             tracking_uri: str = typer.Option(None, envvar="MLFLOW_TRACKING_URI", help=STORE_HELP),
             arm: str = typer.Option(None, help="Arm to mine (default: the ranking's best arm, else the control)."),
             size: int = typer.Option(None, help="Mixture size of the point (default: the largest measured)."),
             seed: int = typer.Option(None, help="Seed of the point (default: its first)."),
             below: float = typer.Option(0.5, min=0, max=1, help="Keep examples whose quality score (0-1: gold-label "
                                         "probability, F1, pass rate, ...) is below this."),
             out: Path = typer.Option(None, help="Where to write sft_candidates.jsonl (default "
                                      "./failures-RUNID/sft_candidates.jsonl)."),
             db: str = typer.Option(None, help=DB_HELP),
             store: bool = typer.Option(True, "--store/--no-store", help="Also add them to the review store.")):
    """Mine a finished study's benchmark failures for review: one sft_candidates.jsonl record per failed or
    low-scoring example of the chosen point, with what went wrong in words."""
    from tasks.ops import failures as mining

    uri, study_run_id = study_run(study, tracking_uri)
    try:
        records, scored = mining.mine(uri, study_run_id, arm, below, size, seed)
    except WorkbenchError as err:
        fail(err)
    path = out or Path(f"failures-{study_run_id[:8]}") / mining.FILE
    mining.write(records, path)
    console.print(f"study run {study_run_id} in {uri}")
    console.print(f"{len(records)} of {scored} benchmark examples scored below {below:g}: wrote {path}")
    if store and records:
        added, skipped = _open(db).add(records, getpass.getuser())
        console.print(f"review store: {added} added, {skipped} already there (same id)")


@review_app.command("import")
def import_(path: Path = typer.Argument(..., help="A sft_candidates.jsonl file, or a folder holding some."),
            db: str = typer.Option(None, help=DB_HELP)):
    """Import records written by another harness: every line validated first (file:line, field); ids already in
    the store are skipped."""
    from tasks.ops import failures as mining

    try:
        records = mining.read(path)
    except WorkbenchError as err:
        fail(err)
    added, skipped = _open(db).add(records, getpass.getuser())
    console.print(f"{path}: {len(records)} records read, {added} added, {skipped} skipped (id already present)")


@review_app.command("summary")
def summary(db: str = typer.Option(None, help=DB_HELP)):
    """Per benchmark run: how many candidates it produced, by status."""
    rows = _open(db).summary()
    if not rows:
        fail(WorkbenchError("the review store is empty: `curate failures RUN_ID` or `curate review import FILE`"))
    console.print(table([{k: str(v) for k, v in r.items()} for r in rows], "review store"))


@review_app.command("serve")
def serve(host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs a token."),
          port: int = typer.Option(8765, help="Port."),
          token: str = typer.Option(None, envvar="CURATE_REVIEW_TOKEN", help="Required on every request when bound "
                                    "beyond loopback (default: a new random one, printed). Per reviewer: "
                                    "'ana=TOKEN1,ben=TOKEN2' binds each name to its token."),
          allow_host: list[str] = typer.Option(None, help="Host names the page answers as when bound beyond "
                                               "loopback (default: any; the token guards it)."),
          db: str = typer.Option(None, help=DB_HELP)):
    """The review page: a queue of failure cards to correct, discard or flag, with filters and a per-run summary."""
    import secrets

    import uvicorn

    from tasks.ops.reviewpage import LOOPBACK, create_app

    loopback = host in LOOPBACK
    if not loopback and not token:
        token = secrets.token_urlsafe(18)
    guard: str | dict[str, str] | None = token
    if token and "=" in token:
        pairs = [p.split("=", 1) for p in token.split(",") if p.strip()]
        if any(len(p) != 2 or not p[0].strip() or len(p[1].strip()) < 12 for p in pairs):
            fail(WorkbenchError("--token: write NAME=TOKEN pairs separated by commas, each token 12 characters or more"))
        guard = {t.strip(): n.strip() for n, t in pairs}
    store = _open(db)
    hosts = LOOPBACK if loopback else (tuple(h.lower() for h in allow_host) if allow_host else None)
    shown = f"?token={token}" if token and not isinstance(guard, dict) else ""
    console.print(f"review page: http://{host}:{port}/{shown}  (store: {store.url}; Ctrl-C stops it)"
                  + ("; each reviewer opens it with their own ?token=" if isinstance(guard, dict) else ""))
    uvicorn.run(create_app(store, guard, getpass.getuser(), hosts), host=host, port=port, log_level="warning")


@review_app.command("export")
def export(out: Path = typer.Argument(..., help="JSONL file to write: one {messages: [system, user, assistant]} per "
                                     "approved correction."),
           name: str = typer.Option(..., help="Catalog entry name for the new candidate."),
           catalog_dir: Path = typer.Option(Path("catalog"), help="Where the catalog entry YAML is written."),
           license_: str = typer.Option(..., "--license", help="License of the corrected data (usually the "
                                        "benchmark's, e.g. MIT, CC-BY-4.0)."),
           run: str = typer.Option(None, help="Only records mined from this benchmark run."),
           db: str = typer.Option(None, help=DB_HELP)):
    """Approved records with a correction -> a chat-format JSONL file and a catalog entry for it (version bumped when
    the content changed), ready for `curate catalog publish` to re-evaluate it as a candidate."""
    from tasks.ops import failures as mining

    try:
        result = mining.export(_open(db).records("approved", run=run), out, name, catalog_dir, license_)
    except WorkbenchError as err:
        fail(err)
    console.print(f"{result['rows']} approved corrections -> {out}; catalog entry {result['entry']} version "
                  f"{result['version']} ({result['change']})")
    console.print(f"Their prompts are benchmark items of {', '.join(result['benchmarks'])}: a study ranking on that "
                  "benchmark removes them as contamination, so rank the new candidate on another one. Add "
                  f"'{name}' to a study's candidates, then `curate catalog publish --dir {catalog_dir}` (or run the "
                  "study again: only the new arm trains).")
