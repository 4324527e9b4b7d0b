"""`curate convert humaneval|mbpp SOURCE OUT`: benchmark problems -> rows of the code task type, every reference
solution checked against its own tests in the sandbox (tasks.core.codeconvert, tasks.backends.sandbox)."""

from pathlib import Path

import typer

from cli.output import console, fail
from tasks.errors import WorkbenchError


def convert(kind: str = typer.Argument(..., help="Source format: humaneval or mbpp."),
            source: str = typer.Argument(..., help="File, folder or Hub id (openai/openai_humaneval, "
                                         "google-research-datasets/mbpp; served from $CURATE_HUB_MIRROR when set)."),
            out: Path = typer.Argument(..., help="Output JSONL file (id, prompt, solution, test, entry_point)."),
            split: str = typer.Option("test", help="Split to read, with slicing: 'train', 'test[:100]'."),
            ids: str = typer.Option(None, help="Keep source numbers in this inclusive range, e.g. 11-200 "
                                    "(HumanEval/11 -> 11, MBPP task_id)."),
            max_solution_lines: int = typer.Option(None, min=1, help="Keep solutions of at most this many lines."),
            check: bool = typer.Option(True, "--check/--no-check", help="Run every reference solution against its "
                                       "tests in the sandbox and leave out (listing) those that fail."),
            timeout: float = typer.Option(10.0, help="Seconds per reference program when checking.")):
    """Convert HumanEval or MBPP problems for code studies: prompt -> solution pairs with executable tests."""
    from tasks.backends import sandbox
    from tasks.backends.data import load_split, write_jsonl
    from tasks.core import codeconvert
    from tasks.schema.sources import DataRef

    if kind not in codeconvert.CONVERTERS:
        fail(WorkbenchError(f"unknown source format '{kind}'; formats: {', '.join(codeconvert.CONVERTERS)}"))
    span = None
    if ids:
        try:
            lo, hi = (int(x) for x in ids.split("-", 1))
            span = (lo, hi)
        except ValueError:
            fail(WorkbenchError(f"--ids '{ids}': write an inclusive range of numbers, e.g. 11-200"))
    try:
        records = load_split(DataRef(source=source, split=split)).to_list()
        converted = codeconvert.CONVERTERS[kind](records)
    except (WorkbenchError, KeyError) as err:
        fail(WorkbenchError(f"{source} [{split}]: not {kind} data ({type(err).__name__}: {err})"))
    rows = codeconvert.select(converted.rows, span, max_solution_lines)
    for source_id, why in converted.skipped:
        console.print(f"[yellow]skipped[/] {source_id}: {why}")
    if check and rows:
        with console.status(f"running {len(rows)} reference solutions against their tests (sandbox)"):
            try:
                outcomes = sandbox.execute_many([sandbox.Program(**codeconvert.program(r, r["solution"]))
                                                 for r in rows], sandbox.Limits(timeout_s=timeout), parallel=4)
            except sandbox.SandboxUnavailable as err:
                fail(WorkbenchError(f"{err}; or convert with --no-check"))
        failing = [(r["id"], o) for r, o in zip(rows, outcomes) if not o.passed]
        for row_id, o in failing:
            console.print(f"[yellow]left out[/] {row_id}: its reference solution fails its tests ({o.kind}: {o.detail[:120]})")
        bad = {i for i, _ in failing}
        rows = [r for r in rows if r["id"] not in bad]
    if not rows:
        fail(WorkbenchError(f"no problems left to write from {source} [{split}] (filters or failing references)"))
    write_jsonl(rows, out)
    checked = "every reference solution passes its tests" if check else "references not run (--no-check)"
    console.print(f"[green]wrote[/] {len(rows)} problems to {out} (ids {rows[0]['id']} … {rows[-1]['id']}; "
                  f"{len(records)} read, {len(converted.skipped)} skipped; {checked})")
