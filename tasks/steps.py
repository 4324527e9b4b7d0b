"""The Prefect tasks of a study: small, typed, passing paths and run ids, never datasets or models.
Heavy work runs in worker processes (tasks.workers); MLflow calls go through tasks.tracking."""

import threading
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from tasks import mixing, tracking, workers
from tasks.data import fingerprint, read_jsonl, write_jsonl
from tasks.evaluation import score_adapter
from tasks.inputs import Arm, Inputs, check_study
from tasks.models import resolve_model
from tasks.report import rank_from_mlflow
from tasks.study import Study
from tasks.training import train_adapter as _train

_done = {"lock": threading.Lock(), "n": 0}


@task
def prepare_inputs(study: Study) -> Inputs:
    """Validate the study, catalog, data and model, and write the normalized data files."""
    return check_study(study, write=True)


@task(retries=1)
def prepare_model(study: Study) -> str:
    """Resolve the model to a local folder (GGUF converted once into the cache)."""
    return str(workers.run(1, study.training.threads, resolve_model, study.model))


@task
def open_study_run(study: Study, inputs: Inputs, uri: str, flow_run_id: str) -> str:
    """Create the experiment and the study run; log the resolved spec."""
    exp = tracking.open_experiment(uri, study.name, study.output_path)
    params = {"task": study.task, "model": study.model.source, "sizes": study.mixture.sizes,
              "d0_share": study.mixture.d0_share, "target_size": study.target_size, "seed": study.seed,
              "primary_metric": study.primary, "candidates": ",".join(study.candidates),
              "benchmark_rows": len(read_jsonl(Path(inputs.benchmark)))}
    tags = {"curate.study": study.name, "curate.study_fingerprint": fingerprint(study.model_dump()),
            "curate.catalog_fingerprint": fingerprint([a.model_dump() for a in inputs.arms]),
            "curate.prefect_flow_run_id": flow_run_id}
    run_id = tracking.start_run(uri, exp, study.name, tags=tags, params=params)
    spec = study.output_path / "study.resolved.json"
    spec.write_text(study.model_dump_json(indent=2))
    tracking.log_artifact(uri, run_id, spec)
    return run_id


@task
def open_arm_run(study: Study, arm: Arm, uri: str, study_run_id: str) -> str:
    """The arm's MLflow run, a child of the study run."""
    exp = tracking.MlflowClient(uri).get_run(study_run_id).info.experiment_id
    return tracking.start_run(uri, exp, arm.name, parent=study_run_id,
                              tags={"curate.arm": arm.name, "curate.license": arm.license, "curate.study": study.name},
                              params={"arm": arm.name, "rows": arm.rows, "data_fingerprint": arm.data_fingerprint,
                                      "catalog_version": arm.catalog_version})


@task
def build_mixture(study: Study, inputs: Inputs, arm: Arm, size: int, seed: int) -> dict:
    """Write the D0 ⊕ Dk mixture of one size (D0 alone for the control); return its path and fingerprint."""
    dk = read_jsonl(Path(arm.data)) if arm.data else None
    rows = mixing.mixture(read_jsonl(Path(inputs.d0)), dk, size, study.mixture.d0_share, seed)
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
def log_point(study: Study, uri: str, point_run_id: str, arm_run_id: str, size: int, trained: dict, scored: dict) -> dict:
    """Metrics and artifacts of a finished point; the arm run gets the same metrics at step = size."""
    metrics = {k: v for k, v in scored["metrics"].items() if k in study.metric_names or k == "n_examples"}
    timing = {"train_seconds": trained["train_seconds"], "eval_seconds": scored["eval_seconds"],
              "train_tokens_per_s": trained["train_tokens_per_s"], "train_loss": trained["train_loss"]}
    tracking.log_metrics(uri, point_run_id, {**metrics, **timing})
    tracking.log_metrics(uri, arm_run_id, {**metrics, "train_loss": trained["train_loss"]}, step=size)
    tracking.log_artifact(uri, point_run_id, trained["adapter_dir"], "adapter")
    tracking.log_artifact(uri, point_run_id, scored["predictions"])
    tracking.end_run(uri, point_run_id)
    with _done["lock"]:
        _done["n"] += 1
    return {**metrics, **timing}


@task
def rank_study(study: Study, uri: str, study_run_id: str) -> dict:
    """Fit and rank from MLflow alone; publish the table as a Prefect artifact too."""
    result = rank_from_mlflow(uri, study_run_id, study.output_path / "ranking")
    create_table_artifact(table=result["rows"], key=f"ranking-{study.name.lower().replace('_', '-').replace('.', '-')}",
                          description=f"{study.name}: {result['metric']} predicted at {result['target_size']}")
    get_run_logger().info("Ranking (%s at %d):\n%s", result["metric"], result["target_size"], result["markdown"])
    return result


def points_done() -> int:
    return _done["n"]
