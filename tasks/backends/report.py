"""The ranking step's outputs — ranking.csv/.md, scaling.png, fits.json, backtest.md — from the MLflow store alone,
and what the MLflow UI shows of them (texts: tasks.core.render)."""

import dataclasses
import json
import tempfile
from pathlib import Path

from scipy.stats import kendalltau

from tasks import tasktypes
from tasks.backends import plots, tracking
from tasks.common import CONTROL, is_placebo
from tasks.core import backtest as bt
from tasks.core import gates, render
from tasks.core.ranking import Point, RankOptions, Ranking, add_pruned, observed_means, rank_arms
from tasks.errors import WorkbenchError
from tasks.schema.study import Study
from tasks.tasktypes.base import TaskType


def rank_options(study: Study, kind: TaskType, metric: str) -> RankOptions:
    """How `metric` is ranked in this study: its ranking section, the metric's direction, bounds and per-example
    form (for the bootstrap). The ranking and successive halving (tasks.ops.pruning) both use it."""
    r = study.ranking
    return RankOptions(lower_is_better=metric in kind.lower_is_better, fit_form=r.fit, method=r.method,
                       intervals=r.intervals, confidence=r.confidence, n_boot=r.bootstrap, seed=study.seed,
                       bounds=kind.bounds(metric), metric_fn=lambda ex, idx: kind.resample(metric, ex, idx))


def points_of(study: dict, kind: TaskType) -> list[Point]:
    """The points of a study read from MLflow (tracking.read_study), with their per-example arrays where logged, in
    one order (arm, size, seed) whatever order they ran and were logged in: the bootstrap draws per point in this
    order, so the same points always give the same intervals."""
    return [Point(p["arm"], p["size"], p["seed"], p["metrics"],
                  kind.example_arrays(p["records"], study["context"]) if p["records"] else None)
            for p in sorted(study["points"], key=lambda p: (p["arm"], p["size"], p["seed"]))]


def _companions(metric: str, kind: TaskType, logged: set[str]) -> list[str]:
    """Metrics the ranking is compared with, in order of preference: the continuous one, or the primary when ranking
    on the continuous, then the other logged per-example metrics (the first on which the arms differ is used)."""
    order = dict.fromkeys([kind.continuous, kind.primary, *kind.per_example, *kind.metrics])
    return [m for m in order if m != metric and m in logged and m not in kind.lower_is_better]


def agreement(a: Ranking, b: Ranking, kind: TaskType) -> dict:
    """How two rankings of the same arms agree: Kendall tau of their estimates and whether the winner is the same."""
    ea, eb = ({r.arm: r.predicted * (-1 if r_.metric in kind.lower_is_better else 1) for r in r_.rows} for r_ in (a, b))
    arms = sorted(ea)
    tau = kendalltau([ea[x] for x in arms], [eb[x] for x in arms]).statistic if len(arms) > 2 else float("nan")
    return {"metric": b.metric, "kendall_tau": float(tau), "same_best": a.rows[0].arm == b.rows[0].arm,
            "order": [r.arm for r in b.rows], "all_tied": len(set(eb.values())) == 1}


def _rank(spec: Study, kind: TaskType, study: dict, points: list[Point], metric: str) -> tuple[Ranking, dict | None]:
    """The ranking on `metric` with its quality gates applied, and its agreement with the first companion metric on
    which the arms differ (the preferred one, reported as tied, when they differ on none)."""
    licenses, target = study["licenses"], spec.target_size
    result = rank_arms(points, licenses, metric, target, rank_options(spec, kind, metric), study["profiles"])
    if spec.gates:
        same = {"method": result.method, "bands": False}
        by_metric = {m: rank_arms(points, licenses, m, target, dataclasses.replace(rank_options(spec, kind, m), **same))
                     for m in dict.fromkeys(gates.parse(g).metric for g in spec.gates)}
        gates.apply_gates(result, spec.gates, gates.evaluate(spec.gates, by_metric, CONTROL))
    agree = None
    for other in _companions(metric, kind, set(points[0].metrics)):
        options = dataclasses.replace(rank_options(spec, kind, other), intervals=False)
        found = agreement(result, rank_arms(points, licenses, other, target, options), kind)
        agree = agree or found
        if not found["all_tied"]:
            return result, found
    return result, agree


def _notes(spec: Study, points: list[Point], pruned: dict, agree: dict | None) -> str:
    """ranking.md's lines below the table: agreement, the judge's unparsable answers, successive halving."""
    extra = render.agreement_note(agree)
    if spec.judge:  # answers the judge gave no verdict for: counted on every point, summed here
        judged = [p for p in points if "judge_unparsable" in p.metrics]
        extra += "\n" + render.judge_note(spec.judge.metric, int(sum(p.metrics["judge_unparsable"] for p in judged)),
                                          int(sum(p.metrics["n_examples"] for p in judged)), spec.judge.unparsable_score)
    return extra + ("\n" + render.pruned_note(pruned) if pruned else "")


