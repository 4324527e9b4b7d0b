"""The curate flow: validated inputs in, one subflow per arm (concurrently), then rank from MLflow.

    study.yaml -> (CLI: check_study, once) -> prepare_inputs (reads what the CLI wrote) -> prepare_model
               -> study run (+ one queued arm run per arm) -> plan_points (every mixture written once, fingerprinted,
                  finished runs with the same fingerprint found)
               -> evaluate_arm(control), evaluate_arm(D1) ... evaluate_arm(Dn)
                    in-process (threads + worker processes), or one flow run each on a work pool (run_deployment)
                    per planned point: reuse the finished run, or train_adapter -> score_benchmark -> log_point
               -> rank_study (reads MLflow only) -> ranking.csv / ranking.md / scaling.png / Prefect artifact
"""

import threading

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import steps
from tasks.backends import tracking
from tasks.ops import pruning, resume, workers
from tasks.schema.study import Study
from tasks.ops.validate import Arm, Inputs
from tasks.steps import PointPlan

_slots: dict[str, threading.Semaphore] = {}  # study run id -> the study's cap on arms in flight on a work pool


class Progress:
    """The parent flow run's progress artifact: points done of all planned, advanced from the arm threads."""

    def __init__(self, artifact_id: str, total: int, name: str):
        self.artifact_id, self.total, self.name, self.done = artifact_id, max(total, 1), name, 0
        self.lock = threading.Lock()

    def tick(self, n: int = 1) -> None:
        from uuid import UUID

        from prefect.artifacts import update_progress_artifact

        with self.lock:
            self.done += n
            done = self.done
        try:  # progress is a courtesy: it never fails a study
            update_progress_artifact(UUID(self.artifact_id), progress=100 * done / self.total,
                                     description=f"{self.name}: {done} of {self.total} points")
        except Exception as err:
            get_run_logger().warning("progress artifact not updated: %s", err)


_progress: dict[str, Progress] = {}  # arm run id -> its study's progress (arms in this process)
_point_slots: dict[str, "workers.Slots"] = {}  # arm run id -> the worker slots its study's points share


def point_run_name(study: Study, arm: str, size: int, seed: int) -> str:
    """"arm/size=016/seed=0": sizes zero-padded to the largest, so sorting by name in the MLflow UI sorts by size."""
    return f"{arm}/size={size:0{len(str(study.mixture.sizes[-1]))}d}/seed={seed}"


