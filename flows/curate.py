"""The curate flow: validate, then one subflow per arm (concurrently), then rank from MLflow.

    study.yaml -> prepare_inputs -> prepare_model -> study run (+ one queued arm run per arm)
               -> evaluate_arm(control), evaluate_arm(D1) ... evaluate_arm(Dn)
                    in-process (threads + worker processes), or one flow run each on a work pool (run_deployment)
                    per size and seed: build_mixture -> (finished run with this fingerprint? reuse it)
                                       -> train_adapter -> score_benchmark -> log_point
               -> rank_study (reads MLflow only) -> ranking.csv / ranking.md / scaling.png / Prefect artifact
"""

import threading

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import resume, steps, tracking, workers
from tasks.inputs import Arm, Inputs
from tasks.study import Study

_slots: dict[str, threading.Semaphore] = {}  # study run id -> the study's cap on arms in flight on a work pool


@flow(name="evaluate-arm", flow_run_name="{study.name}/{arm_name}")
def evaluate_arm(study: Study, arm_name: str, arm_run_id: str, tracking_uri: str,
                 inputs: Inputs | None = None, model_dir: str | None = None) -> dict:
    """One arm: a point per (size, seed) — mix, train, score, log — under the arm's MLflow run. A point whose
    fingerprint already has a finished run is reused, not trained. On a worker (inputs=None) it prepares its own
    copy of the data and model and checks they match what the parent validated."""
    log = get_run_logger()
    uri = tracking_uri
    trained_n = reused_n = 0
    try:  # any failure, preparation on a worker included, ends the arm run FAILED with its reason
        if inputs is None:
            inputs = steps.prepare_inputs(study)
            model_dir = steps.prepare_model(study)
        arm = steps.arm_of(inputs, arm_name, uri, arm_run_id)
        tracking.claim_run(uri, arm_run_id)
        exp = tracking.MlflowClient(uri).get_run(arm_run_id).info.experiment_id
        grid = [(size, seed) for size in study.mixture.sizes for seed in study.seed_list]
        per_size: dict[int, list[dict]] = {}
        for k, (size, seed) in enumerate(grid, 1):
            mix = steps.build_mixture(study, inputs, arm, size, seed)
            point_fp = resume.point_fingerprint(study, mix["fingerprint"], inputs.benchmark_fingerprint, seed)
            name = f"{arm.name}/size={size}/seed={seed}"
            tags = {"curate.arm": arm.name, "curate.study": study.name, "curate.point_fingerprint": point_fp,
                    "curate.mixture_fingerprint": mix["fingerprint"]}
            done = tracking.finished_points(uri, exp, [point_fp]).get(point_fp)
            if done is not None:
                result = resume.reuse_point(uri, done, exp, arm_run_id, name, tags)
                reused_n += 1
                log.info("[%s] point %d/%d size=%d seed=%d: reused finished run %s (same fingerprint)",
                         arm.name, k, len(grid), size, seed, done.info.run_id[:8])
            else:
                result = _train_point(study, inputs, arm, model_dir, uri, exp, arm_run_id, mix, size, seed, name, tags)
                trained_n += 1
                log.info("[%s] point %d/%d size=%d seed=%d: %s=%.4f  train %.1fs (%.0f tok/s), eval %.1fs",
                         arm.name, k, len(grid), size, seed, study.primary, result[study.primary],
                         result["train_seconds"], result["train_tokens_per_s"], result["eval_seconds"])
            per_size.setdefault(size, []).append(result)
            if len(per_size[size]) == study.seeds:
                steps.log_arm_curve(study, uri, arm_run_id, size, per_size[size])
    except BaseException as err:
        tracking.end_run(uri, arm_run_id, ok=False, reason=f"{type(err).__name__}: {err}"[:500])
        raise
    tracking.log_metrics(uri, arm_run_id, {"points_trained": trained_n, "points_reused": reused_n})
    tracking.end_run(uri, arm_run_id)
    return {"arm": arm_name, "arm_run_id": arm_run_id, "trained": trained_n, "reused": reused_n}


def _train_point(study, inputs, arm, model_dir, uri, exp, arm_run_id, mix, size, seed, name, tags) -> dict:
    params = {"arm": arm.name, "candidate": arm.name, "size": size, "seed": seed,
              "d0_share": 1.0 if arm.data is None else study.mixture.d0_share, "model": study.model.source,
              "from_candidate": mix["from_candidate"], **study.training.model_dump(exclude={"lora"}),
              **{f"lora_{k}": v for k, v in study.training.lora.model_dump().items()}}
    point_run = tracking.start_run(uri, exp, name, parent=arm_run_id, tags=tags, params=params)
    try:
        trained = steps.train_adapter(study, inputs, mix["path"], model_dir, seed)
        scored = steps.score_benchmark(study, inputs, model_dir, trained["adapter_dir"])
        return steps.log_point(study, uri, point_run, trained, scored)
    except BaseException as err:
        tracking.end_run(uri, point_run, ok=False, reason=f"{type(err).__name__}: {err}"[:500])
        raise


