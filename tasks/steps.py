"""The Prefect tasks of a study: small, typed, passing paths and run ids, never datasets or models.
Heavy work runs in worker processes (tasks.ops.workers); MLflow calls go through tasks.backends.tracking."""

import json
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_progress_artifact, create_table_artifact
from pydantic import BaseModel

from tasks import tasktypes
from tasks.backends import mlflowui, tracking
from tasks.backends.data import read_jsonl, write_jsonl
from tasks.backends.evaluation import score_adapter
from tasks.backends.models import resolve_model
from tasks.backends.report import rank_from_mlflow
from tasks.backends.training import train_adapter as _train
from tasks.common import CONTROL, fingerprint
from tasks.core import mixing
from tasks.errors import StudyInvalid
from tasks.ops import resume, workers
from tasks.schema.study import Study
from tasks.ops.validate import Arm, Inputs, check_study, read_prepared


class PointPlan(BaseModel):
    """One point of an arm, planned once by the parent: its mixture (written once) and its fingerprints."""
    size: int
    seed: int
    mixture: str  # path of the mixture's train.jsonl
    mixture_fingerprint: str
    fingerprint: str  # the point fingerprint: mixture, benchmark, model, preset, seed, code version
    from_candidate: int
    done_run_id: str | None = None  # a finished run with this fingerprint: reused, not trained


@task
def prepare_inputs(study: Study) -> Inputs:
    """The inputs the CLI validated (read back), or — launched from a deployment, or on a worker that cannot see the
    parent's files — validate the study, catalog, data and model here and write the normalized data files."""
    return read_prepared(study) or check_study(study, write=True)


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


@task(retries=1)
def prepare_model(study: Study) -> str:
    """Resolve the model to a local folder (GGUF converted once into the cache)."""
    return str(workers.run(study.concurrency, study.training.threads, resolve_model, study.model))


@task
def profile_arms(study: Study, inputs: Inputs, model_dir: str) -> Inputs:
    """Add token-length statistics (with the study's tokenizer) to each arm's data profile."""
    import numpy as np
    from transformers import AutoTokenizer

    kind = tasktypes.get(study.task)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=study.model.trust_remote_code)
    for arm in inputs.arms:
        rows = read_jsonl(Path(arm.data or inputs.d0))
        lengths = np.array([len(ids) for ids in tokenizer([kind.text(r) for r in rows]).input_ids])
        arm.profile.update({"tokens_mean": round(float(lengths.mean()), 1), "tokens_p50": int(np.percentile(lengths, 50)),
                            "tokens_p90": int(np.percentile(lengths, 90)), "tokens_max": int(lengths.max())})
    return inputs


@task
def open_study_run(study: Study, inputs: Inputs, uri: str) -> str:
    """Create the experiment and the study run: the study's fields as params, the resolved spec as an artifact."""
    exp = tracking.open_experiment(uri, study.name, study.output_path)
    params = {**tracking.model_params(study), tracking.CONTEXT: tracking.context_param(inputs.context),
              tracking.BENCHMARK_ROWS: len(read_jsonl(Path(inputs.benchmark)))}
    tags = {tracking.STUDY: study.name, tracking.STUDY_FP: fingerprint(study.model_dump(mode="json")),
            tracking.CATALOG_FP: fingerprint([a.model_dump() for a in inputs.arms]),
            **({tracking.WARNINGS: "\n".join(inputs.warnings)[:5000]} if inputs.warnings else {})}
    run_id = tracking.start_run(uri, exp, study.name, tags=tags, params=params, owner=resume.owner_tags())
    tracking.log_metrics(uri, run_id, {f"d0_contamination_{k}": v for k, v in inputs.d0_contamination.items()})
    spec = study.output_path / "study.resolved.json"
    spec.write_text(study.model_dump_json(indent=2))
    tracking.log_artifact(uri, run_id, spec)
    tracking.log_artifact(uri, run_id, Path(inputs.benchmark))  # benchmark.jsonl: failure mining reads it back
    tracking.log_context(uri, run_id, inputs.context, study.output_path / "data")
    return run_id


