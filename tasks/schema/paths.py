"""Relative paths in a study or catalog file mean: relative to the folder of the file that names them, wherever
`curate` is run from. They are made absolute once, when the file is read; a Hub id stays a Hub id."""

import os
import re
from pathlib import Path

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # 'org/name', as tasks.backends.data reads it


def anchored(value: str, folder: Path, hub_ids: bool = True) -> str:
    """`value` made absolute against `folder` when it is a relative local path. Unchanged: absolute paths,
    'pypi:PACKAGE/file' references, and (hub_ids) an 'org/name' that is not a file or folder there."""
    if not value or value.startswith("pypi:") or os.path.isabs(os.path.expanduser(value)):
        return os.path.expanduser(value) if value else value
    local = Path(os.path.normpath(folder.resolve() / value))
    if hub_ids and HUB_ID.match(value) and not local.exists():
        return value
    return str(local)


def anchor_study(study, folder: Path):
    """Every path field of a study (data sources, models, catalog_dir, output_dir) against the study file's folder."""
    for ref in (study.base, study.benchmark.data, study.fewshot.data, study.model, study.judge and study.judge.model):
        if ref is not None:
            ref.source = anchored(ref.source, folder)
    study.catalog_dir = anchored(study.catalog_dir, folder, hub_ids=False)
    study.output_dir = anchored(study.output_dir, folder, hub_ids=False)
    return study


def anchor_entry(entry, folder: Path):
    """A catalog entry's `path` against the entry file's folder."""
    if entry.path:
        entry.path = anchored(entry.path, folder)
    return entry
