"""Every MLflow call of the workbench. Runs are addressed by id (the fluent active run is thread-local)."""

import json
import os
import subprocess
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from tasks import __version__
from tasks.ranking import Point

PARENT = "mlflow.parentRunId"


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
    location = None if os.environ.get("MLFLOW_TRACKING_URI") else (Path(output_dir).resolve() / "mlartifacts").as_uri()
    return client.create_experiment(name, artifact_location=location)


def start_run(uri: str, experiment_id: str, name: str, parent: str | None = None,
              tags: dict | None = None, params: dict | None = None) -> str:
    client = MlflowClient(uri)
    tags = {**(tags or {}), "curate.code_version": code_version(), **({PARENT: parent} if parent else {})}
    run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    if params:
        log_params(uri, run.info.run_id, params)
    return run.info.run_id


def log_params(uri: str, run_id: str, params: dict) -> None:
    from mlflow.entities import Param
    MlflowClient(uri).log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


def log_metrics(uri: str, run_id: str, metrics: dict, step: int = 0) -> None:
    from mlflow.entities import Metric
    import time
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


def end_run(uri: str, run_id: str, ok: bool = True) -> None:
    MlflowClient(uri).set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


def children(uri: str, run_id: str, finished_only: bool = False) -> list:
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    query = f"tags.`{PARENT}` = '{run_id}'" + (" and attributes.status = 'FINISHED'" if finished_only else "")
    return client.search_runs([parent.info.experiment_id], query, max_results=10000)


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