@task
def open_arm_run(study: Study, arm: Arm, uri: str, study_run_id: str) -> str:
    """The arm's MLflow run, a child of the study run: queued (SCHEDULED) until its subflow claims it."""
    profile = {f"profile.{k}": json.dumps(v) if isinstance(v, dict) else v for k, v in arm.profile.items()}
    run_id = tracking.start_run(uri, tracking.experiment_of(uri, study_run_id), arm.name, parent=study_run_id,
                                queued=True, owner=resume.owner_tags(),
                                tags={tracking.ARM: arm.name, tracking.LICENSE: arm.license, tracking.STUDY: study.name},
                                params={"arm": arm.name, "rows": arm.rows, tracking.DATA_FP: arm.data_fingerprint,
                                        tracking.ENTRY_FP: arm.entry_fingerprint, "catalog_version": arm.catalog_version,
                                        "points": len(study.arm_points(arm.name)), **profile})
    tracking.log_metrics(uri, run_id, {f"contamination_{k}": v for k, v in arm.contamination.items()})
    path = study.output_path / "profiles" / f"{arm.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"profile": arm.profile, "contamination": arm.contamination}, indent=2))
    tracking.log_artifact(uri, run_id, path)
    return run_id


def _mixture(study: Study, inputs: Inputs, arm: Arm, size: int, seed: int) -> list[dict]:
    dk = read_jsonl(Path(arm.data)) if arm.data else None
    return mixing.mixture(read_jsonl(Path(inputs.d0)), dk, size, study.mixture.d0_share, seed, d0_seed=study.seed)


def _mixture_path(study: Study, arm: str, size: int, seed: int) -> Path:
    return study.output_path / "points" / arm / f"size{size}-seed{seed}" / "train.jsonl"


@task
def plan_points(study: Study, inputs: Inputs, uri: str, experiment_id: str) -> dict[str, list[PointPlan]]:
    """Every point of every arm: its mixture written once (path + fingerprint), its point fingerprint, and the
    finished run that already has that fingerprint (reused instead of trained)."""
    plan: dict[str, list[PointPlan]] = {}
    for arm in inputs.arms:
        plan[arm.name] = []
        for size, seed in study.arm_points(arm.name):
            rows = _mixture(study, inputs, arm, size, seed)
            path = _mixture_path(study, arm.name, size, seed)
            write_jsonl(rows, path)
            mix_fp = fingerprint(rows)
            plan[arm.name].append(PointPlan(
                size=size, seed=seed, mixture=str(path), mixture_fingerprint=mix_fp,
                # the task context (labels, few-shot exemplars) decides prompts as much as the benchmark does
                fingerprint=resume.point_fingerprint(study, mix_fp, fingerprint([inputs.benchmark_fingerprint,
                                                                                 inputs.context]), seed),
                from_candidate=sum(r["origin"] == "candidate" for r in rows)))
    done = tracking.finished_points(uri, experiment_id, [p.fingerprint for ps in plan.values() for p in ps])
    for p in (p for ps in plan.values() for p in ps):
        p.done_run_id = done[p.fingerprint].info.run_id if p.fingerprint in done else None
    return plan


@task
def check_arm_files(study: Study, arm_name: str, points: list[PointPlan]) -> Inputs:
    """On the machine that trains the arm: the parent's prepared inputs and mixtures, checked by fingerprint only.
    A worker that cannot see the parent's files prepares its own copy, which must have the same fingerprints."""
    inputs = read_prepared(study)
    if inputs is None or not _files_match(inputs, points):
        inputs = check_study(study, write=True)
        arm = inputs.arm(arm_name)
        for p in points:
            if not Path(p.mixture).exists():
                write_jsonl(_mixture(study, inputs, arm, p.size, p.seed), Path(p.mixture))
        if not _files_match(inputs, points):
            raise StudyInvalid([f"arm '{arm_name}': this worker reads different data than the study run planned "
                                "(mixture or benchmark fingerprints differ); give workers the same catalog and data "
                                "(a shared folder or the same image)"])
    inputs.arm(arm_name)
    return inputs


def _files_match(inputs: Inputs, points: list[PointPlan]) -> bool:
    def fp(path: str) -> str | None:
        return fingerprint(read_jsonl(Path(path))) if Path(path).exists() else None

    return (fp(inputs.benchmark) == inputs.benchmark_fingerprint
            and all(fp(p.mixture) == p.mixture_fingerprint for p in points if p.done_run_id is None))


@task
def train_adapter(study: Study, inputs: Inputs, mixture_path: str, model_dir: str, seed: int) -> dict:
    """LoRA SFT on one mixture, in a worker process."""
    return workers.run(study.concurrency, study.training.threads, _train, mixture_path, model_dir, study.training,
                       study.task, inputs.context, seed, str(Path(mixture_path).parent), study.model.trust_remote_code)


