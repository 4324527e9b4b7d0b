"""The ranking step's outputs — ranking.csv, ranking.md, scaling.png — computed from the MLflow store alone."""

import json
from pathlib import Path

from tasks import plots, ranking, tracking
from tasks.study import LOWER_IS_BETTER


def rank_from_mlflow(uri: str, study_run_id: str, out_dir: Path, metric: str | None = None) -> dict:
    """Read a finished study from MLflow, fit every arm, rank; write the three files and log them on the study run."""
    params, licenses, points = tracking.read_study(uri, study_run_id)
    metric = metric or params["primary_metric"]
    target = int(params["target_size"])
    if not points:
        raise ValueError(f"study run {study_run_id} has no finished points to rank")
    rows = ranking.rank_arms(points, licenses, metric, target, lower_is_better=metric in LOWER_IS_BETTER)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking.csv").write_text(ranking.to_csv(rows, metric, target))
    (out_dir / "ranking.md").write_text(ranking.to_markdown(rows, metric, target))
    plots.scaling_plot(rows, points, metric, target, out_dir / "scaling.png")
    fits = {r.arm: {"form": r.fit.form, "params": r.fit.params, "note": r.fit.note, "rmse": r.fit.rmse} for r in rows}
    (out_dir / "fits.json").write_text(json.dumps(fits, indent=2))
    for name in ("ranking.csv", "ranking.md", "scaling.png", "fits.json"):
        tracking.log_artifact(uri, study_run_id, out_dir / name)
    best = next((r for r in rows if r.arm != ranking.CONTROL), rows[0])
    tracking.set_tags(uri, study_run_id, {"curate.best_arm": rows[0].arm, "curate.best_candidate": best.arm,
                                          "curate.ranked_on": metric})
    return {"metric": metric, "target_size": target, "rows": ranking.to_records(rows, metric, target),
            "markdown": ranking.to_markdown(rows, metric, target), "out_dir": str(out_dir)}
