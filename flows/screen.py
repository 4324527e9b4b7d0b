"""The screen flow: `curate screen` as a Prefect flow run, so the screen shows in the Prefect UI beside the studies,
with its table as an artifact (key screen-<study>); the MLflow `screen` run holds the same values."""

import logging

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from tasks.ops import screen as ops
from tasks.ops.validate import Inputs
from tasks.schema.study import Study
from tasks.steps import artifact_key

PROGRESS = "curate.screen.progress"  # one line per entry screened


@flow(name="screen", flow_run_name="{study.name}")
def screen_catalog(study: Study, names: list[str], excluded: list[ops.Screened], base: Inputs) -> dict:
    """The entries (tasks.ops.screen.prepare: validated before this flow) screened by the base model, logged to
    MLflow and as an artifact."""
    logger, shown = get_run_logger(), logging.getLogger(PROGRESS)

    def progress(line: str) -> None:
        logger.info(line)  # the flow run's log (and screen.log)
        shown.info(line)  # the terminal, where the CLI listens (cli/screen.py)

    reference, rows = ops.screen(study, names, excluded, base, progress=progress)
    checked = ops.log_screen(study, reference, rows)
    table = [{"rank": r.rank, "entry": r.name, "rows": r.rows, "closeness": r.closeness,
              "label_agreement": r.label_agreement, "duplicates": r.duplicates, "d0_copies": r.d0_copies,
              "contaminated": r.contaminated, "excluded": r.excluded or ""} for r in [reference, *rows]]
    agreement = (f"; against the trained ranking: pairwise {checked['pairwise']:.0%} of {checked['pairs']}, "
                 f"Spearman {checked['spearman']:+.2f}") if checked else ""
    create_table_artifact(table=table, key=artifact_key(study, "screen"),
                          description=f"{study.name}: the catalog screened by the base model (the first row, "
                                      f"'control', is D0's own values){agreement}")
    return {"reference": reference.model_dump(), "entries": [r.model_dump() for r in rows], "checked": checked}
