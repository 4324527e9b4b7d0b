"""The team stack for real, on loopback: Prefect server + MLflow server on the local PostgreSQL (started when down),
work pools and deployments from deployments/prefect.yaml, two process workers for the arms and one for the parent
flows. A tiny study through the deployments; a worker killed mid-study and the study resumed; a catalog entry
changed, `catalog.changed` emitted, and only that arm trained again."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import FIXTURES, run_tree as _tree, sentiment_entry, sentiment_study, write_catalog, write_study
from cli.main import app

pytestmark = [pytest.mark.integration, pytest.mark.team]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_available() -> bool:
    from tasks.ops.stack import StackConfig, ensure_postgres

    try:
        ensure_postgres(StackConfig(), log=lambda *_: None)
        return True
    except Exception:  # noqa: BLE001
        return False


class Team:
    """The running stack: env for subprocesses, workers by name, and helpers to read both servers."""

    def __init__(self, tmp: Path, cfg, env: dict):
        self.tmp, self.cfg, self.env, self.workers = tmp, cfg, env, {}

    def start_worker(self, name: str, pool: str, limit: int | None = None) -> None:
        """A process worker; `limit` = flow runs it takes at once (its machine's GPUs)."""
        log = open(self.tmp / f"worker-{name}.log", "ab")
        self.workers[name] = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--name", name, "--type", "process",
             *(["--limit", str(limit)] if limit else [])],
            env={**self.env, "CURATE_WORKER_NAME": name}, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp,
            start_new_session=True)

    def kill_worker(self, name: str) -> None:
        """The machine is gone: SIGKILL the worker and everything it started (flow runs, training processes)."""
        proc = psutil.Process(self.workers[name].pid)
        for p in [*proc.children(recursive=True), proc]:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        self.workers[name].wait()

    def mlflow(self) -> MlflowClient:
        return MlflowClient(self.cfg.mlflow_uri)

    def runs(self, experiment: str) -> list:
        exp = self.mlflow().get_experiment_by_name(experiment)
        return [] if exp is None else self.mlflow().search_runs([exp.experiment_id], max_results=1000)

    def flow_runs(self, flow_name: str) -> list:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        with get_client(sync_client=True) as client:
            return client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))


def _drop_stale_test_databases() -> None:
    """Databases left by an earlier test session that was killed before its teardown."""
    from tasks.ops.stack import StackConfig, _connect, drop_databases

    conn = _connect("postgresql://postgres@127.0.0.1:5432/postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'curate_test_%'")
        pids = {name.split("_")[2] for (name,) in cur.fetchall()}
    conn.close()
    for pid in pids:
        if pid.isdigit() and not psutil.pid_exists(int(pid)) or pid == str(os.getpid()):
            drop_databases(StackConfig(prefix=f"curate_test_{pid}"))