@flow(name="evaluate-arm", flow_run_name="{study.name}/{arm_name}")
def evaluate_arm(study: Study, arm_name: str, arm_run_id: str, tracking_uri: str, points: list[PointPlan],
                 inputs: Inputs | None = None, model_dir: str | None = None) -> dict:
    """One arm: its planned points — reuse a finished run with the same fingerprint, or train, score and log — under
    the arm's MLflow run. Its points to train run at once, each waiting for a worker slot shared with every arm of
    the study (largest first), so no worker idles while any point waits. On a worker (inputs=None) the parent's
    files are checked by fingerprint only."""
    log = get_run_logger()
    uri = tracking_uri
    try:  # any failure, preparation on a worker included, ends the arm run FAILED with its reason
        tracking.claim_run(uri, arm_run_id, resume.owner_tags())
        if inputs is None:
            inputs = steps.check_arm_files(study, arm_name, points)
            model_dir = steps.prepare_model(study)
        arm = inputs.arm(arm_name)
        exp = tracking.experiment_of(uri, arm_run_id)
        slots = _point_slots.get(arm_run_id) or workers.Slots(study.concurrency)  # alone on a pool worker: its own
        curve = _Curve(study, uri, arm_run_id, arm.name)
        todo = [p for p in points if not p.done_run_id]
        for p in points:
            if p.done_run_id:
                name, tags = _point_identity(study, arm.name, p)
                curve.add(p.size, p.seed, resume.reuse_point(uri, tracking.get_run(uri, p.done_run_id), exp,
                                                             arm_run_id, name, tags))
                log.info("[%s] point %d/%d size=%d seed=%d: reused finished run %s (same fingerprint)",
                         arm.name, points.index(p) + 1, len(points), p.size, p.seed, p.done_run_id[:8])

        def one(p: PointPlan) -> None:
            name, tags = _point_identity(study, arm.name, p)
            with slots.taken(priority=-p.size):
                result = _train_point(study, inputs, arm, model_dir, uri, exp, arm_run_id, p, name, tags)
            curve.add(p.size, p.seed, result)
            log.info("[%s] point %d/%d size=%d seed=%d: %s=%.4f  train %.1fs (%.0f tok/s), eval %.1fs", arm.name,
                     points.index(p) + 1, len(points), p.size, p.seed, study.primary, result[study.primary],
                     result["train_seconds"], result["train_tokens_per_s"], result["eval_seconds"])

        workers.each(one, todo)
    except BaseException as err:
        tracking.end_run(uri, arm_run_id, ok=False, reason=f"{type(err).__name__}: {err}"[:500])
        raise
    before = tracking.get_run(uri, arm_run_id).data.metrics  # an arm that runs in rungs (pruning) adds up
    trained_n, reused_n = len(todo), len(points) - len(todo)
    tracking.log_metrics(uri, arm_run_id, {"points_trained": trained_n + before.get("points_trained", 0),
                                           "points_reused": reused_n + before.get("points_reused", 0)})
    tracking.end_run(uri, arm_run_id)
    return {"arm": arm_name, "arm_run_id": arm_run_id, "trained": trained_n, "reused": reused_n}


def _point_identity(study: Study, arm: str, p: PointPlan) -> tuple[str, dict]:
    return point_run_name(study, arm, p.size, p.seed), {tracking.ARM: arm, tracking.STUDY: study.name,
                                                        tracking.POINT_FP: p.fingerprint,
                                                        tracking.MIXTURE_FP: p.mixture_fingerprint}


class _Curve:
    """An arm's finished points by size: the arm's curve point is logged once every seed of a size is in, and the
    study's progress advances per point (points finish in any order, from several threads)."""

    def __init__(self, study: Study, uri: str, arm_run_id: str, arm: str):
        self.study, self.uri, self.arm_run_id, self.arm = study, uri, arm_run_id, arm
        self.per_size: dict[int, list[tuple[int, dict]]] = {}
        self.lock = threading.Lock()

    def add(self, size: int, seed: int, result: dict) -> None:
        with self.lock:
            done = self.per_size.setdefault(size, [])
            done.append((seed, result))
            complete = len(done) == len(self.study.point_seeds(self.arm, size))
        if self.arm_run_id in _progress:
            _progress[self.arm_run_id].tick()
        if complete:
            steps.log_arm_curve(self.study, self.uri, self.arm_run_id, size, [r for _, r in sorted(done, key=lambda x: x[0])])


def _train_point(study: Study, inputs: Inputs, arm: Arm, model_dir: str, uri: str, exp: str, arm_run_id: str,
                 p: PointPlan, name: str, tags: dict) -> dict:
    params = {"arm": arm.name, "candidate": arm.name, "size": p.size, "seed": p.seed,
              "d0_share": 1.0 if arm.data is None else study.mixture.d0_share, "model": study.model.source,
              "from_candidate": p.from_candidate, **tracking.model_params(study.training, "training.")}
    point_run = tracking.start_run(uri, exp, name, parent=arm_run_id, tags=tags, params=params,
                                   owner=resume.owner_tags())
    try:
        trained = steps.train_adapter(study, inputs, p.mixture, model_dir, p.seed)
        scored = steps.score_benchmark(study, inputs, model_dir, trained["adapter_dir"])
        return steps.log_point(study, uri, point_run, trained, scored)
    except BaseException as err:
        tracking.end_run(uri, point_run, ok=False, reason=f"{type(err).__name__}: {err}"[:500])
        raise


