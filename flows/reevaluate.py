"""Re-evaluate studies when the catalog changes: only new or changed candidates train; every other finished point is
reused by fingerprint, and the study is ranked again. Triggered by the `catalog.changed` event (emitted by
`curate catalog publish`) or a cron schedule — both defined in deployments/prefect.yaml."""

from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.curate import curate
from tasks.backends import tracking
from tasks.common import CONTROL
from tasks.schema.catalog import load_catalog
from tasks.schema.study import Study, load_study


def study_files(studies: str) -> list[Path]:
    """Comma-separated study files and folders of them (*.yaml)."""
    files: list[Path] = []
    for part in (p.strip() for p in studies.split(",") if p.strip()):
        path = Path(part)
        files += sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    return files


@task
def catalog_diff(study: Study) -> dict:
    """Compare the study's catalog entries (fingerprints) with the arms of its latest study run."""
    uri = tracking.tracking_uri(study.output_path)
    entries = load_catalog(study.catalog_dir)
    latest = tracking.latest_study_run(uri, study.name)
    seen: dict[str, str] = {}
    if latest is not None:
        for arm in tracking.children(uri, latest.info.run_id):
            if arm.info.status == "FINISHED":
                seen[arm.data.tags.get(tracking.ARM, "")] = arm.data.params.get(tracking.ENTRY_FP, "")
    new = [c for c in study.candidates if c in entries and c not in seen]
    changed = [c for c in study.candidates if c in entries and c in seen and seen[c] != entries[c].fingerprint()]
    return {"latest_run": latest.info.run_id if latest else None, "new": new, "changed": changed,
            "control_missing": latest is not None and CONTROL not in seen}


@flow(name="reevaluate", flow_run_name="reevaluate: {changed}")
def reevaluate(studies: str = "deployments/studies", changed: str = "") -> list[dict]:
    """For each study (comma-separated files or folders) that uses a changed catalog entry — every study when
    `changed` is empty — compare the entries' fingerprints with the arms of its latest run; when a candidate is new
    or changed, run the study again: only those arms train, finished points are reused, and the ranking is redone."""
    log = get_run_logger()
    names = {n.strip() for n in changed.split(",") if n.strip()}
    results = []
    for path in study_files(studies):
        study = load_study(path)
        if names and not names & set(study.candidates):
            log.info("%s: uses none of %s; skipped", study.name, ", ".join(sorted(names)))
            continue
        diff = catalog_diff(study)
        if diff["latest_run"] and not (diff["new"] or diff["changed"] or diff["control_missing"]):
            log.info("%s: catalog entries unchanged since study run %s; nothing to do", study.name, diff["latest_run"])
            continue
        log.info("%s: new %s, changed %s (against study run %s); re-running the study", study.name,
                 diff["new"] or "-", diff["changed"] or "-", diff["latest_run"] or "none")
        result = curate(study)
        results.append({"study": study.name, "study_run_id": result["study_run_id"], "new": diff["new"],
                        "changed": diff["changed"], "points_trained": result["points_trained"],
                        "points_reused": result["points_reused"]})
    return results
