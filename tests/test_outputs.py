"""What a finished study looks like from outside: its results pushed to the Hub (the real huggingface_hub code
path against the local stand-in, tests/hub_standin.py), the MLflow UI opened on it in headless Chromium, and the
plan calibrated from its measured points. All read the tiny study `finished_study` (conftest.py) runs once."""

import csv
import re

import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, study_runs as _runs

pytestmark = pytest.mark.integration


def test_push_round_trips_through_the_hub_stand_in(finished_study, monkeypatch, tmp_path):
    """`curate push` with the real huggingface_hub code path against the local Hub stand-in (tests/hub_standin.py):
    private repos, one commit per push, files read back equal to MLflow's; the token never printed."""
    import huggingface_hub
    from huggingface_hub import HfApi, hf_hub_download

    from hub_standin import HubStandIn

    tmp, uri, _ = finished_study
    client, runs = _runs(uri)
    study = min((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    args = ["push", study.info.run_id, "--tracking-uri", uri, "--repo", "org/results"]
    offline = CliRunner().invoke(app, args)  # the tests run offline (HF_HUB_OFFLINE=1)
    assert offline.exit_code == 2 and "HF_HUB_OFFLINE is set: unset it to push" in offline.output
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the stand-in is "the Hub" here
    monkeypatch.delenv("HF_TOKEN", raising=False)
    no_token = CliRunner().invoke(app, args)
    assert no_token.exit_code == 2 and "set HF_TOKEN in the environment" in no_token.output
    with HubStandIn(token="hf_secret_123") as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code == 2 and "Hub: org/results:" in refused.output and "hf_wrong" not in refused.output
        monkeypatch.setenv("HF_TOKEN", "hf_secret_123")
        pushed = [CliRunner().invoke(app, [*args, "--adapters-repo", "org/adapters"]) for _ in range(2)]
        assert all(p.exit_code == 0 for p in pushed), pushed[0].output + pushed[1].output
        assert "hf_secret_123" not in pushed[0].output + pushed[1].output
        repo = hub.repos[("dataset", "org/results")]
        assert repo["private"] and len(repo["commits"]) == 2  # versioned: one commit per push
        api = HfApi(endpoint=hub.endpoint, token="hf_secret_123")
        assert {"README.md", "ranking.md", "ranking.csv", "scaling.png", "fits.json", "points.csv"} <= set(
            api.list_repo_files("org/results", repo_type="dataset"))
        got = hf_hub_download("org/results", "ranking.csv", repo_type="dataset", endpoint=hub.endpoint,
                              token="hf_secret_123", cache_dir=tmp_path / "hf")
        want = client.download_artifacts(study.info.run_id, "ranking.csv", str(tmp_path))
        assert open(got).read() == open(want).read()
        points = list(csv.DictReader(open(hf_hub_download("org/results", "points.csv", repo_type="dataset",
                                                          endpoint=hub.endpoint, token="hf_secret_123",
                                                          cache_dir=tmp_path / "hf"))))
        assert len(points) == 4 * 3 * 2 and {p["arm"] for p in points} == {"control", "clean", "flipped", "copy"}
        data = CliRunner().invoke(app, ["push-data", str(tmp / "study.yaml"), "--repo", "org/my-d0"])
        assert data.exit_code == 0 and "source: org/my-d0" in data.output, data.output
        d0 = hub.repos[("dataset", "org/my-d0")]
        assert d0["private"] and d0["commits"][-1]["files"]["data/train.jsonl"] == (FIXTURES / "d0.jsonl").read_bytes()
        adapters = hub.repos[("model", "org/adapters")]["commits"][-1]["files"]
        assert {f"{arm}/size64-seed0/adapter_config.json" for arm in ("control", "clean", "flipped", "copy")} <= set(adapters)


def test_plan_calibrates_from_the_finished_study(finished_study):
    """After a run, `curate plan` estimates this machine's time at the rates the study's own points measured, and
    shows the run's real wall time beside it."""
    tmp, _, _ = finished_study
    planned = CliRunner().invoke(app, ["plan", str(tmp / "study.yaml")])
    assert planned.exit_code == 0, planned.output
    said = " ".join(planned.output.split())
    assert "this machine at the rates of this study's last run (study run" in said and "that run took" in said


def test_the_mlflow_ui_opens_on_the_answer(finished_study, browser, tmp_path):
    """The real MLflow UI on the finished study, in headless Chromium: the link `curate run` prints opens the saved
    view "ranking" (the arms best first, with their rank lines) and its chart mode draws each arm's metric against
    mixture size; the study run's description is the verdict and the ranking, its Artifacts tab previews the scaling
    plot beside the ranking files; an arm run says its rank."""
    import uipages
    from conftest import SHOTS, free_port

    tmp, uri, _ = finished_study
    client, runs = _runs(uri)
    study = min((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    arms = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study.info.run_id]
    control = next(r for r in arms if r.data.tags["curate.arm"] == "control")
    assert study.data.tags["mlflow.note.content"].startswith(("**Best candidate", "**No candidate", "**Leader"))
    first = study.data.tags["mlflow.note.content"].split("\n")[0]
    assert re.search(r"gold_logprob (observed at \d+|predicted at 512) ", first), first  # says what was ranked
    assert control.data.tags["mlflow.note.content"].startswith("rank ") and "rank" in control.data.metrics
    # the run name leads the runs table: the rank first, then the arm
    assert {a.info.run_name for a in arms} == {f"{int(a.data.metrics['rank'])}. {a.data.tags['curate.arm']}" for a in arms}
    port = free_port()
    base, exp = f"http://127.0.0.1:{port}", study.info.experiment_id
    with uipages.mlflow_server(uri, port, tmp_path):
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        uipages.open_ranking(page, base, exp)
        latest = max((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
        ranked = sorted((r for r in runs if r.data.tags.get("mlflow.parentRunId") == latest.info.run_id),
                        key=lambda a: a.data.metrics["rank"])  # the view shows the latest study run's arms
        rows = [page.locator("[role=row][row-index]").filter(has_text=a.data.tags["curate.arm"]).first for a in ranked]
        assert [int(r.get_attribute("row-index")) for r in rows] == [0, 1, 2, 3]  # best first
        headers = [h.strip() for h in page.locator("[role=columnheader]").all_inner_texts()]
        assert {"delta", "delta_lo", "delta_hi"} <= set(headers), headers  # short, distinct (no three 'delta_vs_contro…')
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "mlflow-ranking-view.png"))
        uipages.open_curves(page, base, exp, "gold_logprob")
        page.screenshot(path=str(SHOTS / "mlflow-arm-curves.png"))
        uipages.open_run(page, base, exp, study.info.run_id, first.split("**")[1][:20])
        page.screenshot(path=str(SHOTS / "mlflow-study-run.png"))
        uipages.open_artifact(page, base, exp, study.info.run_id, "scaling.png")  # the plot's preview
        assert page.get_by_text("ranking.md", exact=True).count() and page.get_by_text("ranking.csv", exact=True).count()
        uipages.open_run(page, base, exp, control.info.run_id, "rank ")
        page.close()


def test_the_parent_flow_run_has_its_ranking_link_and_progress_artifacts(finished_study):
    """On the Prefect server the study ran against: the study's flow run (recorded on its MLflow study run) has the
    ranking table, a link to the MLflow study run, and a progress artifact at 100 % (24 of 24 points)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    tmp, uri, _ = finished_study
    client, runs = _runs(uri)
    study = min((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    flow_run = study.data.tags["curate.prefect_flow_run_id"]
    with get_client(sync_client=True) as prefect:  # the tests' Prefect server (prefect_harness)
        progress, link, table = (prefect.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[f"{k}-fixture-study"]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run])))
            for k in ("progress", "mlflow", "ranking"))
    assert len(progress) == 1 and float(progress[0].data) == 100.0 and progress[0].description.endswith("24 of 24 points")
    assert study.info.run_id in str(link[0].data) and "mlflow ui --backend-store-uri" in link[0].description
    assert table and "control" in str(table[0].data)