@task(name="run-arm")
def run_arm(study: Study, inputs: Inputs, arm: Arm, points: list[PointPlan], model_dir: str, uri: str,
            study_run_id: str, arm_run_id: str, deployment: str | None) -> dict:
    """One arm, from a thread of the parent's task runner: in-process, or as a flow run of the arm deployment on
    the work pool (at most `study.concurrency` of this study's arms in flight). Results are read from MLflow."""
    if deployment is None:
        return evaluate_arm(study, arm.name, arm_run_id, uri, points, inputs, model_dir)
    from prefect.deployments import run_deployment

    before = tracking.get_run(uri, arm_run_id).data.metrics  # counts of an earlier rung (pruning)
    try:
        with _slots[study_run_id]:
            child = run_deployment(deployment, as_subflow=True, flow_run_name=f"{study.name}/{arm.name}",
                                   parameters={"study": study.model_dump(mode="json"), "arm_name": arm.name,
                                               "arm_run_id": arm_run_id, "tracking_uri": uri,
                                               "points": [p.model_dump(mode="json") for p in points]},
                                   poll_interval=2)
    except BaseException as err:  # the server went away, or we were cancelled: the queued arm must not linger
        tracking.fail_unfinished(uri, arm_run_id, f"dispatch failed: {type(err).__name__}: {err}"[:500])
        raise
    run = tracking.get_run(uri, arm_run_id)
    if arm_run_id in _progress:  # the arm ran on a worker: its points count when its flow run ends
        _progress[arm_run_id].tick(len(points))
    if not child.state.is_completed() or run.info.status != "FINISHED":
        lost = tracking.fail_unfinished(uri, arm_run_id, f"arm flow run '{child.name}' ended {child.state.name}")
        raise RuntimeError(f"arm '{arm.name}': flow run '{child.name}' ended {child.state.name}"
                           f"{f'; {len(lost)} unfinished run(s) marked FAILED' if lost else ''}")
    m = run.data.metrics
    return {"arm": arm.name, "arm_run_id": arm_run_id, "flow_run": child.name,
            **{k: int(m.get(f"points_{k}", 0) - before.get(f"points_{k}", 0)) for k in ("trained", "reused")}}


def _merged(arms: list[dict]) -> list[dict]:
    """An arm that ran in two rungs (pruning): one entry, its counts added."""
    merged: dict[str, dict] = {}
    for a in arms:
        m = merged.setdefault(a["arm"], {**a, "trained": 0, "reused": 0})
        m["trained"], m["reused"] = m["trained"] + a["trained"], m["reused"] + a["reused"]
    return list(merged.values())


