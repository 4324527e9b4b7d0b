"""The team stack for the `team` tests (test_team.py, test_team_ui.py), started once per session: Prefect server +
MLflow server on the local PostgreSQL (started when down), work pools, the deployments of deployments/prefect.yaml
(the run form filled with the example study `ui-example`), two process workers for the arms and one for the parent
flows."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from conftest import free_port, sentiment_entry, sentiment_study, write_catalog, write_study
from cli.main import app

BIN = Path(sys.executable).parent


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
    from tasks.ops.stack import StackConfig, connect, drop_databases

    conn = connect("postgresql://postgres@127.0.0.1:5432/postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'curate_test_%'")
        pids = {name.split("_")[2] for (name,) in cur.fetchall()}
    conn.close()
    for pid in pids:
        if pid.isdigit() and not psutil.pid_exists(int(pid)) or pid == str(os.getpid()):
            drop_databases(StackConfig(prefix=f"curate_test_{pid}"))


@pytest.fixture(scope="session")
def team(tmp_path_factory, tiny_model):
    if not _postgres_available():
        pytest.skip("no PostgreSQL reachable at 127.0.0.1:5432 (and none to start here)")
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from tasks.ops.stack import StackConfig, create_pool, down, drop_databases, up

    tmp = tmp_path_factory.mktemp("team")
    cfg = StackConfig(folder=tmp / "stack", prefix=f"curate_test_{os.getpid()}", prefect_port=free_port(),
                      mlflow_port=free_port())
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
            # the run form opens with this study; its arms run inside the parent flow run on the control worker
            # (test_team.py covers arms on the pool; here the form is under test)
            example = team_study(team, tiny_model, "ui-example", ["clean"], work_pool=None)
            result = CliRunner().invoke(app, ["deploy", "--arm-pool", "t-arms", "--control-pool", "t-control",
                                              "--studies", str(studies), "--example", str(example)], env=env)
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


def team_study(team, model: Path, name: str, candidates: list[str], watched: bool = False, **over) -> Path:
    tmp = team.tmp / name
    catalog = team.tmp / "catalog"
    if not catalog.exists():
        write_catalog(catalog, {"clean": sentiment_entry("candidate_clean.jsonl"),
                                "flipped": sentiment_entry("candidate_flipped.jsonl")})
    study = sentiment_study(tmp, model, candidates, **{"name": name, "work_pool": "t-arms", "catalog_dir": str(catalog),
                                                       "ranking": {"bootstrap": 100}, **over,
                                                       "noise": {"control_replicates": 0}})  # where work runs, not its statistics
    return write_study(team.tmp / ("studies" if watched else ""), study, f"{name}.yaml")

