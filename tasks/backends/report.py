"""The ranking step's outputs — ranking.csv/.md, scaling.png, fits.json, backtest.md — from the MLflow store alone."""

import json
import tempfile
from pathlib import Path

from scipy.stats import kendalltau

from tasks import tasktypes
from tasks.backends import plots, tracking
from tasks.common import CONTROL, is_placebo
from tasks.core import backtest as bt
from tasks.core import gates
from tasks.core import ranking
from tasks.core import uncertainty as unc
from tasks.errors import WorkbenchError
from tasks.schema.study import Study
from tasks.tasktypes.base import TaskType


def _options(study: Study, kind: TaskType, metric: str) -> dict:
    """rank_arms' options for one metric: the study's ranking section, the metric's direction, bounds and
    per-example form (for the bootstrap)."""
    r = study.ranking
    return {"intervals": r.intervals, "confidence": r.confidence, "n_boot": r.bootstrap, "fit_form": r.fit,
            "method": r.method, "seed": study.seed, "lower_is_better": metric in kind.lower_is_better,
            "bounds": kind.bounds(metric), "metric_fn": lambda ex, idx: kind.resample(metric, ex, idx)}


def _companions(metric: str, kind: TaskType, logged: set[str]) -> list[str]:
    """Metrics the ranking is compared with, in order of preference: the continuous one, or the primary when ranking
    on the continuous, then the other logged per-example metrics (the first on which the arms differ is used)."""
    order = dict.fromkeys([kind.continuous, kind.primary, *kind.per_example, *kind.metrics])
    return [m for m in order if m != metric and m in logged and m not in kind.lower_is_better]


def _points(study: dict, kind: TaskType) -> list[ranking.Point]:
    return [ranking.Point(p["arm"], p["size"], p["seed"], p["metrics"],
                          kind.example_arrays(p["records"], study["context"]) if p["records"] else None)
            for p in study["points"]]


def agreement(a: ranking.Ranking, b: ranking.Ranking, kind: TaskType) -> dict:
    """How two rankings of the same arms agree: Kendall tau of their estimates and whether the winner is the same."""
    ea, eb = ({r.arm: r.predicted * (-1 if r_.metric in kind.lower_is_better else 1) for r in r_.rows} for r_ in (a, b))
    arms = sorted(ea)
    tau = kendalltau([ea[x] for x in arms], [eb[x] for x in arms]).statistic if len(arms) > 2 else float("nan")
    return {"metric": b.metric, "kendall_tau": float(tau), "same_best": a.rows[0].arm == b.rows[0].arm,
            "order": [r.arm for r in b.rows], "all_tied": len(set(eb.values())) == 1}


def rank_from_mlflow(uri: str, study_run_id: str, out_dir: Path, metric: str | None = None) -> dict:
    """Read a finished study from MLflow, fit, back-test, bootstrap and rank; write the files and log them."""
    study = tracking.read_study(uri, study_run_id)
    spec, kind = study["study"], tasktypes.get(study["study"].task)
    points = _points(study, kind)
    metric = metric or spec.primary
    target = spec.target_size
    if not points:
        raise WorkbenchError(f"study run {study_run_id} has no finished points to rank")
    if not any(metric in p.metrics for p in points):
        raise WorkbenchError(f"no point logged metric '{metric}'; logged: {', '.join(sorted(points[0].metrics))}")
    pruned = study["pruned"]  # successive halving: ranked last, never fitted or extrapolated
    every = points
    points = [p for p in points if p.arm not in pruned]
    result = ranking.rank_arms(points, study["licenses"], metric, target, profiles=study["profiles"],
                               **_options(spec, kind, metric))
    if spec.gates:
        by_metric = {m: ranking.rank_arms(points, study["licenses"], m, target,
                                          **{**_options(spec, kind, m), "method": result.method, "bands": False})
                     for m in dict.fromkeys(gates.parse(g).metric for g in spec.gates)}
        gates.apply_gates(result, spec.gates, gates.evaluate(spec.gates, by_metric, CONTROL))
    agree = None
    for other in _companions(metric, kind, set(points[0].metrics)):
        second = ranking.rank_arms(points, study["licenses"], other, target,
                                   **{**_options(spec, kind, other), "intervals": False})
        found = agreement(result, second, kind)
        agree = agree or found  # when every candidate metric is tied, the preferred one is reported as such
        if not found["all_tied"]:
            agree = found
            break
    extra = (f"Agreement with the ranking on {agree['metric']}: Kendall tau {agree['kendall_tau']:+.2f}, "
             f"{'same' if agree['same_best'] else 'different'} best arm (order: {', '.join(agree['order'])}).") if agree else ""
    if agree and agree["all_tied"]:
        extra = f"Agreement with the ranking on {agree['metric']}: none to measure, every arm scored the same on it."
    if spec.judge:  # answers the judge gave no verdict for: counted on every point, summed here
        judged = [p for p in points if "judge_unparsable" in p.metrics]
        missing = int(sum(p.metrics["judge_unparsable"] for p in judged))
        extra += (f"\nJudge ({spec.judge.metric}): {missing} of {int(sum(p.metrics['n_examples'] for p in judged))} "
                  f"answers had no verdict word (scored {spec.judge.unparsable_score:g}, never dropped).")
    ranking.add_pruned(result, pruned, every, study["licenses"], study["profiles"])
    if pruned:
        extra += (f"\nSuccessive halving after size {min(i['size'] for i in pruned.values())}: "
                  f"{len(pruned)} arm(s) pruned ({', '.join(sorted(pruned))}), ranked last.")
    markdown = ranking.to_markdown(result, extra)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ranking.csv").write_text(ranking.to_csv(result))
    (out_dir / "ranking.md").write_text(markdown)
    plots.scaling_plot(result, every, out_dir / "scaling.png")
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
    real = [r for r in result.rows if not is_placebo(r.arm)]
    best = next((r for r in real if r.arm != CONTROL), real[0])
    tags = {tracking.BEST_ARM: real[0].arm, tracking.BEST_CANDIDATE: best.arm, tracking.RANKED_ON: metric,
            tracking.METHOD: result.method}
    if agree:
        tags["curate.agreement_kendall_tau"] = f"{agree['kendall_tau']:.3f}"
    tracking.set_tags(uri, study_run_id, tags)
    show_in_mlflow(uri, study_run_id, study["arm_runs"], result, markdown)
    if result.placebo:
        p = result.placebo
        tracking.log_metrics(uri, study_run_id, {"placebo_false_positive_rate": p["rate"], "placebo_arms": p["arms"]})
    return {"metric": metric, "target_size": target, "ranked_at": result.ranked_at,
            "rows": ranking.to_records(result), "markdown": markdown,
            "placebo": result.placebo and {**result.placebo, "summary": unc.placebo_note(result)},
            "noise": result.noise, "noise_line": unc.noise_line(result), "method": result.method,
            "method_note": result.method_note, "agreement": extra, "backtest": result.backtest, "out_dir": str(out_dir)}


