"""`curate catalog publish`: announce new or changed catalog entries to the Prefect server (`catalog.changed`),
which the `reevaluate` deployment's trigger listens for."""

import asyncio
import json
from pathlib import Path

from prefect.events import Event
from prefect.events.clients import get_events_client
from prefect.settings import PREFECT_API_URL

from tasks.common import fingerprint
from tasks.errors import WorkbenchError
from tasks.schema.catalog import load_catalog

PUBLISHED = ".published.json"  # in the catalog folder: entry fingerprints as of the last `curate catalog publish`


def publish(directory: str | Path, everything: bool = False) -> dict:
    """Validate the catalog, compare entry fingerprints with the last publish, and emit one `catalog.changed` event
    naming the new or changed entries (payload: names, changed, removed, catalog_dir). Saves the new state after."""
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
