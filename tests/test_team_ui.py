"""The Prefect UI of the team stack (teamstack.py) in headless Chromium: the study form, a study launched from it,
and the artifacts on its flow run."""

import time

import pytest

from conftest import run_tree as _tree

pytestmark = [pytest.mark.integration, pytest.mark.team]


def _plain(markdown: str) -> str:
    return " ".join(markdown.replace("`", "").split())


def test_study_launched_from_the_prefect_ui_form(team, browser):
    """The real Prefect UI in headless Chromium: the curate/study run form shows every study field with its
    description, opened filled with the example study (`curate deploy --example`); a study edited there (name,
    target size) and submitted runs on the control worker, and its flow run page lists the ranking, MLflow link and
    progress artifacts."""
    from prefect.client.orchestration import get_client

    import uipages
    from conftest import SHOTS
    from tasks.schema.design import Mixture
    from tasks.schema.evaluation import Benchmark
    from tasks.schema.study import Study
    from tasks.schema.training import Training

    ui = team.cfg.prefect_api.removesuffix("/api")
    with get_client(sync_client=True) as prefect:
        deployment = prefect.read_deployment_by_name("curate/study")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    uipages.open_form(page, ui, deployment.id)
    shown = _plain(page.inner_text("body"))
    missing = [f"{model.__name__}.{name}" for model in (Study, Benchmark, Mixture, Training)
               for name, field in model.model_fields.items() if _plain(field.description) not in shown]
    assert not missing, missing  # every field, nested models included, with its description
    name, target = uipages.form_field(page, "Name").first, uipages.form_field(page, "Target Size").first
    assert name.input_value() == "ui-example" and target.input_value() == "512"  # filled from the example study
    field = lambda label: [i.input_value() for i in uipages.form_field(page, label).all()]  # noqa: E731
    assert field("Sizes") == ["16", "32"] and field("Candidates") == ["clean"]  # lists, one inside a nested model
    name.fill("ui-study")
    target.fill("1024")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "prefect-form.png"))
    page.get_by_role("button", name="Submit").click()
    page.get_by_role("button", name="View run").last.click(timeout=60000)  # the toast: "<run> scheduled to start now"
    page.wait_for_url("**/runs/flow-run/**", timeout=60000)
    flow_run_id = page.url.split("/runs/flow-run/")[1].split("?")[0]
    start = time.perf_counter()
    deadline = time.time() + 400
    with get_client(sync_client=True) as prefect:
        while not (run := prefect.read_flow_run(flow_run_id)).state.is_final() and time.time() < deadline:
            time.sleep(2)
    assert run.state.is_completed(), f"{run.state}: {(team.tmp / 'worker-control.log').read_text()[-3000:]}"
    assert run.deployment_id == deployment.id and run.name == "ui-study"  # the flow names its run after the study
    print(f"\n[measure] study submitted from the Prefect UI form (2 arms x 2 sizes): {time.perf_counter() - start:.1f} s")
    studies, arms, points = _tree(team.runs("ui-study"))
    assert len(studies) == 1 and studies[0].info.status == "FINISHED" and len(points) == 4
    assert studies[0].data.params["target_size"] == "1024"  # what was typed in the form is what ran
    uipages.open_artifacts(page, ui, flow_run_id, ["progress-ui-study", "ranking-ui-study", "mlflow-ui-study"])
    page.get_by_text("ui-study: 4 of 4 points").wait_for()
    page.screenshot(path=str(SHOTS / "prefect-flow-run-artifacts.png"))
    page.get_by_text("ranking-ui-study", exact=True).first.click()  # the artifact's own page: the ranking table
    page.get_by_text("clean", exact=True).first.wait_for(timeout=60000)
    page.close()
