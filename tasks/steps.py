"""The Prefect tasks of a study: small, typed, passing paths and run ids, never datasets or models.
Heavy work runs in worker processes (tasks.workers); MLflow calls go through tasks.tracking."""

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks import mixing, resume, tracking, workers
from tasks.data import fingerprint, read_jsonl, write_jsonl
from tasks.errors import StudyInvalid
from tasks.evaluation import score_adapter
from tasks.inputs import Arm, Inputs, check_study
from tasks.models import resolve_model
from tasks.report import rank_from_mlflow
from tasks.study import Study
from tasks.training import train_adapter as _train


@task
def prepare_inputs(study: Study) -> Inputs:
    """Validate the study, catalog, data and model, and write the normalized data files."""
    return check_study(study, write=True)


@task(retries=1)
def prepare_model(study: Study) -> str:
    """Resolve the model to a local folder (GGUF converted once into the cache)."""
    return str(workers.run(1, study.training.threads, resolve_model, study.model))


@task
def profile_arms(study: Study, inputs: Inputs, model_dir: str) -> Inputs:
    """Add token-length statistics (with the study's tokenizer) to each arm's data profile."""
    import numpy as np
    from transformers import AutoTokenizer

    from tasks.contamination import text_of

    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=study.model.trust_remote_code)
    for arm in inputs.arms:
        rows = read_jsonl(Path(arm.data or inputs.d0))
        lengths = np.array([len(ids) for ids in tokenizer([text_of(r, study.task) for r in rows]).input_ids])
        arm.profile.update({"tokens_mean": round(float(lengths.mean()), 1), "tokens_p50": int(np.percentile(lengths, 50)),
                            "tokens_p90": int(np.percentile(lengths, 90)), "tokens_max": int(lengths.max())})
    return inputs


@task
def open_study_run(study: Study, inputs: Inputs, uri: str) -> str:
    """Create the experiment and the study run; log the resolved spec."""
    exp = tracking.open_experiment(uri, study.name, study.output_path)
    params = {"task": study.task, "model": study.model.source, "sizes": study.mixture.sizes,
              "d0_share": study.mixture.d0_share, "target_size": study.target_size, "seed": study.seed,
              "seeds": study.seeds, "primary_metric": study.primary, "candidates": ",".join(study.candidates),
              "benchmark_rows": len(read_jsonl(Path(inputs.benchmark))), "labels": json.dumps(inputs.labels),
              **{f"ranking.{k}": v for k, v in study.ranking.model_dump().items()},
              **{f"contamination.{k}": v for k, v in study.contamination.model_dump().items()}}
    tags = {"curate.study": study.name, "curate.study_fingerprint": fingerprint(study.model_dump()),
            "curate.catalog_fingerprint": fingerprint([a.model_dump() for a in inputs.arms])}
    run_id = tracking.start_run(uri, exp, study.name, tags=tags, params=params)
    tracking.log_metrics(uri, run_id, {f"d0_contamination_{k}": v for k, v in inputs.d0_contamination.items()})
    spec = study.output_path / "study.resolved.json"
    spec.write_text(study.model_dump_json(indent=2))
    tracking.log_artifact(uri, run_id, spec)
    return run_id


@task
def open_arm_run(study: Study, arm: Arm, uri: str, study_run_id: str) -> str:
    """The arm's MLflow run, a child of the study run: queued (SCHEDULED) until its subflow claims it."""
    exp = tracking.MlflowClient(uri).get_run(study_run_id).info.experiment_id
    profile = {f"profile.{k}": json.dumps(v) if isinstance(v, dict) else v for k, v in arm.profile.items()}
    run_id = tracking.start_run(uri, exp, arm.name, parent=study_run_id, queued=True,
                                tags={"curate.arm": arm.name, "curate.license": arm.license, "curate.study": study.name},
                                params={"arm": arm.name, "rows": arm.rows, "data_fingerprint": arm.data_fingerprint,
                                        "entry_fingerprint": arm.entry_fingerprint,
                                        "catalog_version": arm.catalog_version,
                                        "points": len(study.mixture.sizes) * study.seeds, **profile})
    tracking.log_metrics(uri, run_id, {f"contamination_{k}": v for k, v in arm.contamination.items()})
    path = study.output_path / "profiles" / f"{arm.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": arm.profile, "contamination": arm.contamination}, indent=2))
    tracking.log_artifact(uri, run_id, path)
    return run_id


def arm_of(inputs: Inputs, name: str, uri: str, arm_run_id: str) -> Arm:
    """The arm this subflow runs, checked against what the parent validated (a worker reads its own copy of the data:
    a different catalog or data folder on the worker must not go unnoticed)."""
    arm = next((a for a in inputs.arms if a.name == name), None)
    if arm is None:
        raise StudyInvalid([f"arm '{name}' is not in this study (arms: {', '.join(a.name for a in inputs.arms)})"])
    expected = tracking.MlflowClient(uri).get_run(arm_run_id).data.params.get("data_fingerprint", "None")
    if expected != str(arm.data_fingerprint):
        raise StudyInvalid([f"arm '{name}': this worker reads different data (fingerprint {arm.data_fingerprint}) than "
                            f"the study run recorded ({expected}); give workers the same catalog and data (a shared "
                            "folder or the same image)"])
    return arm


