"""Work-pool templates against Prefect's own schema checks, the deployment file, point and entry fingerprints,
retries of transient I/O, and orphaned-run detection (no servers needed)."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tasks.ops.stack import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", sorted(TEMPLATES))
def test_pool_templates_pass_prefect_validation(kind):
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.server.schemas.actions import WorkPoolCreate as ServerWorkPoolCreate
    from prefect.utilities.templating import apply_values

    template = json.loads(TEMPLATES[kind].read_text())
    ServerWorkPoolCreate(name=f"t-{kind}", type=kind, base_job_template=template)  # every placeholder declared
    WorkPoolCreate(name=f"t-{kind}", type=kind, base_job_template=template, concurrency_limit=2)
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    defaults = {k: v["default"] for k, v in variables["properties"].items() if "default" in v}
    jsonschema.validate(defaults, variables)  # the defaults satisfy the schema the UI form is built from
    job = apply_values(template["job_configuration"], defaults)
    assert "{{" not in json.dumps(job).replace("{{ command }}", "")
    if kind == "kubernetes":
        container = job["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert job["job_manifest"]["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert container["image"].endswith("curation-workbench:latest")
    if kind == "docker":
        assert job["container_create_kwargs"]["device_requests"][0]["Capabilities"] == [["gpu"]]
        assert job["container_create_kwargs"]["device_requests"][0]["Count"] == 1
    assert job["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"


def test_a_template_with_an_undeclared_variable_is_rejected():
    from prefect.server.schemas.actions import WorkPoolCreate

    template = json.loads(TEMPLATES["kubernetes"].read_text())
    del template["variables"]["properties"]["gpus"]
    with pytest.raises(ValueError, match="gpus"):
        WorkPoolCreate(name="bad", type="kubernetes", base_job_template=template)


def test_prefect_yaml_declares_the_three_deployments_and_both_triggers():
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["study"]["entrypoint"] == "flows/curate.py:curate"
    assert by_name["arm"]["entrypoint"] == "flows/curate.py:evaluate_arm"
    re = by_name["on-catalog-change"]
    assert re["entrypoint"] == "flows/reevaluate.py:reevaluate"
    assert re["schedules"][0]["active"] is False and re["schedules"][0]["cron"]
    assert re["triggers"][0]["expect"] == ["catalog.changed"] and re["triggers"][0]["enabled"] is True
    from prefect.flows import load_flow_from_entrypoint

    names = {d["name"]: load_flow_from_entrypoint(str(ROOT / d["entrypoint"])).name for d in spec["deployments"]}
    assert names == {"study": "curate", "arm": "evaluate-arm", "on-catalog-change": "reevaluate"}  # what runs them


def test_study_is_a_typed_form_in_the_ui():
    """The `curate` deployment's parameter schema (what the Prefect UI renders) types every study field."""
    from prefect.utilities.callables import parameter_schema

    from flows.curate import curate, evaluate_arm

    schema = parameter_schema(curate.fn).model_dump_for_openapi()
    study = schema["definitions"]["Study"]
    assert {"name", "task", "candidates", "mixture", "target_size", "work_pool", "concurrency"} <= set(study["properties"])
    assert study["properties"]["task"]["enum"] == ["classification", "code", "extractive_qa", "instruction", "math",
                                                  "preference"]
    assert {"allow_code_execution", "execution", "judge", "gates"} <= set(study["properties"])
    arm = parameter_schema(evaluate_arm.fn).model_dump_for_openapi()
    assert {"study", "arm_name", "arm_run_id", "tracking_uri"} <= set(arm["properties"])


def _study(tmp_path, **over):
    from conftest import sentiment_study
    from tasks.schema.study import Study

    return Study.model_validate(sentiment_study(tmp_path, tmp_path, ["clean"], **over))


