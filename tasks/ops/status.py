"""Where a study stands: each arm and point as queued / running / completed / failed with durations, read from MLflow
(the record of work) and, where a Prefect server is reachable, the state of each arm's flow run."""

import time

from tasks.backends import tracking

STATES = {"SCHEDULED": "queued", "RUNNING": "running", "FINISHED": "completed", "FAILED": "failed", "KILLED": "failed"}


def _duration(info, tags: dict | None = None) -> float | None:
    """Seconds from start (for an arm: from when a worker claimed it, not from when it was queued) to end or now."""
    start = int((tags or {}).get(tracking.CLAIMED_MS, 0)) or info.start_time
    if not start:
        return None
    end = info.end_time or (int(time.time() * 1000) if info.status == "RUNNING" else None)
    return None if end is None else round((end - start) / 1000, 1)


def _prefect_states(flow_run_ids: list[str]) -> dict[str, str]:
    ids = [i for i in flow_run_ids if i]
    if not ids:
        return {}
    try:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            return {}
        states = {}
        with get_client(sync_client=True) as client:
            for i in ids:
                run = client.read_flow_run(i)
                states[i] = f"{run.name}: {run.state.name}" if run.state else run.name
        return states
    except Exception:  # noqa: BLE001 - no server, or an ephemeral one that is gone: MLflow alone still answers
        return {}


def study_status(uri: str, study_name: str, run_id: str | None = None, since_ms: int = 0, prefect: bool = True) -> dict:
    """The latest (or given) study run of `study_name` (started at or after since_ms): its arms and points, each with
    state and duration; with prefect=True also each arm's flow run state where a Prefect server answers."""
    study = tracking.get_run(uri, run_id) if run_id else tracking.latest_study_run(uri, study_name, since_ms)
    if study is None:
        return {}
    spec = tracking.study_from_params(study.data.params)
    metric = spec.primary
    arms, points = [], []
    arm_runs = tracking.children(uri, study.info.run_id)
    flow_states = _prefect_states([a.data.tags.get(tracking.FLOW_RUN, "") for a in arm_runs]) if prefect else {}
    for arm in sorted(arm_runs, key=lambda r: r.data.tags.get(tracking.ARM, "")):
        name = arm.data.tags.get(tracking.ARM, arm.info.run_name)
        seen = {}
        for p in tracking.children(uri, arm.info.run_id):
            key = (int(p.data.params.get("size", 0)), int(p.data.params.get("seed", 0)))
            if key not in seen or p.info.start_time > seen[key].info.start_time:
                seen[key] = p
        planned = spec.arm_points(name)
        for size, seed in planned:
            p = seen.get((size, seed))
            state = STATES.get(p.info.status, p.info.status.lower()) if p else "queued"
            reused = bool(p and tracking.REUSED in p.data.tags)
            points.append({"arm": name, "size": size, "seed": seed, "state": state + (" (reused)" if reused else ""),
                           "seconds": _duration(p.info) if p else None,
                           "metric": p.data.metrics.get(metric) if p else None,
                           "why": p.data.tags.get(tracking.FAILURE, "") if p else ""})
        done = sum(1 for pt in points if pt["arm"] == name and pt["state"].startswith("completed"))
        flow = flow_states.get(arm.data.tags.get(tracking.FLOW_RUN, ""), "")
        arms.append({"arm": name, "state": STATES.get(arm.info.status, arm.info.status.lower()),
                     "points": f"{done}/{len(planned)}", "seconds": _duration(arm.info, arm.data.tags),
                     "flow_run": flow, "why": arm.data.tags.get(tracking.FAILURE, "")})
    return {"study": study_name, "run_id": study.info.run_id, "state": STATES.get(study.info.status, study.info.status),
            "seconds": _duration(study.info), "primary_metric": metric,
            "trained": study.data.metrics.get("points_trained"), "reused": study.data.metrics.get("points_reused"),
            "arms": arms, "points": points}
