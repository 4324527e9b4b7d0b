"""Every MLflow call of the workbench. Runs are addressed by id (the fluent active run is thread-local)."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from tasks import __version__
from tasks.ranking import Point

PARENT = "mlflow.parentRunId"
REUSED_TAG = "curate.reused_from"


def tracking_uri(output_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set (team server), else a SQLite store under the study's output folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def open_experiment(uri: str, name: str, output_dir: Path) -> str:
    """Create the store (once, before any parallel work: concurrent SQLite migrations crash) and the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # a tracking server stores (or proxies) artifacts itself; an embedded SQLite store keeps them beside it
    location = (Path(output_dir).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def owner_tags() -> dict:
    """Who runs this: host, process and Prefect flow run, so a later run can tell a dead owner's run from a live one."""
    from prefect.runtime import flow_run

    return {"curate.host": socket.gethostname(), "curate.pid": os.getpid(),
            "curate.worker": os.environ.get("CURATE_WORKER_NAME", socket.gethostname()),
            "curate.prefect_flow_run_id": flow_run.id or ""}


def start_run(uri: str, experiment_id: str, name: str, parent: str | None = None,
              tags: dict | None = None, params: dict | None = None, queued: bool = False) -> str:
    """A new run (status RUNNING, or SCHEDULED for queued=True) carrying its owner's host, pid and flow run."""
    client = MlflowClient(uri)
    tags = {**owner_tags(), **(tags or {}), "curate.code_version": code_version(), **({PARENT: parent} if parent else {})}
    run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    if params:
        log_params(uri, run.info.run_id, params)
    if queued:
        client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def claim_run(uri: str, run_id: str) -> None:
    """A queued run starts here: RUNNING, owned by this process and flow run."""
    client = MlflowClient(uri)
    client.update_run(run_id, status="RUNNING")
    set_tags(uri, run_id, {**owner_tags(), "curate.claimed_ms": int(time.time() * 1000)})


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    MlflowClient(uri).log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


def log_metrics(uri: str, run_id: str, metrics: dict, step: int = 0) -> None:
    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    MlflowClient(uri).log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_artifact(uri: str, run_id: str, path: str | Path, folder: str | None = None) -> None:
    path = Path(path)
    client = MlflowClient(uri)
    (client.log_artifacts if path.is_dir() else client.log_artifact)(run_id, str(path), folder)


def set_tags(uri: str, run_id: str, tags: dict) -> None:
    client = MlflowClient(uri)
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def end_run(uri: str, run_id: str, ok: bool = True, reason: str | None = None) -> None:
    if reason:
        set_tags(uri, run_id, {"curate.failure": reason})
    MlflowClient(uri).set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


def fail_unfinished(uri: str, run_id: str, reason: str) -> list[str]:
    """Mark a run and every descendant still RUNNING or SCHEDULED as FAILED (their owner is gone); return their ids."""
    client = MlflowClient(uri)
    failed = []
    for child in children(uri, run_id):
        failed += fail_unfinished(uri, child.info.run_id, reason)
    if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):
        end_run(uri, run_id, ok=False, reason=reason)
        failed.append(run_id)
    return failed


def finished_points(uri: str, experiment_id: str, fingerprints: list[str]) -> dict[str, object]:
    """Finished point runs in the experiment by point fingerprint (the original run, not a copy, when both exist)."""
    client, found = MlflowClient(uri), {}
    for fp in dict.fromkeys(fingerprints):  # tag values cannot be matched with IN: one equality query each
        runs = client.search_runs([experiment_id], f"tags.`curate.point_fingerprint` = '{fp}' and "
                                  "attributes.status = 'FINISHED'", max_results=100)
        originals = [r for r in runs if REUSED_TAG not in r.data.tags]
        if runs:
            found[fp] = (originals or runs)[0]
    return found


def children(uri: str, run_id: str, finished_only: bool = False) -> list:
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    query = f"tags.`{PARENT}` = '{run_id}'" + (" and attributes.status = 'FINISHED'" if finished_only else "")
    return client.search_runs([parent.info.experiment_id], query, max_results=10000)


def latest_study_run(uri: str, name: str):
    """The newest study run of the experiment `name`, or None."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], "tags.`curate.catalog_fingerprint` != ''", max_results=1,
                              order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


PROFILE = "profile.json"  # on each arm run: rows, duplicates, labels, contamination, token lengths


def read_predictions(uri: str, run_id: str) -> list[dict] | None:
    """A point's per-example predictions (None when the artifact is missing)."""
    import tempfile

    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient(uri).download_artifacts(run_id, "predictions.jsonl", tmp)
        except (MlflowException, OSError):
            return None
        return [json.loads(line) for line in open(path)]


def read_study(uri: str, study_run_id: str, examples: bool = True) -> dict:
    """Everything `rank` needs, from MLflow alone: the study run's params, each arm's license and profile, every
    finished point (with its per-example predictions when examples=True)."""
    from tasks.uncertainty import example_arrays

    client = MlflowClient(uri)
    study = client.get_run(study_run_id)
    params = dict(study.data.params)
    labels = json.loads(params["labels"]) if params.get("labels") else None
    licenses, profiles, points = {}, {}, []
    for arm in children(uri, study_run_id):
        name = arm.data.tags.get("curate.arm", arm.info.run_name)
        licenses[name] = arm.data.tags.get("curate.license", "")
        profiles[name] = {k.removeprefix("profile."): v for k, v in arm.data.params.items() if k.startswith("profile.")}
        for p in children(uri, arm.info.run_id, finished_only=True):
            records = read_predictions(uri, p.info.run_id) if examples else None
            if records and labels is None and params["task"] == "classification":
                labels = sorted({r["gold"] for r in records})  # stores written before labels were a param
            arrays = example_arrays(records, params["task"], labels) if records else None
            points.append(Point(name, int(p.data.params["size"]), int(p.data.params["seed"]), dict(p.data.metrics), arrays))
    return {"params": params, "licenses": licenses, "profiles": profiles, "points": points,
            "experiment_id": study.info.experiment_id}
