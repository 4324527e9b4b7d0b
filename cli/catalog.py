"""`curate catalog list|validate|publish`: the candidate datasets."""

from pathlib import Path

import typer
from rich.table import Table

from cli.output import console, fail
from tasks.errors import StudyInvalid, WorkbenchError

catalog_app = typer.Typer(help="List, validate and publish catalog entries.", no_args_is_help=True)
DIR = typer.Option(Path("catalog"), "--dir", help="Catalog folder.")


@catalog_app.command("list")
def catalog_list(directory: Path = DIR):
    """Show every catalog entry with its task, license and size."""
    from tasks.schema.catalog import load_catalog

    try:
        entries = load_catalog(directory)
    except WorkbenchError as err:
        fail(err)
    out = Table(title=f"catalog: {directory}")
    for col in ("name", "version", "task", "license", "source", "rows (hint)", "description"):
        out.add_column(col)
    for e in entries.values():
        out.add_row(e.name, str(e.version), e.task, e.license, f"{e.path or e.hub_id} [{e.split}]",
                    str(e.size_hint or ""), e.description)
    console.print(out)


@catalog_app.command("validate")
def catalog_validate(directory: Path = DIR,
                     data: bool = typer.Option(False, help="Also load each entry's data and check its columns.")):
    """Check every catalog file against the schema (and optionally its data); all problems at once."""
    from tasks.backends.data import load_split, normalize
    from tasks.errors import DataError
    from tasks.schema.catalog import load_catalog

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
        fail(err)
    console.print(f"[green]OK[/] {len(entries)} catalog entries in {directory}")


@catalog_app.command("publish")
def catalog_publish(directory: Path = DIR,
                    everything: bool = typer.Option(False, "--all", help="Announce every entry, changed or not.")):
    """Validate the catalog, find entries new or changed since the last publish, and emit `catalog.changed`
    (the `reevaluate` deployment's trigger) naming them."""
    from tasks.ops.publish import publish

    try:
        result = publish(directory, everything)
    except WorkbenchError as err:
        fail(err)
    if not result["changed"]:
        console.print(f"nothing changed in {directory} since the last publish; no event emitted (use --all to force)")
        return
    console.print(f"emitted catalog.changed for {', '.join(result['changed'])} (event {result['event_id']}); "
                  f"state saved in {result['state_file']}")
