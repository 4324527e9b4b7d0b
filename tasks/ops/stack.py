"""The team stack: a Prefect server and an MLflow server, both on PostgreSQL, artifacts in a shared folder (or an
S3-compatible store). `curate stack up` starts them (PostgreSQL too, when it is local and stopped) and writes
`stack.env`; infra/compose.yaml runs the same on a real host. Also: work pools and the zombie-run automation."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from tasks.backends.tracking import init_store
from tasks.errors import WorkbenchError

INFRA = Path(__file__).resolve().parents[2] / "infra"
TEMPLATES = {"process": INFRA / "pools" / "process.json", "docker": INFRA / "pools" / "docker-gpu.json",
             "kubernetes": INFRA / "pools" / "kubernetes-gpu.json"}


class StackError(WorkbenchError):
    """The stack cannot start: PostgreSQL unreachable, a port taken, a server that does not come up."""


@dataclass
class StackConfig:
    folder: Path = Path(".curate-stack")  # pid files, logs, stack.env, and (by default) the artifact store
    postgres: str = "postgresql://postgres@127.0.0.1:5432"  # server URL without a database
    prefix: str = "curate"  # databases <prefix>_prefect and <prefix>_mlflow
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    artifacts: str | None = None  # folder or s3://bucket/prefix; default: <folder>/artifacts

    @property
    def prefect_api(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    def db(self, what: str) -> str:
        return f"{self.postgres.rstrip('/')}/{self.prefix}_{what}"


def connect(url: str):
    import psycopg2

    return psycopg2.connect(url, connect_timeout=3)


def ensure_postgres(cfg: StackConfig, log=print) -> None:
    """Reach PostgreSQL; start the local cluster when it is local and stopped (Debian's pg_ctlcluster)."""
    import psycopg2

    url = f"{cfg.postgres.rstrip('/')}/postgres"
    try:
        connect(url).close()
        return
    except psycopg2.OperationalError as err:
        first = err
    host = urlparse(cfg.postgres).hostname
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if host not in ("127.0.0.1", "localhost", "::1") or not versions or not shutil.which("pg_ctlcluster"):
        raise StackError(f"PostgreSQL at {cfg.postgres} is not reachable ({str(first).strip()}); start it, or pass "
                         "--postgres postgresql://USER@HOST:PORT")
    log(f"PostgreSQL at {cfg.postgres} is down; starting the local cluster {versions[-1]}/main")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"], check=False,
                   capture_output=True)
    for _ in range(30):
        try:
            connect(url).close()
            return
        except psycopg2.OperationalError:
            time.sleep(1)
    raise StackError(f"PostgreSQL at {cfg.postgres} did not come up after pg_ctlcluster start")


