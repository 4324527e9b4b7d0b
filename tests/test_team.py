"""The team stack for real, on loopback (teamstack.py): a tiny study through the deployments; a worker killed
mid-study and the study resumed; a catalog entry changed, `catalog.changed` emitted, and only that arm trained again."""

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import run_tree as _tree
from cli.main import app
from teamstack import team_study as _study

pytestmark = [pytest.mark.integration, pytest.mark.team]
BIN = Path(sys.executable).parent


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