def verdict(result: ranking.Ranking) -> str:
    """One line: a winner only when it is distinguishable from the control at the study's confidence; otherwise
    the leader, with what was ranked (observed or predicted, at which size), its delta and interval."""
    real = [r for r in result.rows if not is_placebo(r.arm) and not r.pruned]
    best = next((r for r in real if r.arm != CONTROL), None)
    if best is None:
        return f"Only the control finished ({result.metric} {result.ranked_at})."
    pct = f"{round(result.confidence * 100)} %"
    iv = f" {ranking._fmt_interval(best.delta_interval, True)}" if best.delta_interval else ""
    facts = (f"{result.metric} {result.ranked_at} {best.predicted:.4g}, delta vs control "
             f"{best.delta_vs_control:+.4g}{iv}")
    if best.significance == "+":
        return f"**Best candidate: {best.arm}**, better than the control at {pct}: {facts}."
    if best.significance == "-":
        return f"**No candidate beats the control**: the leader, {best.arm}, is worse at {pct}: {facts}."
    if best.significance == "~":
        return f"**No candidate is distinguishable from the control at {pct}**; leader {best.arm}: {facts}."
    return f"**Leader: {best.arm}** (significance unknown: no training-noise measurement): {facts}."


def show_in_mlflow(uri: str, study_run_id: str, arm_runs: dict[str, str], result: ranking.Ranking, markdown: str) -> None:
    """What the MLflow UI shows first: the study run's description is the verdict and the ranking table, and each
    arm run carries its rank, delta vs control (delta, delta_lo, delta_hi) and P(best) as metrics, its significance
    as the tag `sig`, and a one-line description."""
    tracking.set_tags(uri, study_run_id, {tracking.NOTE: f"{verdict(result)}\n\n{markdown}"[:60000]})
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
        line = row.pruned or (f"{result.metric} {result.ranked_at} {row.predicted:.4g}; delta vs control "
                              f"{row.delta_vs_control:+.4f} {ranking._fmt_interval(row.delta_interval, True)} "
                              f"{row.significance}".rstrip())
        # the run name leads the MLflow runs table (which orders metric columns by name, whatever a view asks):
        # "1. sst2-extra" puts the rank first there and in every chart legend; the arm stays in its tag
        tracking.set_tags(uri, arm_runs[row.arm], {tracking.NOTE: f"rank {row.rank or 'A/A'} of {len(result.rows)}: {line}",
                                                   tracking.SIG: row.significance or "",
                                                   tracking.RUN_NAME: f"{row.rank}. {row.arm}" if row.rank else row.arm})


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
    means = {a: m for a, m in ranking.observed_means(_points(study, kind), metric).items() if not is_placebo(a)}
    result = bt.backtest(means, metric, metric in kind.lower_is_better, spec.ranking.fit, kind.bounds(metric))
    markdown = bt.to_markdown(result, metric)
    tracking.log_metrics(uri, study_run_id, backtest_metrics(result))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "backtest.md").write_text(markdown)
        tracking.log_artifact(uri, study_run_id, Path(tmp) / "backtest.md")
    return {**result, "metric": metric, "markdown": markdown}
