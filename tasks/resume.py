"""Resume and reuse: a point whose fingerprint already has a finished MLflow run is not trained again, and runs whose
owner died (a killed worker, a crashed machine) are marked FAILED instead of looking finished or forever running."""

import os
import socket
import tempfile

from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.data import fingerprint
from tasks.study import Study

REUSED = tracking.REUSED_TAG


def point_fingerprint(study: Study, mixture_fp: str, benchmark_fp: str, seed: int) -> str:
    """Everything that decides a point's result: its training rows, the benchmark, the model, the training preset,
    the seed and the code version. Equal fingerprints -> the same experiment; the finished run can stand in."""
    return fingerprint([mixture_fp, benchmark_fp, study.model.model_dump(), study.training.model_dump(), seed,
                        tracking.code_version()])


def reuse_point(uri: str, source, experiment_id: str, arm_run: str, name: str, tags: dict) -> dict:
    """Record a finished point again under this study's arm run: same params and metrics, predictions copied (the
    ranking's intervals need them), the adapter referenced, tagged with the run it came from."""
    client = MlflowClient(uri)
    origin = source.data.tags.get(REUSED, source.info.run_id)
    params = {k: v for k, v in source.data.params.items()}
    run_id = tracking.start_run(uri, experiment_id, name, parent=arm_run, params=params,
                                tags={**tags, REUSED: origin, "curate.adapter_uri": f"runs:/{origin}/adapter"})
    tracking.log_metrics(uri, run_id, source.data.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(source.info.run_id, "predictions.jsonl", tmp)
            tracking.log_artifact(uri, run_id, path)
        except Exception as err:  # noqa: BLE001 - an old run without predictions: metrics still rank, intervals skip it
            tracking.set_tags(uri, run_id, {"curate.predictions_missing": f"{type(err).__name__}: {err}"[:250]})
    tracking.end_run(uri, run_id)
    return dict(source.data.metrics)


def _alive(tags: dict) -> bool | None:
    """True/False when this machine can tell whether the run's owner process lives; None when it cannot."""
    if tags.get("curate.host") != socket.gethostname() or not tags.get("curate.pid", "").isdigit():
        return None
    try:
        os.kill(int(tags["curate.pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flow_run_over(flow_run_id: str) -> bool | None:
    """True when Prefect says the owning flow run is over (crashed, failed, cancelled, completed), None if unknown."""
    if not flow_run_id:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception:  # noqa: BLE001 - an ephemeral server that is gone, or no API: cannot tell
        return None
    return bool(state and state.is_final())


def fail_orphans(uri: str, experiment_id: str) -> list[str]:
    """Mark RUNNING/SCHEDULED runs whose owner is dead as FAILED: a dead local process, or a Prefect flow run that
    ended (e.g. marked Crashed by the zombie-run automation when a worker machine vanished). Returns their ids."""
    client = MlflowClient(uri)
    runs = [r for status in ("RUNNING", "SCHEDULED")
            for r in client.search_runs([experiment_id], f"attributes.status = '{status}'", max_results=10000)]
    orphans = []
    for run in runs:
        tags = run.data.tags
        alive = _alive(tags)
        if alive is False or (alive is None and _flow_run_over(tags.get("curate.prefect_flow_run_id", ""))):
            tracking.end_run(uri, run.info.run_id, ok=False,
                             reason=f"owner gone (host {tags.get('curate.host')}, pid {tags.get('curate.pid')})")
            orphans.append(run.info.run_id)
    return orphans