@pytest.fixture(scope="module")
def team(tmp_path_factory, tiny_model):
    if not _postgres_available():
        pytest.skip("no PostgreSQL reachable at 127.0.0.1:5432 (and none to start here)")
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from tasks.ops.stack import StackConfig, create_pool, down, drop_databases, up

    tmp = tmp_path_factory.mktemp("team")
    cfg = StackConfig(folder=tmp / "stack", prefix=f"curate_test_{os.getpid()}", prefect_port=_free_port(),
                      mlflow_port=_free_port())
    os.environ["CURATE_ZOMBIE_AFTER_S"] = "60"  # no heartbeat for 60 s (they come every 30 s): gone (default 90)
    _drop_stale_test_databases()
    env = {**os.environ, "PREFECT_API_URL": cfg.prefect_api, "MLFLOW_TRACKING_URI": cfg.mlflow_uri,
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "PREFECT_WORKER_QUERY_SECONDS": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    team = Team(tmp, cfg, env)
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    try:
        up(cfg, log=lambda *_: None)
        os.environ.update(PREFECT_API_URL=cfg.prefect_api, MLFLOW_TRACKING_URI=cfg.mlflow_uri)
        with temporary_settings({PREFECT_API_URL: cfg.prefect_api, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 30}):
            create_pool("t-control", "process", None)
            create_pool("t-arms", "process", 2)
            studies = tmp / "studies"
            studies.mkdir()
            result = CliRunner().invoke(app, ["deploy", "--arm-pool", "t-arms", "--control-pool", "t-control",
                                              "--studies", str(studies)], env=env)
            assert result.exit_code == 0, result.output
            for name, pool, limit in (("arm-a", "t-arms", 1), ("arm-b", "t-arms", 1), ("control", "t-control", None)):
                team.start_worker(name, pool, limit)  # two "GPU machines" with one GPU each
            yield team
    finally:
        for name in list(team.workers):
            try:
                team.kill_worker(name)
            except psutil.NoSuchProcess:
                pass
        down(cfg.folder)
        drop_databases(cfg)
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _study(team, model: Path, name: str, candidates: list[str], watched: bool = False, **over) -> Path:
    tmp = team.tmp / name
    catalog = team.tmp / "catalog"
    if not catalog.exists():
        write_catalog(catalog, {"clean": sentiment_entry("candidate_clean.jsonl"),
                                "flipped": sentiment_entry("candidate_flipped.jsonl")})
    study = sentiment_study(tmp, model, candidates, **{"name": name, "work_pool": "t-arms", "catalog_dir": str(catalog),
                                                       "ranking": {"bootstrap": 100}, **over,
                                                       "noise": {"control_replicates": 0}})  # where work runs, not its statistics
    return write_study(team.tmp / ("studies" if watched else ""), study, f"{name}.yaml")


@pytest.fixture(scope="module")
def deployed_study(team, tiny_model):
    """A tiny study (control + 2 candidates x 2 sizes) whose arms run as flow runs of evaluate-arm/arm."""
    path = _study(team, tiny_model, "team-study", ["clean", "flipped"], watched=True)
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(path)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output + repr(result.exception)
    print(f"\n[measure] tiny study through deployments (3 arms x 2 sizes, 2 workers): {seconds:.1f} s")
    return path, result.output, seconds


def test_study_through_deployments_lands_in_mlflow_server(team, deployed_study):
    path, output, _ = deployed_study
    studies, arms, points = _tree(team.runs("team-study"))
    assert len(studies) == 1 and len(arms) == 3 and len(points) == 6
    assert all(r.info.status == "FINISHED" for r in [*studies, *arms, *points])
    assert not (team.tmp / "team-study" / "out" / "mlflow.db").exists()  # nothing in a local store
    workers = {p.data.tags["curate.worker"] for p in points}
    assert workers == {"arm-a", "arm-b"}, workers  # arms executed by more than one worker
    flow_runs = team.flow_runs("evaluate-arm")
    assert sorted(fr.name for fr in flow_runs) == ["team-study/clean", "team-study/control", "team-study/flipped"]
    assert all(fr.state.is_completed() and fr.parent_task_run_id for fr in flow_runs)  # subflows of the parent
    client = team.mlflow()
    assert "ranking.csv" in {a.path for a in client.list_artifacts(studies[0].info.run_id)}
    assert "points trained: 6, reused from earlier runs: 0" in output
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:
        form = prefect.read_deployment_by_name("curate/study").parameter_openapi_schema
        artifacts = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ranking-team-study"])))
    assert {"task", "candidates", "mixture", "work_pool"} <= set(form["definitions"]["Study"]["properties"])  # UI form
    parent = next(fr for fr in team.flow_runs("curate") if fr.name == "team-study")
    assert [a.flow_run_id for a in artifacts] == [parent.id]  # the ranking table on the parent flow run


def test_same_study_in_process_for_comparison(team, deployed_study, tiny_model):
    """The same tiny study with the arms in-process (threads + worker processes), for the wall-time comparison."""
    path = _study(team, tiny_model, "team-study-inprocess", ["clean", "flipped"], work_pool=None)
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["run", str(path)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "points trained: 6, reused from earlier runs: 0" in result.output
    print(f"\n[measure] same study in-process: {seconds:.1f} s; through deployments: {deployed_study[2]:.1f} s")


def test_status_reads_prefect_and_mlflow(team, deployed_study):
    path, _, _ = deployed_study
    result = CliRunner().invoke(app, ["status", str(path)])
    assert result.exit_code == 0, result.output
    assert "FINISHED" not in result.output and result.output.count("completed") >= 9  # 3 arms + 6 points
    assert "team-study/flipped: Completed" in result.output


def test_study_asking_more_than_the_pool_allows_is_refused(team, deployed_study):
    path, _, _ = deployed_study
    result = CliRunner().invoke(app, ["run", str(path), "--concurrency", "5"])
    assert result.exit_code != 0
    assert "asks for 5 arms at once but work pool 't-arms' allows 2" in result.output
    result = CliRunner().invoke(app, ["run", str(path), "--work-pool", "t-armz"])
    assert result.exit_code != 0 and "no work pool 't-armz'" in result.output and "t-arms" in result.output
    assert len(_tree(team.runs("team-study"))[0]) == 1  # refused before any run was opened


def test_killed_worker_then_resume_recomputes_only_unfinished_points(team, deployed_study, tiny_model):
    path = _study(team, tiny_model, "kill-study", ["clean"], mixture={"sizes": [16, 32, 64, 96]}, concurrency=2,
                  training={"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "max_length": 48,
                            "eval_batch_size": 20, "lora": {"r": 4, "alpha": 8}})
    runner = subprocess.Popen([str(BIN / "curate"), "run", str(path)], env=team.env, cwd=team.tmp,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim = None
    deadline = time.time() + 240
    while victim is None and time.time() < deadline:  # wait for an arm with a finished point and one in progress
        assert runner.poll() is None, runner.communicate()[0][-3000:]
        _, arms, points = _tree(team.runs("kill-study"))
        for arm in arms:
            mine = [p for p in points if p.data.tags["mlflow.parentRunId"] == arm.info.run_id]
            running = [p for p in mine if p.info.status == "RUNNING"]
            if running and any(p.info.status == "FINISHED" for p in mine):
                victim = running[0].data.tags["curate.worker"]
        time.sleep(0.2)
    assert victim, "no arm reached a finished point with another in progress"
    team.kill_worker(victim)
    out, _ = runner.communicate(timeout=300)  # the zombie-run automation crashes the silent flow run; the parent ends
    assert runner.returncode != 0, out
    assert "arms failed" in out
    studies, arms, points = _tree(team.runs("kill-study"))
    assert studies[0].info.status == "FAILED"
    assert not [r for r in [*arms, *points] if r.info.status in ("RUNNING", "SCHEDULED")]  # nothing looks alive
    lost = [p for p in points if p.info.status == "FAILED"]
    assert lost and all("curate.failure" in p.data.tags for p in lost)
    finished = sum(p.info.status == "FINISHED" for p in points)
    unfinished = 2 * 4 - finished

    team.start_worker(victim, "t-arms", 1)  # the machine comes back
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    print(f"\n[measure] kill/resume: {finished} points finished before the kill, {unfinished} recomputed")
    assert f"points trained: {unfinished}, reused from earlier runs: {finished}" in result.output
    studies, _, _ = _tree(team.runs("kill-study"))
    latest = max(studies, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED" and latest.data.metrics["points_trained"] == unfinished


def test_catalog_change_reevaluates_only_the_changed_arm(team, deployed_study):
    catalog = team.tmp / "catalog"
    first = CliRunner().invoke(app, ["catalog", "publish", "--dir", str(catalog)])  # baseline: every entry
    assert first.exit_code == 0 and "emitted catalog.changed for clean, flipped" in first.output
    _wait_reevaluations(team, 1)
    assert len(_tree(team.runs("team-study"))[0]) == 1  # unchanged against the latest study run: nothing ran

    entry = yaml.safe_load((catalog / "flipped.yaml").read_text())
    entry.update(split="train[:100]", version=2)  # fewer rows: the arm's mixtures change
    (catalog / "flipped.yaml").write_text(yaml.safe_dump(entry))
    before = {fr.id for fr in team.flow_runs("evaluate-arm")}
    second = CliRunner().invoke(app, ["catalog", "publish", "--dir", str(catalog)])
    assert second.exit_code == 0 and "emitted catalog.changed for flipped (" in second.output
    run = _wait_reevaluations(team, 2)
    assert run.parameters["changed"] == "flipped"

    studies, arms, points = _tree(team.runs("team-study"))
    latest = max(studies, key=lambda r: r.info.start_time)
    assert latest.info.status == "FINISHED" and "ranking.csv" in {a.path for a in team.mlflow().list_artifacts(latest.info.run_id)}
    mine = {a.info.run_id: a.data.tags["curate.arm"] for a in arms if a.data.tags["mlflow.parentRunId"] == latest.info.run_id}
    trained = sorted(mine[p.data.tags["mlflow.parentRunId"]] for p in points
                     if p.data.tags["mlflow.parentRunId"] in mine and "curate.reused_from" not in p.data.tags)
    reused = [p for p in points if p.data.tags["mlflow.parentRunId"] in mine and "curate.reused_from" in p.data.tags]
    assert trained == ["flipped", "flipped"] and len(reused) == 4
    new = [fr for fr in team.flow_runs("evaluate-arm") if fr.id not in before]
    on_pool = [fr.name for fr in new if fr.deployment_id is not None]
    assert on_pool == ["team-study/flipped"], new  # only the changed arm went to the pool; the others only copied runs


def _wait_reevaluations(team, n: int, timeout: float = 240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = team.flow_runs("reevaluate")
        if len(runs) >= n and all(r.state.is_final() for r in runs):
            assert all(r.state.is_completed() for r in runs), [(r.name, r.state) for r in runs]
            return max(runs, key=lambda r: r.created)
        time.sleep(1)
    raise AssertionError(f"reevaluate ran {len(team.flow_runs('reevaluate'))} time(s), expected {n}; "
                         f"worker log:\n{(team.tmp / 'worker-control.log').read_text()[-3000:]}")