def test_point_fingerprint_changes_with_what_decides_the_result(tmp_path):
    from tasks.ops.resume import point_fingerprint

    base = _study(tmp_path)
    fp = point_fingerprint(base, "mix", "bench", 0)
    assert fp == point_fingerprint(_study(tmp_path), "mix", "bench", 0)
    assert fp == point_fingerprint(_study(tmp_path, concurrency=4, name="other"), "mix", "bench", 0)  # no effect
    changed = [point_fingerprint(base, "mix2", "bench", 0), point_fingerprint(base, "mix", "bench2", 0),
               point_fingerprint(base, "mix", "bench", 1),
               point_fingerprint(_study(tmp_path, training={"learning_rate": 0.1}), "mix", "bench", 0),
               point_fingerprint(_study(tmp_path, model={"source": "/elsewhere"}), "mix", "bench", 0)]
    assert len({fp, *changed}) == 6


def test_entry_fingerprint_ignores_description_only(tmp_path):
    from tasks.schema.catalog import CatalogEntry

    entry = CatalogEntry(name="a", task="classification", license="MIT", path="x.jsonl", description="one")
    assert entry.fingerprint() == entry.model_copy(update={"description": "two", "size_hint": 9}).fingerprint()
    assert entry.fingerprint() != entry.model_copy(update={"split": "train[:10]"}).fingerprint()
    assert entry.fingerprint() != entry.model_copy(update={"version": 2}).fingerprint()


def test_transient_io_is_retried_with_backoff_and_other_errors_are_not():
    from tasks.backends.data import with_retries

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.ETIMEDOUT, "timed out")
        return "rows"

    assert with_retries(flaky, base_delay=0.01) == "rows" and len(calls) == 3
    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("bad column")

    with pytest.raises(ValueError):
        with_retries(broken, base_delay=0.01)
    assert len(calls) == 1  # a bad file fails at once
    calls.clear()

    def down():
        calls.append(1)
        raise ConnectionError("hub down")

    with pytest.raises(ConnectionError):
        with_retries(down, attempts=3, base_delay=0.01)
    assert len(calls) == 3


def test_runs_of_a_dead_process_are_marked_failed(tmp_path):
    """A killed `curate run` leaves RUNNING runs; the next run marks them FAILED, a live owner's runs stay."""
    from tasks.backends import tracking
    from tasks.ops import resume

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = tracking.open_experiment(uri, "orphans", tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owner = resume.owner_tags()
    orphan = tracking.start_run(uri, exp, "dead-point", owner={**owner, tracking.PID: dead.pid})
    queued = tracking.start_run(uri, exp, "dead-arm", queued=True, owner={**owner, tracking.PID: dead.pid})
    live = tracking.start_run(uri, exp, "live-point", owner=owner)  # owned by this test process
    assert sorted(resume.fail_orphans(uri, exp)) == sorted([orphan, queued])
    gone = tracking.get_run(uri, orphan)
    assert gone.info.status == "FAILED" and "owner gone" in gone.data.tags[tracking.FAILURE]
    assert tracking.get_run(uri, live).info.status == "RUNNING"


def test_compose_file_matches_the_stack_command():
    """Docker cannot run here: check the compose file's wiring against what `curate stack up` does."""
    compose = yaml.safe_load((ROOT / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "mlflow", "prefect", "control-worker", "gpu-worker"} <= set(services)
    initdb = (ROOT / "infra" / "initdb" / "01-databases.sql").read_text()
    assert "curate_prefect" in initdb and "curate_mlflow" in initdb  # the names StackConfig uses
    assert "curate_mlflow" in services["mlflow"]["command"] and "SqlAlchemyStore" in services["mlflow"]["command"]
    assert services["prefect"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].endswith("/curate_prefect")
    assert "--pool curate-gpu --type docker" in services["gpu-worker"]["command"]
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    assert all(f"COPY {pkg} {pkg}" in dockerfile for pkg in ("cli", "flows", "tasks"))  # what pyproject packages
    assert "CURATE_PROJECT_DIR=/opt/curate" in dockerfile and "PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30" in dockerfile