@task
def plan_points(study: Study, inputs: Inputs, uri: str, experiment_id: str) -> dict[str, int]:
    """Points still to train per arm: those without a finished run of the same fingerprint (mixtures built in memory)."""
    d0 = read_jsonl(Path(inputs.d0))
    plan: dict[str, list[str]] = {}
    for arm in inputs.arms:
        dk = read_jsonl(Path(arm.data)) if arm.data else None
        plan[arm.name] = [resume.point_fingerprint(study, fingerprint(mixing.mixture(d0, dk, size, study.mixture.d0_share,
                                                                                      seed, d0_seed=study.seed)),
                                                   inputs.benchmark_fingerprint, seed)
                          for size in study.mixture.sizes for seed in study.seed_list]
    done = tracking.finished_points(uri, experiment_id, [fp for fps in plan.values() for fp in fps])
    return {arm: sum(fp not in done for fp in fps) for arm, fps in plan.items()}


@task
def arm_deployment(study: Study) -> str:
    """The arm deployment on the study's work pool, checked before any compute: the server, the pool, the
    deployment, and the study's cap on arms at once against the pool's concurrency limit."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, FlowFilter, FlowFilterName, WorkPoolFilter, WorkPoolFilterName
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    pool_name = study.pool
    if not PREFECT_API_URL.value():
        raise StudyInvalid([f"work_pool: '{pool_name}' needs a Prefect server; set PREFECT_API_URL "
                            "(`curate stack up` starts one and prints it), or drop work_pool to run in-process"])
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(pool_name)
        except ObjectNotFound:
            names = sorted(p.name for p in client.read_work_pools())
            raise StudyInvalid([f"work_pool: no work pool '{pool_name}' on {PREFECT_API_URL.value()}; pools: "
                                f"{', '.join(names) or '(none)'} (create one with `curate pools create`)"]) from None
        found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=["evaluate-arm"])),
                                        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool_name])),
                                        deployment_filter=DeploymentFilter())
    if not found:
        raise StudyInvalid([f"work_pool: no 'evaluate-arm' deployment on work pool '{pool_name}'; deploy it with "
                            f"`curate deploy --arm-pool {pool_name}` (deployments/prefect.yaml)"])
    limit = pool.concurrency_limit
    if limit is not None and study.concurrency > limit:
        raise StudyInvalid([f"concurrency: the study asks for {study.concurrency} arms at once but work pool "
                            f"'{pool_name}' allows {limit} (its concurrency limit, one per GPU); set concurrency: "
                            f"{limit} or lower, or raise the pool's limit: prefect work-pool set-concurrency-limit "
                            f"{pool_name} {study.concurrency}"])
    return f"evaluate-arm/{found[0].name}"


@task
def build_mixture(study: Study, inputs: Inputs, arm: Arm, size: int, seed: int) -> dict:
    """Write the D0 ⊕ Dk mixture of one size (D0 alone for the control); return its path and fingerprint."""
    dk = read_jsonl(Path(arm.data)) if arm.data else None
    rows = mixing.mixture(read_jsonl(Path(inputs.d0)), dk, size, study.mixture.d0_share, seed, d0_seed=study.seed)
    path = study.output_path / "points" / arm.name / f"size{size}-seed{seed}" / "train.jsonl"
    write_jsonl(rows, path)
    return {"path": str(path), "fingerprint": fingerprint(rows), "from_candidate": sum(r["origin"] == "candidate" for r in rows)}


@task
def train_adapter(study: Study, inputs: Inputs, mixture_path: str, model_dir: str, seed: int) -> dict:
    """LoRA SFT on one mixture, in a worker process."""
    return workers.run(study.concurrency, study.training.threads, _train, mixture_path, model_dir, study.training,
                       study.task, inputs.labels, seed, str(Path(mixture_path).parent), study.model.trust_remote_code)


@task
def score_benchmark(study: Study, inputs: Inputs, model_dir: str, adapter_dir: str) -> dict:
    """Evaluate one adapter on the benchmark, in a worker process."""
    return workers.run(study.concurrency, study.training.threads, score_adapter, model_dir, adapter_dir,
                       inputs.benchmark, study.task, inputs.labels, study.training, str(Path(adapter_dir).parent),
                       study.model.trust_remote_code)


@task
def log_point(study: Study, uri: str, point_run_id: str, trained: dict, scored: dict) -> dict:
    """Metrics and artifacts of a finished point."""
    metrics = {k: v for k, v in scored["metrics"].items() if k in study.metric_names or k == "n_examples"}
    timing = {"train_seconds": trained["train_seconds"], "eval_seconds": scored["eval_seconds"],
              "train_tokens_per_s": trained["train_tokens_per_s"], "train_loss": trained["train_loss"]}
    tracking.log_metrics(uri, point_run_id, {**metrics, **timing})
    tracking.log_artifact(uri, point_run_id, trained["adapter_dir"], "adapter")
    tracking.log_artifact(uri, point_run_id, scored["predictions"])
    tracking.end_run(uri, point_run_id)
    return {**metrics, **timing}


@task
def log_arm_curve(study: Study, uri: str, arm_run_id: str, size: int, results: list[dict]) -> None:
    """The arm run gets each metric's mean over the size's seeds at step = size: MLflow charts draw the curve."""
    names = [*study.metric_names, "train_loss"]
    tracking.log_metrics(uri, arm_run_id, {k: sum(r[k] for r in results) / len(results) for k in names}, step=size)


@task
def rank_study(study: Study, uri: str, study_run_id: str) -> dict:
    """Fit and rank from MLflow alone; publish the table as a Prefect artifact too."""
    result = rank_from_mlflow(uri, study_run_id, study.output_path / "ranking")
    create_table_artifact(table=result["rows"], key=f"ranking-{study.name.lower().replace('_', '-').replace('.', '-')}",
                          description=f"{study.name}: {result['metric']} predicted at {result['target_size']}")
    get_run_logger().info("Ranking (%s):\n%s", result["method_note"], result["markdown"])
    return result