def _busy(study: Study, uri: str, study_run: str, arm_runs: dict[str, str]) -> dict | None:
    """The workers' busy share over the points trained in this study run (from their MLflow start and end times),
    logged on the study run; in-process only (on a work pool each arm's machine has its own workers)."""
    from tasks.core.plan import busy_share

    runs = [r for run_id in arm_runs.values() for r in tracking.children(uri, run_id, finished_only=True)
            if tracking.REUSED not in r.data.tags]
    busy = busy_share([(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs], study.concurrency)
    if busy and not study.pool:
        tracking.log_metrics(uri, study_run, {"worker_busy_share": round(busy["share"], 4)})
    return None if study.pool else busy


@flow(name="curate", flow_run_name="{study.name}", task_runner=ThreadPoolTaskRunner(max_workers=32))
def curate(study: Study) -> dict:
    """Which candidate, mixed into D0, helps most at the target size? Returns the study run id and the ranking."""
    log = get_run_logger()
    inputs = steps.prepare_inputs(study)  # what the CLI validated; validated here only when launched elsewhere
    deployment = steps.arm_deployment(study) if study.pool else None
    model_dir = steps.prepare_model(study)
    inputs = steps.profile_arms(study, inputs, model_dir)
    uri = tracking.tracking_uri(study.output_path)
    study_run = steps.open_study_run(study, inputs, uri)
    exp = tracking.experiment_of(uri, study_run)
    if orphans := resume.fail_orphans(uri, exp):
        log.warning("marked %d run(s) of an earlier, dead study run FAILED (their process or flow run is gone)", len(orphans))
    arm_runs = {arm.name: steps.open_arm_run(study, arm, uri, study_run) for arm in inputs.arms}
    plan = steps.plan_points(study, inputs, uri, exp)
    todo = {arm: sum(p.done_run_id is None for p in points) for arm, points in plan.items()}
    total = sum(len(points) for points in plan.values())
    log.info("MLflow: %s  study run %s  (%d arms x %d sizes x %d seeds, %d points; %d to train, %d finished before "
             "and reused; %s, %d at once)", uri, study_run, len(inputs.arms), len(study.mixture.sizes),
             study.seeds, total, sum(todo.values()), total - sum(todo.values()),
             f"arms on work pool '{study.pool}' ({deployment})" if deployment else "in-process: points", study.concurrency)
    _slots[study_run] = threading.Semaphore(study.concurrency)
    progress = Progress(steps.open_artifacts(study, uri, study_run, exp, total), total, study.name)
    slots = workers.Slots(study.concurrency)  # in-process: every arm's points take turns on the same workers
    _progress.update(dict.fromkeys(arm_runs.values(), progress))
    _point_slots.update(dict.fromkeys(arm_runs.values(), slots))
    arms, failed, pruned, rungs = [], [], {}, pruning.rungs(study)
    try:
        for r, sizes in enumerate(rungs):  # one rung of all sizes, or two with successive halving
            live = [arm for arm in inputs.arms if arm.name not in pruned]
            part = {arm.name: [p for p in plan[arm.name] if p.size in sizes] for arm in live}
            slots.expect(0 if deployment else sum(p.done_run_id is None for a in live for p in part[a.name]))
            # an arm with nothing left to train only copies runs: done here, not sent to a GPU worker
            futures = [run_arm.submit(study, inputs, arm, part[arm.name], model_dir, uri, study_run, arm_runs[arm.name],
                                      deployment if any(p.done_run_id is None for p in part[arm.name]) else None)
                       for arm in live]
            states = [f.wait() or f.state for f in futures]
            failed += [arm.name for arm, s in zip(live, states) if not s.is_completed()]
            arms += [s.result() for s in states if s.is_completed()]
            if r + 1 < len(rungs) and not failed:
                pruned = steps.prune_arms(study, uri, study_run, sizes[-1], arm_runs)
                progress.tick(sum(1 for a in pruned for p in plan[a] if p.size not in sizes))  # skipped: done
        result = steps.rank_study(study, uri, study_run)  # ranks what finished, even if an arm failed
    finally:
        workers.shutdown()
        _slots.pop(study_run, None)
        for run_id in arm_runs.values():
            _progress.pop(run_id, None)
            _point_slots.pop(run_id, None)
    arms = _merged(arms)
    trained, reused = sum(a["trained"] for a in arms), sum(a["reused"] for a in arms)
    skipped = sum(1 for arm in pruned for p in plan[arm] if p.size not in rungs[0])
    tracking.log_metrics(uri, study_run, {"points_trained": trained, "points_reused": reused, "points_pruned": skipped})
    busy = _busy(study, uri, study_run, arm_runs)
    tracking.end_run(uri, study_run, ok=not failed, reason=f"arms failed: {', '.join(failed)}" if failed else None)
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)}; finished points are kept in MLflow (study run "
                           f"{study_run}); run the study again to compute only what is missing")
    log.info("points trained: %d, reused from earlier runs: %d", trained, reused)
    return {"study_run_id": study_run, "tracking_uri": uri, "points_trained": trained, "points_reused": reused,
            "busy": busy, "points_pruned": skipped, "pruned": pruned, "arms": arms, **result}
