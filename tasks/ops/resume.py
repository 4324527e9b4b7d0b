"""Resume and reuse: a point whose fingerprint already has a finished MLflow run is not trained again, and runs whose
owner died (a killed worker, a crashed machine) are marked FAILED instead of looking finished or forever running."""

import os
import socket

from tasks.backends import tracking
from tasks.common import code_version, fingerprint
from tasks.schema.study import Study


def owner_tags() -> dict:
    """Who runs this: host, process and Prefect flow run, so a later run can tell a dead owner's run from a live one."""
    from prefect.runtime import flow_run

    return {tracking.HOST: socket.gethostname(), tracking.PID: os.getpid(),
            "curate.worker": os.environ.get("CURATE_WORKER_NAME", socket.gethostname()),
            tracking.FLOW_RUN: flow_run.id or ""}


def point_fingerprint(study: Study, mixture_fp: str, benchmark_fp: str, seed: int) -> str:
    """Everything that decides a point's result: its training rows, the benchmark, the model, the training preset,
    the seed and the code version. Equal fingerprints -> the same experiment; the finished run can stand in."""
    return fingerprint([mixture_fp, benchmark_fp, study.model.model_dump(), study.training.model_dump(), seed,
                        code_version()])


def reuse_point(uri: str, source, experiment_id: str, arm_run: str, name: str, tags: dict) -> dict:
    """Record a finished point again under this study's arm run: same params and metrics, predictions copied (the
    ranking's intervals need them), the adapter referenced, tagged with the run it came from."""
    origin = source.data.tags.get(tracking.REUSED, source.info.run_id)
    run_id = tracking.start_run(uri, experiment_id, name, parent=arm_run, params=dict(source.data.params),
                                owner=owner_tags(), tags={**tags, tracking.REUSED: origin,
                                                          tracking.ADAPTER_URI: f"runs:/{origin}/{tracking.ADAPTER}"})
    tracking.log_metrics(uri, run_id, source.data.metrics)
    missing = tracking.copy_artifact(uri, source.info.run_id, tracking.PREDICTIONS, run_id)
    if missing:  # an old run without predictions: its metrics still rank, the intervals skip it
        tracking.set_tags(uri, run_id, {tracking.NO_PREDICTIONS: missing})
    tracking.end_run(uri, run_id)
    return dict(source.data.metrics)


def _alive(tags: dict) -> bool | None:
    """True/False when this machine can tell whether the run's owner process lives; None when it cannot."""
    if tags.get(tracking.HOST) != socket.gethostname() or not tags.get(tracking.PID, "").isdigit():
        return None
    try:
        os.kill(int(tags[tracking.PID]), 0)
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
    orphans = []
    for run in tracking.unfinished_runs(uri, experiment_id):
        tags = run.data.tags
        alive = _alive(tags)
        if alive is False or (alive is None and _flow_run_over(tags.get(tracking.FLOW_RUN, ""))):
            tracking.end_run(uri, run.info.run_id, ok=False,
                             reason=f"owner gone (host {tags.get(tracking.HOST)}, pid {tags.get(tracking.PID)})")
            orphans.append(run.info.run_id)
    return orphans
