"""The MLflow and Prefect UI pages as a user opens them, driven with Playwright: shared by the browser tests and
`make screenshots` (tests/screenshots.py, the pictures of the demo in docs/reading-results.md). Each `open_*` waits until the page
shows what a user looks for."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tasks.backends import mlflowui

BIN = Path(sys.executable).parent
FORM_HINT = "Study name; the MLflow experiment."  # the first field's description on the curate/study run form


def wait_http(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=2).status == 200:
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {seconds:.0f} s")


@contextlib.contextmanager
def server(args: list[str], health: str, env: dict | None = None, cwd: Path | None = None):
    """A server process (`mlflow server ...`, `prefect server start ...`) up until the block ends."""
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        wait_http(health)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def mlflow_server(uri: str, port: int, cwd: Path):
    return server([str(BIN / "mlflow"), "server", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port",
                   str(port)], f"http://127.0.0.1:{port}/health", cwd=cwd)


def close_assistant(page) -> None:
    """MLflow 3.17 opens its Assistant panel over the right of the page."""
    close = page.get_by_role("button", name="Close", exact=True)
    if close.count():
        close.first.click()


def open_ranking(page, base: str, experiment_id: str) -> None:
    """The link `curate run` prints: the saved view "ranking", the arms best first with their rank lines."""
    page.goto(mlflowui.ranking_url(base, experiment_id))
    page.get_by_text("rank 1 of ", exact=False).first.wait_for(timeout=90000)
    close_assistant(page)


def open_curves(page, base: str, experiment_id: str, metric: str) -> None:
    """The same view in chart mode, which the view narrows to the metric: one line per arm against mixture size."""
    page.goto(mlflowui.ranking_url(base, experiment_id) + "&compareRunsMode=CHART")
    page.get_by_text(metric, exact=True).first.wait_for(timeout=60000)
    assert page.get_by_placeholder("Search metric charts").input_value() == metric
    close_assistant(page)
    page.wait_for_timeout(1500)  # the lines draw after the chart frame


def open_run(page, base: str, experiment_id: str, run_id: str, expect: str) -> None:
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning")
    page.get_by_text(expect, exact=False).first.wait_for(timeout=90000)
    close_assistant(page)


def open_form(page, ui: str, deployment_id) -> None:
    page.goto(f"{ui}/deployments/deployment/{deployment_id}/run")
    page.get_by_text(FORM_HINT).wait_for(timeout=90000)


def form_field(page, label: str):
    """The inputs of the Prefect form property labelled `label` (one per item for a list)."""
    return page.locator(f"xpath=//div[contains(@class,'schema-form-property')][./div[@class='p-label__header']"
                        f"//span[@class='schema-form-property__label' and normalize-space()='{label}']]"
                        f"/div[@class='p-label__body']//*[self::textarea or self::input]")


def open_artifacts(page, ui: str, flow_run_id, keys: list[str]) -> None:
    """The flow run page's Artifacts tab, showing a card per key."""
    page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
    page.get_by_text("Artifacts", exact=True).first.click(timeout=60000)
    for key in keys:
        page.get_by_text(key, exact=True).first.wait_for(timeout=60000)


def open_artifact(page, base: str, experiment_id: str, run_id: str, path: str) -> None:
    """A run's Artifacts tab with one file selected (an image shows its preview)."""
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifacts?workflowType=machine_learning")
    page.get_by_text(path, exact=True).first.click(timeout=90000)
    page.locator("img[src^='blob:']").first.wait_for(timeout=60000)
    close_assistant(page)
