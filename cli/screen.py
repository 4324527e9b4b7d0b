"""`curate screen STUDY`: every catalog entry the study could use, ranked by cheap signals from the base model
before any fine-tune (tasks.ops.screen); the entries it cannot use, with the reason."""

from pathlib import Path

import typer

from cli import output
from cli.output import console, fail, table
from tasks.errors import WorkbenchError


def screen(study_path: Path = typer.Argument(..., help="Study YAML file."),
           as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text.")):
    """Screen the whole catalog before training: closeness to the benchmark and label agreement under the base
    model (D0's own values as the reference), duplicates, copies of D0 and contamination; no fine-tune."""
    from tasks.ops import screen as ops
    from tasks.ops.workers import quiet_libraries
    from tasks.schema.study import load_study

    output.JSON["on"] = as_json
    quiet_libraries()
    try:
        study = load_study(study_path)
        reference, rows = ops.screen(study, progress=lambda line: None if as_json else console.print(
            f"  {line}", highlight=False, markup=False))
    except WorkbenchError as err:
        fail(err)
    if as_json:
        output.emit({"ok": True, "study": study.name, "reference": reference.model_dump(),
                     "entries": [r.model_dump() for r in rows]})
        return
    show(reference, rows)


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
