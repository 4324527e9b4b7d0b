"""`make screenshots`: the pictures of docs/reading-results.md, taken in headless Chromium on a finished study
(default: the demo, after `make demo`) with the same page helpers as the browser tests (uipages.py).

It serves the study's MLflow store with `mlflow server`, and the Prefect database the study ran against with
`prefect server start` (the embedded one: $PREFECT_HOME, ~/.prefect by default), registers the work pools and
deployments there (`curate pools create`, `curate deploy --example STUDY`) so the run form can be shown, and writes
the PNG files to docs/images/."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).parent)]

import uipages  # noqa: E402
from conftest import free_port  # noqa: E402
from tasks.backends import tracking  # noqa: E402
from tasks.schema.study import load_study  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", default="deployments/studies/sst2-demo.yaml")
    parser.add_argument("--out", default="docs/images")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    study = load_study(args.study)
    uri = tracking.tracking_uri(study.output_path)
    from mlflow.tracking import MlflowClient  # the script reads the store directly; the product goes through tracking.py

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(study.name)
    if exp is None:
        sys.exit(f"no finished study '{study.name}' in {uri}: run it first (make demo)")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time DESC"])
    study_run = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    control = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == study_run.info.run_id
                   and r.data.tags.get("curate.arm") == "control")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ml_port, pf_port = free_port(), free_port()
    ml, ui = f"http://127.0.0.1:{ml_port}", f"http://127.0.0.1:{pf_port}"
    env = {"PREFECT_API_URL": f"{ui}/api", "PREFECT_UI_API_URL": f"{ui}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = [str(uipages.BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(pf_port)]
    with uipages.mlflow_server(uri, ml_port, ROOT), uipages.server(prefect, f"{ui}/api/health", env), \
            sync_playwright() as pw:
        os.environ.update(env)
        curate = str(uipages.BIN / "curate")
        for cmd in ([curate, "pools", "create"], [curate, "deploy", "--example", args.study]):
            subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as pc:
            deployment = pc.read_deployment_by_name("curate/study")
        browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        shots = [("mlflow-ranking-view", lambda: uipages.open_ranking(page, ml, exp.experiment_id)),
                 ("mlflow-arm-curves", lambda: uipages.open_curves(page, ml, exp.experiment_id, study.primary)),
                 ("mlflow-study-run", lambda: uipages.open_run(page, ml, exp.experiment_id, study_run.info.run_id,
                                                               "candidate")),
                 ("mlflow-scaling-plot", lambda: uipages.open_artifact(page, ml, exp.experiment_id,
                                                                      study_run.info.run_id, "scaling.png")),
                 ("mlflow-arm-run", lambda: uipages.open_run(page, ml, exp.experiment_id, control.info.run_id, "rank ")),
                 ("prefect-flow-run-artifacts", lambda: uipages.open_artifacts(
                     page, ui, study_run.data.tags[tracking.FLOW_RUN],
                     [f"{k}-{study.name}" for k in ("progress", "ranking", "mlflow")])),
                 ("prefect-form", lambda: uipages.open_form(page, ui, deployment.id))]
        for name, show in shots:
            page.set_viewport_size({"width": 1600, "height": 1050 if name.startswith("prefect-flow") else 900})
            show()
            page.screenshot(path=str(out / f"{name}.png"))
            print(f"wrote {out / name}.png")
        browser.close()


if __name__ == "__main__":
    main()
