"""What the MLflow UI (3.x) opens on: links into it, and the experiment's saved view "ranking" — the arms of the
latest study run sorted by rank, with the ranking's columns. MLflow keeps saved views as experiment tags
`mlflow.sharedViewState.<key>` (JSON with a deflate-compressed view state); the UI lists them under "Views" and
opens one from a link with `?viewStateShareKey=<key>`."""

import base64
import json
import time
import zlib

RANKING_VIEW = "curate-ranking"
VIEW_TAG = "mlflow.sharedViewState."
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # the "Model training" side of the UI
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves an embedded store by default


def ui_base(uri: str) -> str:
    return uri.rstrip("/") if uri.startswith("http") else LOCAL_UI


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def ranking_url(uri: str, experiment_id: str) -> str:
    """Opens the runs table on the saved view, in the UI's model-training mode (3.x starts in GenAI mode)."""
    return (f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?viewStateShareKey={RANKING_VIEW}"
            f"&workflowType=machine_learning")


def ranking_view(study_run_id: str, metric: str) -> dict[str, str]:
    """The experiment tag of the saved view: that study run's arm runs, best first (each named "1. arm" by the ranking
    step: the run name is the table's first column, while MLflow orders metric columns by name), with their description
    ("rank 2 of 4: ..."), rank, delta vs control with bounds, P(best), the metric at the largest size and sig (short
    names: MLflow cuts long headers to the same prefix); its chart mode shows the metric against mixture size."""
    columns = ["rank", "delta", "delta_lo", "delta_hi", "p_best", metric]
    state = {"searchFilter": f"tags.mlflow.parentRunId = '{study_run_id}'", "orderByKey": "metrics.`rank`",
             "orderByAsc": True, "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
             "modelVersionFilter": "All Runs",
             "selectedColumns": ["attributes.`Description`", *(f"metrics.`{c}`" for c in dict.fromkeys(columns)),
                                 "tags.`sig`"],  # the UI orders them by group (attributes, metrics, tags), then name
             "columnOrder": [], "columnWidths": {}, "runsHiddenMode": "FIRST_10_RUNS", "viewMaximized": False,
             "runListHidden": False, "isAccordionReordered": False, "useGroupedValuesInCharts": True,
             "hideEmptyCharts": True, "groupBy": None, "groupsExpanded": {},
             "chartsSearchFilter": metric,  # chart mode opens on the metric's curves, one line per arm
             "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""}}
    now = int(time.time() * 1000)
    packed = base64.b64encode(zlib.compress(json.dumps(state).encode())).decode()
    return {f"{VIEW_TAG}{RANKING_VIEW}": json.dumps({"name": "ranking", "createdAt": now, "updatedAt": now,
                                                     "state": f"deflate;{packed}"})}
