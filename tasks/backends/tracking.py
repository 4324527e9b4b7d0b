"""Every MLflow call of the workbench: the only module that imports mlflow. Runs are addressed by id (the fluent
active run is thread-local). Callers pass who owns a run (host, pid, Prefect flow run) as tags; this module does not
ask Prefect."""

import json
import os
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from tasks.common import code_version
from tasks.schema.study import Study

StoreError = MlflowException  # what a missing run or an unreachable store raises; the CLI names the store

# tags
PARENT, NOTE, RUN_NAME = "mlflow.parentRunId", "mlflow.note.content", "mlflow.runName"  # NOTE: the UI's description
STUDY, ARM, LICENSE = "curate.study", "curate.arm", "curate.license"
STUDY_FP, CATALOG_FP, CODE = "curate.study_fingerprint", "curate.catalog_fingerprint", "curate.code_version"
POINT_FP, MIXTURE_FP = "curate.point_fingerprint", "curate.mixture_fingerprint"
REUSED, ADAPTER_URI, NO_PREDICTIONS = "curate.reused_from", "curate.adapter_uri", "curate.predictions_missing"
FAILURE, CLAIMED_MS, FLOW_RUN = "curate.failure", "curate.claimed_ms", "curate.prefect_flow_run_id"
HOST, PID = "curate.host", "curate.pid"
SIG = "sig"  # an arm run's significance vs the control (+, -, ~), a column of the ranking view
WARNINGS = "curate.warnings"  # what validation reported but did not refuse (remote code, skewed benchmark, D0 copies)
PRUNED = "curate.pruned_at"  # successive halving: the size after which the arm stopped (tasks.ops.pruning)
SCREEN, EXCLUDED = "curate.screen", "curate.excluded"  # a `curate screen` run (a child per entry); why not scored
BEST_ARM, BEST_CANDIDATE, RANKED_ON, METHOD = ("curate.best_arm", "curate.best_candidate", "curate.ranked_on",
                                               "curate.ranking_method")
# params beside the study's own fields (which are logged under their field paths: 'mixture.sizes', 'ranking.fit')
CONTEXT, BENCHMARK_ROWS = "inputs.task_context", "inputs.benchmark_rows"
CONTEXT_FILE, PARAM_MAX = "task_context.json", 6000  # MLflow keeps at most 6000 characters of a param
DATA_FP, ENTRY_FP = "data_fingerprint", "entry_fingerprint"
# artifacts
PREDICTIONS, ADAPTER = "predictions.jsonl", "adapter"


