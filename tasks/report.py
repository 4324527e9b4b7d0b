"""The ranking step's outputs — ranking.csv/.md, scaling.png, fits.json, backtest.md — from the MLflow store alone."""

import json
import tempfile
from pathlib import Path

from scipy.stats import kendalltau

from tasks import backtest as bt
from tasks import plots, ranking, tracking
from tasks.errors import WorkbenchError
from tasks.study import LOWER_IS_BETTER, TASK_METRICS

DEFAULTS = {"intervals": "True", "confidence": "0.9", "bootstrap": "400", "fit": "auto", "method": "auto"}


def _options(params: dict) -> dict:
    """The study's ranking options as logged on the study run (defaults for stores written before they were)."""
    o = {k: params.get(f"ranking.{k}", v) for k, v in DEFAULTS.items()}
    return {"intervals": o["intervals"] == "True", "confidence": float(o["confidence"]), "n_boot": int(o["bootstrap"]),
            "fit_form": o["fit"], "method": o["method"], "seed": int(params.get("seed", 0))}


def _companion(metric: str, task: str) -> str:
    """The metric the ranking is compared with: the continuous gold log-prob, or the task metric when ranking on it."""
    return "gold_logprob" if metric != "gold_logprob" else TASK_METRICS[task][0]


def agreement(a: ranking.Ranking, b: ranking.Ranking) -> dict:
    """How two rankings of the same arms agree: Kendall tau of their estimates and whether the winner is the same."""
    ea, eb = ({r.arm: r.predicted * (-1 if r_.metric in LOWER_IS_BETTER else 1) for r in r_.rows} for r_ in (a, b))
    arms = sorted(ea)
    tau = kendalltau([ea[x] for x in arms], [eb[x] for x in arms]).statistic if len(arms) > 2 else float("nan")
    return {"metric": b.metric, "kendall_tau": float(tau), "same_best": a.rows[0].arm == b.rows[0].arm,
            "order": [r.arm for r in b.rows]}


def rank_from_mlflow(uri: str, study_run_id: str, out_dir: Path, metric: str | None = None) -> dict:
    """Read a finished study from MLflow, fit, back-test, bootstrap and rank; write the files and log them."""
    study = tracking.read_study(uri, study_run_id)
    params, points = study["params"], study["points"]
    metric = metric or params["primary_metric"]
    target = int(params["target_size"])
    if not points:
        raise WorkbenchError(f"study run {study_run_id} has no finished points to rank")
    if not any(metric in p.metrics for p in points):
        raise WorkbenchError(f"no point logged metric '{metric}'; logged: {', '.join(sorted(points[0].metrics))}")
    opts = _options(params)
    lower = metric in LOWER_IS_BETTER
    result = ranking.rank_arms(points, study["licenses"], metric, target, lower, profiles=study["profiles"], **opts)
    other = _companion(metric, params["task"])
    agree = None
    if any(other in p.metrics for p in points):
        second = ranking.rank_arms(points, study["licenses"], other, target, other in LOWER_IS_BETTER,
                                   **{**opts, "intervals": False})
        agree = agreement(result, second)
    extra = (f"Agreement with the ranking on {agree['metric']}: Kendall tau {agree['kendall_tau']:+.2f}, "
             f"{'same' if agree['same_best'] else 'different'} best arm (order: {', '.join(agree['order'])}).") if agree else ""
    markdown = ranking.to_markdown(result, extra)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking.csv").write_text(ranking.to_csv(result))
    (out_dir / "ranking.md").write_text(markdown)
    plots.scaling_plot(result, points, out_dir / "scaling.png")
    fits = {r.arm: {"form": r.fit.form, "params": r.fit.params, "note": r.fit.note, "unreliable": r.note,
                    "rmse": r.fit.rmse} for r in result.rows}
    (out_dir / "fits.json").write_text(json.dumps(fits, indent=2))
    names = ["ranking.csv", "ranking.md", "scaling.png", "fits.json"]
    if result.backtest:
        (out_dir / "backtest.md").write_text(bt.to_markdown(result.backtest, metric))
        names.append("backtest.md")
        tracking.log_metrics(uri, study_run_id, backtest_metrics(result.backtest))
    for name in names:
        tracking.log_artifact(uri, study_run_id, out_dir / name)
    best = next((r for r in result.rows if r.arm != ranking.CONTROL), result.rows[0])
    tags = {"curate.best_arm": result.rows[0].arm, "curate.best_candidate": best.arm, "curate.ranked_on": metric,
            "curate.ranking_method": result.method}
    if agree:
        tags["curate.agreement_kendall_tau"] = f"{agree['kendall_tau']:.3f}"
    tracking.set_tags(uri, study_run_id, tags)
    return {"metric": metric, "target_size": target, "rows": ranking.to_records(result), "markdown": markdown,
            "method_note": result.method_note, "agreement": extra, "backtest": result.backtest, "out_dir": str(out_dir)}


def backtest_metrics(result: dict) -> dict:
    """backtest_fit_spearman, backtest_baseline_pairwise_accuracy, ... for the study run."""
    out = {}
    for row, name in zip(result["rows"], ("fit", "baseline")):
        out.update({f"backtest_{name}_{k}": v for k, v in row.items() if k != "method" and v == v})
    return out


def backtest_from_mlflow(uri: str, study_run_id: str, metric: str | None = None) -> dict:
    """`curate backtest`: the fidelity table of a finished study, logged on its study run."""
    study = tracking.read_study(uri, study_run_id, examples=False)
    metric = metric or study["params"]["primary_metric"]
    means = ranking.observed_means(study["points"], metric)
    result = bt.backtest(means, metric, metric in LOWER_IS_BETTER, _options(study["params"])["fit_form"])
    markdown = bt.to_markdown(result, metric)
    tracking.log_metrics(uri, study_run_id, backtest_metrics(result))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "backtest.md").write_text(markdown)
        tracking.log_artifact(uri, study_run_id, Path(tmp) / "backtest.md")
    return {**result, "metric": metric, "markdown": markdown}