def ensure_database(cfg: StackConfig, what: str) -> str:
    """Create <prefix>_<what> when missing; return its URL."""
    name = f"{cfg.prefix}_{what}"
    conn = connect(f"{cfg.postgres.rstrip('/')}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return cfg.db(what)


def drop_databases(cfg: StackConfig) -> None:
    conn = connect(f"{cfg.postgres.rstrip('/')}/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        for what in ("prefect", "mlflow"):
            cur.execute(f'DROP DATABASE IF EXISTS "{cfg.prefix}_{what}" WITH (FORCE)')
    conn.close()


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _start(name: str, cmd: list[str], env: dict, cfg: StackConfig) -> int:
    log = open(cfg.folder / f"{name}.log", "ab")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (cfg.folder / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def _wait(name: str, url: str, cfg: StackConfig, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _up(url):
            return
        pid = int((cfg.folder / f"{name}.pid").read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    tail = (cfg.folder / f"{name}.log").read_text(errors="replace")[-2000:]
    raise StackError(f"{name} server did not come up at {url}; last lines of {cfg.folder / (name + '.log')}:\n{tail}")


def bin_of(tool: str) -> str:
    return str(Path(sys.executable).with_name(tool))


def up(cfg: StackConfig, log=print) -> dict:
    """Start PostgreSQL (if local and down), then the MLflow and Prefect servers unless already up. Idempotent."""
    cfg.folder = Path(cfg.folder).resolve()
    cfg.folder.mkdir(parents=True, exist_ok=True)
    artifacts = cfg.artifacts or str(cfg.folder / "artifacts")
    ensure_postgres(cfg, log)
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3: name the drivers that are installed
    mlflow_db = ensure_database(cfg, "mlflow").replace("postgresql://", "postgresql+psycopg2://", 1)
    prefect_db = ensure_database(cfg, "prefect").replace("postgresql://", "postgresql+asyncpg://", 1)
    quiet = {"MLFLOW_DISABLE_TELEMETRY": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if _up(f"{cfg.mlflow_uri}/health"):
        log(f"MLflow server already up at {cfg.mlflow_uri}")
    else:
        init_store(mlflow_db, artifacts)  # MLflow's tables once, before the server's workers start
        _start("mlflow", [bin_of("mlflow"), "server", "--backend-store-uri", mlflow_db, "--artifacts-destination",
                          artifacts, "--host", cfg.host, "--port", str(cfg.mlflow_port), "--workers", "2",
                          *(["--allowed-hosts", "*"] if cfg.host not in ("127.0.0.1", "localhost") else [])], quiet, cfg)
    if _up(f"{cfg.prefect_api}/health"):
        log(f"Prefect server already up at {cfg.prefect_api}")
    else:
        _start("prefect", [bin_of("prefect"), "server", "start", "--host", cfg.host, "--port", str(cfg.prefect_port)],
               {**quiet, "PREFECT_API_DATABASE_CONNECTION_URL": prefect_db,
                "PREFECT_UI_API_URL": cfg.prefect_api}, cfg)
    _wait("mlflow", f"{cfg.mlflow_uri}/health", cfg)
    _wait("prefect", f"{cfg.prefect_api}/health", cfg)
    env = {"PREFECT_API_URL": cfg.prefect_api, "MLFLOW_TRACKING_URI": cfg.mlflow_uri}
    (cfg.folder / "stack.env").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    (cfg.folder / "stack.json").write_text(json.dumps({**asdict(cfg), "folder": str(cfg.folder), "artifacts": artifacts}, indent=2))
    ensure_zombie_automation(cfg.prefect_api)
    return {**env, "prefect_ui": cfg.prefect_api.removesuffix("/api"), "artifacts": artifacts,
            "mlflow_db": mlflow_db, "prefect_db": prefect_db, "env_file": str(cfg.folder / "stack.env")}


def down(folder: Path) -> list[str]:
    """Stop the servers started from this folder (SIGTERM, then SIGKILL after 10 s)."""
    stopped = []
    for pidfile in sorted(Path(folder).glob("*.pid")):
        pid = int(pidfile.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pidfile.unlink()
            continue
        for _ in range(20):
            try:
                os.kill(pid, 0)
                time.sleep(0.5)
            except ProcessLookupError:
                break
        else:
            os.killpg(pid, signal.SIGKILL)
        pidfile.unlink()
        stopped.append(pidfile.stem)
    return stopped


ZOMBIE_AUTOMATION = "curate: crash zombie flow runs"
WORKBENCH_FLOWS = ("curate", "evaluate-arm", "reevaluate")


def ensure_zombie_automation(api_url: str, within_s: int | None = None) -> None:
    """Prefect's documented zombie-run detection: a flow run whose heartbeats stop (its worker machine died or was
    killed) is marked Crashed, so the parent flow learns about it and marks the arm's unfinished runs FAILED.
    Flow runs must beat more often than the window: PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30 (set by `curate` and by
    every pool template in infra/pools/)."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import PREFECT_API_URL, temporary_settings

    within = timedelta(seconds=within_s or int(os.environ.get("CURATE_ZOMBIE_AFTER_S", "90")))
    with temporary_settings({PREFECT_API_URL: api_url}):
        if _automation_exists(Automation, ZOMBIE_AUTOMATION):
            return
        Automation(
            name=ZOMBIE_AUTOMATION,
            trigger=EventTrigger(
                after={"prefect.flow-run.heartbeat"},
                expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                        "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
                match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
                # only the workbench's flows, which beat every 30 s; other flows keep Prefect's 180 s default
                match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                     "prefect.resource.name": list(WORKBENCH_FLOWS)}),
                for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1, within=within),
            actions=[ChangeFlowRunState(state=StateType.CRASHED, name="Crashed",
                                        message="No heartbeat: the worker running this flow run is gone.")],
        ).create()


def _automation_exists(automation_cls, name: str) -> bool:
    try:
        return bool(automation_cls.read(name=name))
    except ValueError:  # Prefect's "no automation with this name"
        return False


def create_pool(name: str, kind: str, limit: int | None, api_url: str | None = None) -> dict:
    """Create (or update) a work pool from infra/pools/<kind> with its concurrency limit (= GPUs for GPU pools)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if kind not in TEMPLATES:
        raise StackError(f"pool type '{kind}': choose one of {', '.join(TEMPLATES)}")
    template = json.loads(TEMPLATES[kind].read_text())
    with temporary_settings({PREFECT_API_URL: api_url} if api_url else {}), get_client(sync_client=True) as client:
        try:
            existing = client.read_work_pool(name)
            if existing.type != kind:
                raise StackError(f"work pool '{name}' exists with type {existing.type}, not {kind}; pick another name "
                                 f"or delete it first: prefect work-pool delete {name}")
            client.update_work_pool(name, WorkPoolUpdate(base_job_template=template, concurrency_limit=limit))
            action = "updated"
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=kind, base_job_template=template,
                                                   concurrency_limit=limit))
            action = "created"
    return {"pool": name, "type": kind, "concurrency_limit": limit, "action": action}


def prefill_form(deployment: str, parameters: dict) -> None:
    """The deployment's default parameters: the UI's run form opens filled with them (every default visible)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate

    with get_client(sync_client=True) as client:
        client.update_deployment(client.read_deployment_by_name(deployment).id, DeploymentUpdate(parameters=parameters))