def tracking_uri(output_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set (team server), else a SQLite store under the study's output folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(output_dir).resolve() / 'mlflow.db'}"


def init_store(url: str, artifacts: str) -> None:
    """Create MLflow's tables once, before any server worker or client: concurrent first migrations crash."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(url, artifacts)


def open_experiment(uri: str, name: str, output_dir: Path) -> str:
    """Create the store (once, before any parallel work: concurrent SQLite migrations crash) and the experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # a tracking server stores (or proxies) artifacts itself; an embedded SQLite store keeps them beside it
    location = (Path(output_dir).resolve() / "mlartifacts").as_uri() if uri.startswith("sqlite:") else None
    return client.create_experiment(name, artifact_location=location)


def set_experiment_tags(uri: str, experiment_id: str, tags: dict[str, str]) -> None:
    client = MlflowClient(uri)
    for key, value in tags.items():
        client.set_experiment_tag(experiment_id, key, value)


def experiment_names(uri: str) -> list[str]:
    return sorted(e.name for e in MlflowClient(uri).search_experiments() if e.name != "Default")


def get_run(uri: str, run_id: str):
    return MlflowClient(uri).get_run(run_id)


def experiment_of(uri: str, run_id: str) -> str:
    return get_run(uri, run_id).info.experiment_id


def start_run(uri: str, experiment_id: str, name: str, parent: str | None = None, tags: dict | None = None,
              params: dict | None = None, queued: bool = False, owner: dict | None = None) -> str:
    """A new run (RUNNING, or SCHEDULED for queued=True) tagged with its owner (host, pid, flow run) and code."""
    client = MlflowClient(uri)
    tags = {**(owner or {}), **(tags or {}), CODE: code_version(), **({PARENT: parent} if parent else {})}
    run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    if params:
        log_params(uri, run.info.run_id, params)
    if queued:
        client.update_run(run.info.run_id, status="SCHEDULED")
    return run.info.run_id


def claim_run(uri: str, run_id: str, owner: dict) -> None:
    """A queued run starts here: RUNNING, owned by this process and flow run."""
    MlflowClient(uri).update_run(run_id, status="RUNNING")
    set_tags(uri, run_id, {**owner, CLAIMED_MS: int(time.time() * 1000)})


def log_params(uri: str, run_id: str, params: dict) -> None:
    items = [Param(k, str(v)[:PARAM_MAX]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        MlflowClient(uri).log_batch(run_id, params=items[i:i + 100])


def log_metrics(uri: str, run_id: str, metrics: dict, step: int = 0) -> None:
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


def end_run(uri: str, run_id: str, ok: bool = True, reason: str | None = None) -> None:
    if reason:
        set_tags(uri, run_id, {FAILURE: reason[:500]})
    MlflowClient(uri).set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED))


def fail_unfinished(uri: str, run_id: str, reason: str) -> list[str]:
    """Mark a run and every descendant still RUNNING or SCHEDULED as FAILED (their owner is gone); return their ids."""
    failed = []
    for child in children(uri, run_id):
        failed += fail_unfinished(uri, child.info.run_id, reason)
    if get_run(uri, run_id).info.status in ("RUNNING", "SCHEDULED"):
        end_run(uri, run_id, ok=False, reason=reason)
        failed.append(run_id)
    return failed


def unfinished_runs(uri: str, experiment_id: str) -> list:
    """Runs RUNNING or SCHEDULED in the experiment (their owner may be gone)."""
    client = MlflowClient(uri)
    return [r for status in ("RUNNING", "SCHEDULED")
            for r in client.search_runs([experiment_id], f"attributes.status = '{status}'", max_results=10000)]


def finished_points(uri: str, experiment_id: str, fingerprints: list[str]) -> dict[str, object]:
    """Finished point runs in the experiment by point fingerprint (the original run, not a copy, when both exist)."""
    client, found = MlflowClient(uri), {}
    for fp in dict.fromkeys(fingerprints):  # tag values cannot be matched with IN: one equality query each
        runs = client.search_runs([experiment_id], f"tags.`{POINT_FP}` = '{fp}' and attributes.status = 'FINISHED'",
                                  max_results=100)
        originals = [r for r in runs if REUSED not in r.data.tags]
        if runs:
            found[fp] = (originals or runs)[0]
    return found


def children(uri: str, run_id: str, finished_only: bool = False) -> list:
    client = MlflowClient(uri)
    query = f"tags.`{PARENT}` = '{run_id}'" + (" and attributes.status = 'FINISHED'" if finished_only else "")
    return client.search_runs([experiment_of(uri, run_id)], query, max_results=10000)


def latest_study_run(uri: str, name: str, since_ms: int = 0, trained: bool = False):
    """The newest study run of the experiment `name` (started at or after since_ms; trained=True: one that trained
    at least one point itself), or None."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return None
    query = f"tags.`{CATALOG_FP}` != '' and attributes.start_time >= {since_ms}"
    runs = client.search_runs([exp.experiment_id], query + (" and metrics.points_trained > 0" if trained else ""),
                              max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def tagged_runs(uri: str, tag: str) -> list:
    """Every run of every experiment in the store that has the tag, newest first."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, f"tags.`{tag}` != ''", max_results=10000, order_by=["attributes.start_time DESC"])


def copy_artifact(uri: str, source_run: str, name: str, target_run: str) -> str | None:
    """Copy one artifact file between runs; the reason when it cannot be read (None when copied)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            log_artifact(uri, target_run, MlflowClient(uri).download_artifacts(source_run, name, tmp))
        except (MlflowException, OSError) as err:
            return f"{type(err).__name__}: {err}"[:250]
    return None


def download(uri: str, artifact_uri: str, folder: Path) -> Path:
    """An artifact ('runs:/RUN/path') into folder."""
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(artifact_uri, dst_path=str(folder), tracking_uri=uri))


def read_predictions(uri: str, run_id: str, artifact: str = PREDICTIONS) -> list[dict] | None:
    """A point's per-example predictions, or another JSONL artifact of a run (None when it is missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient(uri).download_artifacts(run_id, artifact, tmp)
        except (MlflowException, OSError):
            return None
        return [json.loads(line) for line in open(path)]


# ---- the study's options as params, written and read back through the pydantic models ------------------------------
def model_params(model: BaseModel, prefix: str = "") -> dict[str, str]:
    """A pydantic model as flat params: nested models by dotted path, every value JSON ('mixture.sizes': '[24, 48]')."""
    dumped = model.model_dump(mode="json")
    out = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(model_params(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = json.dumps(dumped[name])
    return out


def study_from_params(params: dict[str, str]) -> Study:
    """The Study a study run was logged with (model_params), validated again."""
    tree: dict = {}
    for key, raw in params.items():
        if key.startswith("inputs."):
            continue
        *path, leaf = key.split(".")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        try:
            node[leaf] = json.loads(raw)
        except ValueError:
            node[leaf] = raw
    return Study.model_validate(tree)


def context_param(context: dict) -> str:
    """The task context as a param, or a pointer to its artifact when it is longer than a param may be."""
    text = json.dumps(context)
    return text if len(text) <= PARAM_MAX else json.dumps({"artifact": CONTEXT_FILE})


def log_context(uri: str, run_id: str, context: dict, folder: Path) -> None:
    """Artifacts of the context: the whole context when it does not fit a param, and fewshot.jsonl (the exemplars
    every benchmark prompt showed)."""
    if len(json.dumps(context)) > PARAM_MAX:
        (folder / CONTEXT_FILE).write_text(json.dumps(context))
        log_artifact(uri, run_id, folder / CONTEXT_FILE)
    if context.get("fewshot"):
        path = folder / "fewshot.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in context["fewshot"]))
        log_artifact(uri, run_id, path)


def task_context(uri: str, run_id: str, raw: str) -> dict:
    context = json.loads(raw)
    if set(context) == {"artifact"}:
        with tempfile.TemporaryDirectory() as tmp:
            return json.loads(Path(MlflowClient(uri).download_artifacts(run_id, context["artifact"], tmp)).read_text())
    return context


def read_study(uri: str, study_run_id: str, examples: bool = True) -> dict:
    """Everything `rank` needs, from MLflow alone: the study, its task context, each arm's license and profile,
    every finished point (arm, size, seed, metrics; per-example predictions when examples=True)."""
    run = get_run(uri, study_run_id)
    params = dict(run.data.params)
    licenses, profiles, points, pruned, arm_runs = {}, {}, [], {}, {}
    for arm in children(uri, study_run_id):
        name = arm.data.tags.get(ARM, arm.info.run_name)
        arm_runs[name] = arm.info.run_id
        licenses[name] = arm.data.tags.get(LICENSE, "")
        if PRUNED in arm.data.tags:
            m = arm.data.metrics
            pruned[name] = {"size": int(arm.data.tags[PRUNED]), "leader": arm.data.tags.get(PRUNED + "_leader", ""),
                            "delta": m.get("pruned_delta_vs_leader"), "lo": m.get("pruned_delta_lo"),
                            "hi": m.get("pruned_delta_hi")}
        profiles[name] = {k.removeprefix("profile."): v for k, v in arm.data.params.items() if k.startswith("profile.")}
        for p in children(uri, arm.info.run_id, finished_only=True):
            points.append({"arm": name, "size": int(p.data.params["size"]), "seed": int(p.data.params["seed"]),
                           "metrics": dict(p.data.metrics), "run_id": p.info.run_id, "reused": REUSED in p.data.tags,
                           "adapter": p.data.tags.get(ADAPTER_URI, f"runs:/{p.info.run_id}/{ADAPTER}"),
                           "records": read_predictions(uri, p.info.run_id) if examples else None})
    return {"study": study_from_params(params), "context": task_context(uri, study_run_id, params.get(CONTEXT, "{}")),
            "licenses": licenses, "profiles": profiles, "points": points, "pruned": pruned, "arm_runs": arm_runs,
            "experiment_id": run.info.experiment_id, "run": run}