@task(name="run-arm")
def run_arm(study: Study, inputs: Inputs, arm: Arm, model_dir: str, uri: str, study_run_id: str, arm_run_id: str,
            deployment: str | None) -> dict:
    """One arm, from a thread of the parent's task runner: in-process, or as a flow run of the arm deployment on
    the work pool (at most `study.concurrency` of this study's arms in flight). Results are read from MLflow."""
    if deployment is None:
        return evaluate_arm(study, arm.name, arm_run_id, uri, inputs, model_dir)
    from prefect.deployments import run_deployment

    try:
        with _slots[study_run_id]:
            child = run_deployment(deployment, as_subflow=True, flow_run_name=f"{study.name}/{arm.name}",
                                   parameters={"study": study.model_dump(mode="json"), "arm_name": arm.name,
                                               "arm_run_id": arm_run_id, "tracking_uri": uri},
                                   poll_interval=2)
    except BaseException as err:  # the server went away, or we were cancelled: the queued arm must not linger
        tracking.fail_unfinished(uri, arm_run_id, f"dispatch failed: {type(err).__name__}: {err}"[:500])
        raise
    run = tracking.MlflowClient(uri).get_run(arm_run_id)
    if not child.state.is_completed() or run.info.status != "FINISHED":
        lost = tracking.fail_unfinished(uri, arm_run_id, f"arm flow run '{child.name}' ended {child.state.name}")
        raise RuntimeError(f"arm '{arm.name}': flow run '{child.name}' ended {child.state.name}"
                           f"{f'; {len(lost)} unfinished run(s) marked FAILED' if lost else ''}")
    m = run.data.metrics
    return {"arm": arm.name, "arm_run_id": arm_run_id, "trained": int(m.get("points_trained", 0)),
            "reused": int(m.get("points_reused", 0)), "flow_run": child.name}


@flow(name="curate", flow_run_name="{study.name}", task_runner=ThreadPoolTaskRunner(max_workers=32))
def curate(study: Study) -> dict:
    """Which candidate, mixed into D0, helps most at the target size? Returns the study run id and the ranking."""
    log = get_run_logger()
    inputs = steps.prepare_inputs(study)  # every problem at once, before any compute
    deployment = steps.arm_deployment(study) if study.pool else None
    model_dir = steps.prepare_model(study)
    inputs = steps.profile_arms(study, inputs, model_dir)
    uri = tracking.tracking_uri(study.output_path)
    study_run = steps.open_study_run(study, inputs, uri)
    exp = tracking.MlflowClient(uri).get_run(study_run).info.experiment_id
    orphans = resume.fail_orphans(uri, exp)
    if orphans:
        log.warning("marked %d run(s) of an earlier, dead study run FAILED (their process or flow run is gone)", len(orphans))
    arm_runs = {arm.name: steps.open_arm_run(study, arm, uri, study_run) for arm in inputs.arms}
    todo = steps.plan_points(study, inputs, uri, exp)
    log.info("MLflow: %s  study run %s  (%d arms x %d sizes x %d seeds; %d points to train, %d finished before and "
             "reused; %s, %d arms at once)", uri, study_run, len(inputs.arms), len(study.mixture.sizes), study.seeds,
             sum(todo.values()), len(inputs.arms) * len(study.mixture.sizes) * study.seeds - sum(todo.values()),
             f"arms on work pool '{study.pool}' ({deployment})" if deployment else "in-process", study.concurrency)
    _slots[study_run] = threading.Semaphore(study.concurrency)
    try:
        # an arm with nothing left to train only copies runs: done here, not sent to a GPU worker
        futures = [run_arm.submit(study, inputs, arm, model_dir, uri, study_run, arm_runs[arm.name],
                                  deployment if todo[arm.name] else None) for arm in inputs.arms]
        states = [f.wait() or f.state for f in futures]
        failed = [arm.name for arm, s in zip(inputs.arms, states) if not s.is_completed()]
        arms = [s.result() for s in states if s.is_completed()]
        result = steps.rank_study(study, uri, study_run)  # ranks what finished, even if an arm failed
    finally:
        workers.shutdown()
        _slots.pop(study_run, None)
    trained, reused = sum(a["trained"] for a in arms), sum(a["reused"] for a in arms)
    tracking.log_metrics(uri, study_run, {"points_trained": trained, "points_reused": reused})
    tracking.end_run(uri, study_run, ok=not failed, reason=f"arms failed: {', '.join(failed)}" if failed else None)
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)}; finished points are kept in MLflow (study run "
                           f"{study_run}); run the study again to compute only what is missing")
    log.info("points trained: %d, reused from earlier runs: %d", trained, reused)
    return {"study_run_id": study_run, "tracking_uri": uri, "points_trained": trained, "points_reused": reused,
            "arms": arms, **result}