def rank_from_mlflow(uri: str, study_run_id: str, out_dir: Path, metric: str | None = None) -> dict:
    """Read a finished study from MLflow, fit, back-test, bootstrap and rank; write the files and log them."""
    study = tracking.read_study(uri, study_run_id)
    spec, kind = study["study"], tasktypes.get(study["study"].task)
    every = points_of(study, kind)
    metric = metric or spec.primary
    if not every:
        raise WorkbenchError(f"study run {study_run_id} has no finished points to rank")
    if not any(metric in p.metrics for p in every):
        raise WorkbenchError(f"no point logged metric '{metric}'; logged: {', '.join(sorted(every[0].metrics))}")
    pruned = study["pruned"]  # successive halving: ranked last, never fitted or extrapolated
    points = [p for p in every if p.arm not in pruned]
    result, agree = _rank(spec, kind, study, points, metric)
    extra = _notes(spec, points, pruned, agree)
    add_pruned(result, pruned, every, study["licenses"], study["profiles"])
    markdown = render.to_markdown(result, extra)
    _write(uri, study_run_id, Path(out_dir), result, every, markdown)
    tags = {tracking.RANKED_ON: metric, tracking.METHOD: result.method}
    real = [r for r in result.rows if not is_placebo(r.arm)]
    tags.update({tracking.BEST_ARM: real[0].arm, tracking.BEST_CANDIDATE: next((r for r in real if r.arm != CONTROL),
                                                                                real[0]).arm})
    if agree:
        tags["curate.agreement_kendall_tau"] = f"{agree['kendall_tau']:.3f}"
    tracking.set_tags(uri, study_run_id, tags)
    show_in_mlflow(uri, study_run_id, study["arm_runs"], result, markdown)
    if result.placebo:
        p = result.placebo
        tracking.log_metrics(uri, study_run_id, {"placebo_false_positive_rate": p["rate"], "placebo_arms": p["arms"]})
    return {"metric": metric, "target_size": spec.target_size, "ranked_at": render.ranked_at(result),
            "rows": render.to_records(result), "markdown": markdown,
            "placebo": result.placebo and {**result.placebo, "summary": render.placebo_note(result)},
            "noise": result.noise, "noise_line": render.noise_line(result), "method": result.method,
            "method_note": result.method_note, "agreement": extra, "backtest": result.backtest, "out_dir": str(out_dir)}


def _write(uri: str, study_run_id: str, out_dir: Path, result: Ranking, points: list[Point], markdown: str) -> None:
    """ranking.csv/.md, scaling.png, fits.json (and backtest.md) in out_dir, each logged on the study run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking.csv").write_text(render.to_csv(result))
    (out_dir / "ranking.md").write_text(markdown)
    plots.scaling_plot(result, points, out_dir / "scaling.png")
    fits = {r.arm: {"form": r.fit.form, "params": r.fit.params, "note": r.fit.note, "unreliable": r.note,
                    "rmse": r.fit.rmse} for r in result.rows}
    (out_dir / "fits.json").write_text(json.dumps(fits, indent=2))
    names = ["ranking.csv", "ranking.md", "scaling.png", "fits.json"]
    if result.backtest:
        (out_dir / "backtest.md").write_text(render.backtest_markdown(result.backtest, result.metric))
        names.append("backtest.md")
        tracking.log_metrics(uri, study_run_id, backtest_metrics(result.backtest))
    for name in names:
        tracking.log_artifact(uri, study_run_id, out_dir / name)


def show_in_mlflow(uri: str, study_run_id: str, arm_runs: dict[str, str], result: Ranking, markdown: str) -> None:
    """What the MLflow UI shows first: the study run's description is the verdict and the ranking table, and each
    arm run carries its rank, delta vs control (delta, delta_lo, delta_hi) and P(best) as metrics, its significance
    as the tag `sig`, a one-line description and a name that starts with its rank."""
    tracking.set_tags(uri, study_run_id, {tracking.NOTE: f"{render.verdict(result)}\n\n{markdown}"[:60000]})
    for row in result.rows:
        if row.arm not in arm_runs:
            continue
        metrics = {"rank": row.rank} if row.rank else {}
        if not row.pruned:  # short, distinct names: the MLflow runs table cuts long headers to the same prefix
            metrics["delta"] = row.delta_vs_control
        if row.delta_interval:
            metrics.update(delta_lo=row.delta_interval[0], delta_hi=row.delta_interval[1])
        if row.p_best is not None:
            metrics["p_best"] = row.p_best
        # shown to people in the MLflow table: 4 significant digits (ranking.csv keeps its own precision)
        tracking.log_metrics(uri, arm_runs[row.arm], {k: float(f"{v:.4g}") for k, v in metrics.items()})
        tracking.set_tags(uri, arm_runs[row.arm], {tracking.NOTE: render.arm_description(result, row),
                                                   tracking.SIG: row.significance or "",
                                                   tracking.RUN_NAME: render.run_name(row)})


def backtest_metrics(result: dict) -> dict:
    """backtest_fit_spearman, backtest_baseline_pairwise_accuracy, ... for the study run, to 4 significant digits
    (backtest.md and the ranking's decision use the exact values)."""
    out = {}
    for row, name in zip(result["rows"], ("fit", "baseline")):
        out.update({f"backtest_{name}_{k}": float(f"{v:.4g}") for k, v in row.items() if k != "method" and v == v})
    return out


def backtest_from_mlflow(uri: str, study_run_id: str, metric: str | None = None) -> dict:
    """`curate backtest`: the fidelity table of a finished study, logged on its study run."""
    study = tracking.read_study(uri, study_run_id, examples=False)
    spec, kind = study["study"], tasktypes.get(study["study"].task)
    metric = metric or spec.primary
    means = {a: m for a, m in observed_means(points_of(study, kind), metric).items() if not is_placebo(a)}
    result = bt.backtest(means, metric, metric in kind.lower_is_better, spec.ranking.fit, kind.bounds(metric))
    markdown = render.backtest_markdown(result, metric)
    tracking.log_metrics(uri, study_run_id, backtest_metrics(result))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "backtest.md").write_text(markdown)
        tracking.log_artifact(uri, study_run_id, Path(tmp) / "backtest.md")
    return {**result, "metric": metric, "markdown": markdown}
