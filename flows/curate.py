"""The curate flow: validate, then one subflow per arm (concurrently), then rank from MLflow.

    study.yaml -> prepare_inputs -> prepare_model -> study run
               -> evaluate_arm(control), evaluate_arm(D1) ... evaluate_arm(Dn)    (one MLflow arm run each)
                    per size and seed: build_mixture -> train_adapter -> score_benchmark -> log_point
               -> rank_study (reads MLflow only) -> ranking.csv / ranking.md / scaling.png
"""

from prefect import flow, get_run_logger, runtime, task
from prefect.task_runners import ThreadPoolTaskRunner

from tasks import steps, tracking, workers
from tasks.data import fingerprint
from tasks.inputs import Arm, Inputs
from tasks.study import Study


@flow(name="evaluate-arm", flow_run_name="{study.name}/{arm.name}")
def evaluate_arm(study: Study, inputs: Inputs, arm: Arm, model_dir: str, uri: str, study_run_id: str) -> str:
    """One arm: a point per (size, seed) — mix, train, score, log — under the arm's MLflow run."""
    log = get_run_logger()
    arm_run = steps.open_arm_run(study, arm, uri, study_run_id)
    exp = tracking.MlflowClient(uri).get_run(arm_run).info.experiment_id
    try:
        grid = [(size, seed) for size in study.mixture.sizes for seed in study.seed_list]
        per_size: dict[int, list[dict]] = {}
        for k, (size, seed) in enumerate(grid, 1):
            mix = steps.build_mixture(study, inputs, arm, size, seed)
            point_fp = fingerprint([mix["fingerprint"], inputs.benchmark_fingerprint, study.model.model_dump(),
                                    study.training.model_dump(), seed, tracking.code_version()])
            params = {"arm": arm.name, "candidate": arm.name, "size": size, "seed": seed,
                      "d0_share": 1.0 if arm.data is None else study.mixture.d0_share, "model": study.model.source,
                      "from_candidate": mix["from_candidate"], **study.training.model_dump(exclude={"lora"}),
                      **{f"lora_{k2}": v for k2, v in study.training.lora.model_dump().items()}}
            point_run = tracking.start_run(uri, exp, f"{arm.name}/size={size}/seed={seed}", parent=arm_run,
                                           tags={"curate.arm": arm.name, "curate.study": study.name,
                                                 "curate.point_fingerprint": point_fp,
                                                 "curate.mixture_fingerprint": mix["fingerprint"]}, params=params)
            try:
                trained = steps.train_adapter(study, inputs, mix["path"], model_dir, seed)
                scored = steps.score_benchmark(study, inputs, model_dir, trained["adapter_dir"])
                result = steps.log_point(study, uri, point_run, trained, scored)
            except BaseException:
                tracking.end_run(uri, point_run, ok=False)
                raise
            log.info("[%s] point %d/%d size=%d seed=%d: %s=%.4f  train %.1fs (%.0f tok/s), eval %.1fs  | %d points done",
                     arm.name, k, len(grid), size, seed, study.primary, result[study.primary],
                     result["train_seconds"], result["train_tokens_per_s"], result["eval_seconds"], steps.points_done())
            per_size.setdefault(size, []).append(result)
            if len(per_size[size]) == study.seeds:
                steps.log_arm_curve(study, uri, arm_run, size, per_size[size])
    except BaseException:
        tracking.end_run(uri, arm_run, ok=False)
        raise
    tracking.end_run(uri, arm_run)
    return arm_run


@task(name="run-arm")
def run_arm(study: Study, inputs: Inputs, arm: Arm, model_dir: str, uri: str, study_run_id: str) -> str:
    """Runs the arm subflow from a thread of the parent's task runner, so arms proceed concurrently."""
    return evaluate_arm(study, inputs, arm, model_dir, uri, study_run_id)


@flow(name="curate", flow_run_name="{study.name}", task_runner=ThreadPoolTaskRunner(max_workers=16))
def curate(study: Study) -> dict:
    """Which candidate, mixed into D0, helps most at the target size? Returns the study run id and the ranking."""
    log = get_run_logger()
    inputs = steps.prepare_inputs(study)  # every problem at once, before any compute
    model_dir = steps.prepare_model(study)
    inputs = steps.profile_arms(study, inputs, model_dir)
    uri = tracking.tracking_uri(study.output_path)
    study_run = steps.open_study_run(study, inputs, uri, str(runtime.flow_run.id))
    log.info("MLflow: %s  study run %s  (%d arms x %d sizes, %d at once)", uri, study_run, len(inputs.arms),
             len(study.mixture.sizes), study.concurrency)
    try:
        futures = [run_arm.submit(study, inputs, arm, model_dir, uri, study_run) for arm in inputs.arms]
        states = [f.wait() or f.state for f in futures]
        failed = [arm.name for arm, s in zip(inputs.arms, states) if not s.is_completed()]
        result = steps.rank_study(study, uri, study_run)  # ranks what finished, even if an arm failed
    finally:
        workers.shutdown()
    tracking.end_run(uri, study_run, ok=not failed)
    if failed:
        raise RuntimeError(f"arms failed: {', '.join(failed)}; finished points are kept in MLflow (study run {study_run})")
    return {"study_run_id": study_run, "tracking_uri": uri, **result}