@task
def score_benchmark(study: Study, inputs: Inputs, model_dir: str, adapter_dir: str) -> dict:
    """Evaluate one adapter on the benchmark, in a worker process (the worker keeps the base model loaded)."""
    return workers.run(study.concurrency, study.training.threads, score_adapter, model_dir, adapter_dir,
                       inputs.benchmark, study.task, inputs.context, study.training, str(Path(adapter_dir).parent),
                       study.model.trust_remote_code)


@task
def log_point(study: Study, uri: str, point_run_id: str, trained: dict, scored: dict) -> dict:
    """Metrics and artifacts of a finished point."""
    kind = tasktypes.get(study.task)
    logged = {*study.metric_names, *kind.diagnostics, "n_examples", "judge_unparsable"}
    metrics = {k: v for k, v in scored["metrics"].items() if k in logged}
    timing = {"train_seconds": trained["train_seconds"], "eval_seconds": scored["eval_seconds"],
              "train_tokens_per_s": trained["train_tokens_per_s"], "train_loss": trained["train_loss"]}
    tracking.log_metrics(uri, point_run_id, {**metrics, **timing})
    if trained.get("notes"):
        tracking.log_params(uri, point_run_id, trained["notes"])
    tracking.log_artifact(uri, point_run_id, trained["adapter_dir"], tracking.ADAPTER)
    tracking.log_artifact(uri, point_run_id, scored["predictions"])
    tracking.end_run(uri, point_run_id)
    return {**metrics, **timing}


@task
def log_arm_curve(study: Study, uri: str, arm_run_id: str, size: int, results: list[dict]) -> None:
    """The arm run gets each metric's mean over the size's seeds at step = size: MLflow charts draw the curve."""
    names = [*study.metric_names, "train_loss"]
    tracking.log_metrics(uri, arm_run_id, {k: sum(r[k] for r in results) / len(results) for k in names}, step=size)


@task
def prune_arms(study: Study, uri: str, study_run_id: str, size: int, arm_runs: dict[str, str]) -> dict[str, dict]:
    """Successive halving after the first rung (tasks.ops.pruning): the arms that train no larger size."""
    from tasks.ops import pruning

    decided = pruning.decide(study, uri, study_run_id, size)
    for arm, info in decided.items():
        pruning.mark(uri, arm_runs[arm], info)
        get_run_logger().info("[%s] pruned at size %d: %s %+.4f vs the leader %s, interval [%+.4f, %+.4f]; no larger "
                              "size is trained", arm, size, study.primary, info["delta"], info["leader"], info["lo"],
                              info["hi"])
    return decided


def artifact_key(study: Study, what: str) -> str:
    """A Prefect artifact key of this study (keys allow lowercase letters, digits and dashes)."""
    return f"{what}-{study.name.lower().replace('_', '-').replace('.', '-')}"


@task
def open_artifacts(study: Study, uri: str, study_run_id: str, experiment_id: str, total: int) -> str:
    """The experiment's saved view "ranking" (this study run's arms by rank); on the parent flow run a link to the
    study run in the MLflow UI, and a progress artifact (0 of `total` points; the flow advances it per point).
    Returns the progress artifact's id."""
    tracking.set_experiment_tags(uri, experiment_id, {**mlflowui.ranking_view(study_run_id, study.primary),
                                                      mlflowui.KIND_TAG: mlflowui.KIND})
    create_link_artifact(mlflowui.run_url(uri, experiment_id, study_run_id),
                         link_text=f"MLflow: {study.name}, study run {study_run_id[:8]}",
                         key=artifact_key(study, "mlflow"),
                         description=f"{study.name}: the study run in MLflow; its arms ranked: "
                         f"{mlflowui.ranking_url(uri, experiment_id)}" + ("" if uri.startswith("http") else
                         f" (start the UI first: mlflow ui --backend-store-uri {uri})"))
    return str(create_progress_artifact(0.0, key=artifact_key(study, "progress"),
                                        description=f"{study.name}: 0 of {total} points"))


@task
def rank_study(study: Study, uri: str, study_run_id: str) -> dict:
    """Fit and rank from MLflow alone; publish the table as a Prefect artifact too."""
    result = rank_from_mlflow(uri, study_run_id, study.output_path / "ranking")
    create_table_artifact(table=result["rows"], key=artifact_key(study, "ranking"),
                          description=f"{study.name}: {result['metric']} {result['ranked_at']}")
    get_run_logger().info("Ranking (%s):\n%s", result["method_note"], result["markdown"])
    return result


__all__ = ["CONTROL", "PointPlan"]
