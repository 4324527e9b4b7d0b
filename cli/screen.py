"""`curate screen STUDY`: every catalog entry the study could use, ranked by cheap signals from the base model
before any fine-tune (tasks.ops.screen); the entries it cannot use, with the reason."""

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import typer

from cli import output
from cli.output import console, fail, table
from tasks.errors import WorkbenchError


def screen(study_path: Path = typer.Argument(..., help="Study YAML file."),
           calibration: bool = typer.Option(False, "--calibration", help="Print how the screens in the study's "
                                            "tracking store agreed with the trained rankings, instead of screening."),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text.")):
    """Screen the whole catalog before training: closeness to the benchmark and label agreement under the base
    model (D0's own values as the reference), duplicates, copies of D0 and contamination; no fine-tune. Logged as a
    `screen` run in the study's MLflow store, with its agreement with the study's trained ranking when there is one."""
    from tasks.ops import screen as ops
    from tasks.ops.workers import quiet_libraries
    from tasks.schema.study import load_study

    output.JSON["on"] = as_json
    quiet_libraries()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # "creating initial MLflow database tables" is not news
    try:
        study = load_study(study_path)
        if calibration:
            return show_calibration(ops.calibration(study), as_json)
        names, excluded, base = ops.prepare(study)
        log = output.log_to_file(study.output_path / "screen.log", False)
        if not as_json:
            console.print(f"screening {len(names)} catalog entries of task {study.task} with the base model "
                          f"({len(excluded)} of another task); log: {log}", highlight=False)
        from flows.screen import PROGRESS, screen_catalog

        with _echo(PROGRESS, not as_json):
            done = screen_catalog(study, names, excluded, base)
    except WorkbenchError as err:
        fail(err)
    reference, checked = ops.Screened(**done["reference"]), done["checked"]
    rows = [ops.Screened(**r) for r in done["entries"]]
    found = any(r.excluded is None for r in rows)
    if as_json:
        output.emit({"ok": found, "study": study.name, "reference": reference.model_dump(),
                     "entries": [r.model_dump() for r in rows], "agreement_with_trained_ranking": checked})
    else:
        show(reference, rows)
        if checked:
            console.print(f"against the trained ranking in the store: Spearman {checked['spearman']:+.2f}, pairwise "
                          f"decisions {checked['pairwise']:.0%} of {checked['pairs']}, trained winner in the "
                          f"screen's top {checked['k']}: {'yes' if checked['winner_in_top_k'] else 'no'}",
                          highlight=False)
    if not found:  # exit 1: nothing found, as the other commands
        raise typer.Exit(output.NOTHING_OR_FAILED)


@contextmanager
def _echo(name: str, on: bool):
    """While it lasts, print the lines of logger `name` in the terminal, indented, as they come (they also reach the
    log file)."""
    logger, handler = logging.getLogger(name), logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    logger.setLevel(logging.INFO)
    if on:
        logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def show_calibration(rows: list[dict], as_json: bool) -> None:
    if as_json:
        output.emit({"ok": True, "screens": rows})
    elif not rows:
        console.print("no screen in this store was checked against a trained ranking yet (run `curate screen` after "
                      "`curate run`)")
    else:
        console.print(table([{"study": r["study"], "screen run": r["run"][:8], "Spearman": f"{r['spearman']:+.2f}",
                              "pairwise": f"{r['pairwise']:.0%} of {r['pairs']:.0f}",
                              f"winner in top {r['k']:.0f}": "yes" if r["winner_in_top_k"] else "no"} for r in rows],
                            "the screen against trained rankings"))


def _fmt(value, spec: str, reference=None) -> str:
    if value is None:
        return "-"
    return f"{value:{spec}}" + (f" ({value - reference:+{spec}})" if reference is not None else "")


def show(reference, rows) -> None:
    scored = [r for r in rows if r.excluded is None]
    if not scored:
        console.print("screen: no catalog entry of this task could be scored")
    else:
        console.print(table([{"rank": str(r.rank), "entry": r.name, "rows": str(r.rows),
                              "closeness (vs D0)": _fmt(r.closeness, ".3f", reference.closeness),
                              "label agreement (vs D0)": _fmt(r.label_agreement, ".3f", reference.label_agreement),
                              "duplicates": f"{r.duplicates:.1%}", "D0 copies": str(r.d0_copies),
                              "contaminated": str(r.contaminated), "screen score": _fmt(r.score, ".3f")}
                             for r in scored],
                            f"screen: D0 closeness {_fmt(reference.closeness, '.3f')}, label agreement "
                            f"{_fmt(reference.label_agreement, '.3f')}; ranked by label agreement, then closeness"))
    if any(r.label_agreement is None for r in scored):
        console.print("label agreement: '-' = this task type has no single gold answer to score")
    for r in rows:
        if r.excluded is not None:
            console.print(f"excluded {r.name}: {r.excluded}", highlight=False, markup=False)
