"""Rank arms at the target size, with intervals, P(best), significance vs the control, and the method the
back-test supports. Plain functions over points read from MLflow; the numbers only (tasks.core.render turns a
ranking into every text and table the surfaces show)."""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from tasks.common import CONTROL, is_placebo
from tasks.core import backtest as bt
from tasks.core import uncertainty as unc
from tasks.core.scaling import FREE, Fit, fit_arms

AUTO_BACKTEST_SIZES = 4  # the ranking back-tests itself when a study has this many sizes


@dataclass(frozen=True)
class RankOptions:
    """How one metric is ranked: the study's ranking section, the metric's direction and bounds, and its
    per-example form (tasks.backends.report.rank_options builds it; pruning uses the same object)."""

    lower_is_better: bool = False
    fit_form: str = "auto"  # 'auto', 'power_law' or 'shared_exponent'
    method: str = "auto"  # 'auto', 'fit' or 'observed'
    intervals: bool = True
    confidence: float = 0.9
    n_boot: int = 400
    seed: int = 0
    bounds: tuple = FREE  # where the metric's fitted curve must stay
    metric_fn: Callable | None = None  # metric_fn(arrays, idx): the metric on resampled examples, for intervals
    bands: bool = True  # False skips the fitted-curve bands (for the plot) and, ranking on observed values, every refit


@dataclass
class Point:
    arm: str
    size: int
    seed: int
    metrics: dict
    examples: dict | None = None  # per-example arrays (the task type's example_arrays), for the bootstrap


@dataclass
class RankRow:
    rank: int
    arm: str
    license: str
    observed: dict  # size -> mean metric over seeds
    predicted: float  # the estimate ranked on: fitted at the target size, or observed at the largest size
    delta_vs_control: float
    fit: Fit
    interval: tuple | None = None
    delta_interval: tuple | None = None
    p_best: float | None = None
    significance: str = ""
    note: str = ""  # why this arm's fit is unreliable, if it is
    profile: dict = field(default_factory=dict)
    mde: float | None = None  # smallest true delta vs the control this study detects (80% power)
    gates: list[dict] = field(default_factory=list)  # one result per quality gate (tasks.core.gates.judge)
    pruned: str = ""  # successive halving: 'pruned at N' (the arm trained no larger size; ranked last)


@dataclass
class Ranking:
    rows: list[RankRow]
    metric: str
    target: int
    method: str  # 'fit' or 'observed'
    method_note: str
    confidence: float
    backtest: dict | None = None
    per_size: list[dict] = field(default_factory=list)  # paired delta vs control at each measured size
    point_intervals: dict = field(default_factory=dict)  # (arm, size) -> (lo, hi)
    bands: dict = field(default_factory=dict)  # arm -> (grid, lo, hi) of the fitted curve
    n_boot: int = 0
    noise: dict | None = None  # training noise measured from seeds (uncertainty.training_noise), None: not measured
    placebo: dict | None = None  # the A/A check: placebo arms called different from the control
    gates: list[str] = field(default_factory=list)  # the study's quality gates, as written

    @property
    def gated(self) -> list[RankRow]:
        return [row for row in self.rows if any(g["status"] == "fail" for g in row.gates)]


def observed_means(points: list[Point], metric: str) -> dict[str, dict[int, float]]:
    by = defaultdict(lambda: defaultdict(list))
    for p in points:
        if metric in p.metrics:
            by[p.arm][p.size].append(p.metrics[metric])
    return {arm: {s: float(np.mean(v)) for s, v in sorted(sizes.items())} for arm, sizes in by.items()}


def unreliable(fit: Fit, observed: dict[int, float], lower_is_better: bool) -> str:
    """Why a fit should not be trusted for extrapolation ('' when it can be)."""
    sizes = sorted(observed)
    if len(sizes) < 3:
        return f"only {len(sizes)} sizes: too few for a trend"
    values = [observed[s] for s in sizes]
    rho = spearmanr(sizes, values).statistic if np.ptp(values) > 0 else float("nan")
    if not np.isnan(rho) and (rho <= 0 if not lower_is_better else rho >= 0):
        return f"not improving with size (Spearman rho {rho:+.2f} between size and metric)"
    slope = fit.params.get("B", fit.params.get("b", 0.0))
    if fit.form == "constant" or abs(slope) < 1e-9 or np.isnan(rho):
        return "flat: the fit finds no improvement with size"
    return ""


def _better(values: np.ndarray, lower_is_better: bool) -> np.ndarray:
    return -values if lower_is_better else values


def rank_arms(points: list[Point], licenses: dict[str, str], metric: str, target_size: int,
              options: RankOptions = RankOptions(), profiles: dict | None = None) -> Ranking:
    """Fit each arm, choose fit or observed ranking (back-test and fit checks), bootstrap the uncertainty, order."""
    o = options
    means = observed_means(points, metric)
    arms = list(means)
    curves = {a: (list(means[a]), list(means[a].values())) for a in arms}
    fits = fit_arms(curves, o.bounds, not o.lower_is_better, o.fit_form)
    notes = {a: unreliable(fits[a], means[a], o.lower_is_better) for a in arms}
    largest = max(s for m in means.values() for s in m)
    result, chosen, why = _method(means, notes, metric, o)
    where = target_size if chosen == "fit" else largest

    def estimate(fitted: dict[str, Fit], observed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if chosen == "fit":
            return {a: np.asarray(fitted[a].predict(target_size), float) for a in arms}
        return {a: observed[a] for a in arms}

    est = {a: float(v) for a, v in estimate(fits, {a: np.float64(means[a].get(largest, np.nan)) for a in arms}).items()}
    base = est.get(CONTROL, float("nan"))
    order = sorted(arms, key=lambda a: est[a], reverse=not o.lower_is_better)
    ranks = {a: i + 1 for i, a in enumerate(a for a in order if not is_placebo(a))}
    rows = [RankRow(ranks.get(a, 0), a, licenses.get(a, ""), means[a], est[a], est[a] - base, fits[a], note=notes[a],
                    profile=(profiles or {}).get(a, {})) for a in order]
    out = Ranking(rows, metric, target_size, chosen, f"ranked on {'fit' if chosen == 'fit' else 'observed'} "
                  f"{metric} at {where}: {why}", o.confidence, result)
    if o.intervals and o.metric_fn and all(p.examples is not None for p in points if p.arm in arms):
        _bootstrap(out, points, fits, o, estimate, largest)
    return out


def _method(means: dict, notes: dict, metric: str, o: RankOptions) -> tuple[dict | None, str, str]:
    """(the back-test's result or None, 'fit' or 'observed', why): the study's choice, or the back-test's."""
    common = set.intersection(*(set(m) for m in means.values()))
    real = {a: m for a, m in means.items() if not is_placebo(a)}  # placebos never judge the extrapolation
    result = None
    if o.method == "auto" and len(common) >= AUTO_BACKTEST_SIZES and len(real) >= 2:
        result = bt.backtest(real, metric, o.lower_is_better, o.fit_form, o.bounds)
    if o.method != "auto":
        return result, o.method, f"set in the study (ranking.method: {o.method})"
    chosen = "fit" if result is None else result["winner"]
    why = f"fewer than {AUTO_BACKTEST_SIZES} sizes: no back-test"
    if result:
        held = f"the back-test (held-out size {result['held_out']})"
        why = {"fit": f"{held} supports the extrapolation",
               "observed": f"{held} does not support the extrapolation ({result['reason']})",
               "inconclusive": f"{held} is inconclusive ({result['reason']}), so the observed estimate "
                               f"is used"}[chosen]
        chosen = "observed" if chosen == "inconclusive" else chosen
    if chosen == "fit" and any(notes.values()):
        chosen, why = "observed", f"{why}, but {sum(map(bool, notes.values()))} arm fit(s) are unreliable"
    return result, chosen, why


def _bootstrap(out: Ranking, points, fits, o: RankOptions, estimate, largest) -> None:
    """Resample benchmark examples (paired across arms) and seeds; refit every arm on every resample."""
    arms = [r.arm for r in out.rows]
    full, out.noise, samples = unc.replicate_samples(points, o.metric_fn, o.n_boot, o.seed)
    if out.noise:
        multi = sorted(k for k, v in full.items() if len(v) >= 2)
        out.noise["source"] = (f"control replicates at sizes {sorted({s for _, s in multi})}"
                               if {a for a, _ in multi} == {CONTROL} else "the seeds of every point")
    sizes = {a: sorted(s for (arm, s) in samples if arm == a) for a in arms}
    grid = np.geomspace(min(min(s) for s in sizes.values()), max(out.target, largest), 60)
    preds, curves = {a: np.empty(o.n_boot) for a in arms}, {a: np.empty((o.n_boot, len(grid))) for a in arms}
    refits = o.bands or out.method == "fit"
    for b in range(o.n_boot):
        refit = fit_arms({a: (sizes[a], [samples[(a, s)][b] for s in sizes[a]]) for a in arms}, o.bounds,
                         not o.lower_is_better, o.fit_form, start=fits) if refits else fits
        observed = {a: samples[(a, largest)][b] if (a, largest) in samples else np.nan for a in arms}
        for a, v in estimate(refit, observed).items():
            preds[a][b] = v
        for a in arms:
            curves[a][b] = refit[a].predict(grid) if o.bands else np.nan
    _read_samples(out, preds, samples, o.lower_is_better)
    out.bands = {a: (grid, *unc.interval(curves[a], out.confidence)) for a in arms} if o.bands else {}
    out.n_boot = o.n_boot


def _read_samples(out: Ranking, preds: dict, samples: dict, lower_is_better: bool) -> None:
    """Intervals, P(best), deltas vs the control with their significance and MDE, per row and per measured size."""
    arms = [r.arm for r in out.rows]
    real = [a for a in arms if not is_placebo(a)]
    best = np.asarray(real)[np.argmax(_better(np.stack([preds[a] for a in real], 1), lower_is_better), 1)]
    has_control = CONTROL in arms

    def sig(lo, hi) -> str:  # without a training-noise measurement no arm is called better or worse
        return unc.significance(lo, hi, lower_is_better) if out.noise else "?"

    for row in out.rows:
        row.interval = tuple(map(float, unc.interval(preds[row.arm], out.confidence)))
        row.p_best = None if is_placebo(row.arm) else float(np.mean(best == row.arm))
        if has_control and row.arm != CONTROL:
            lo, hi = unc.interval(preds[row.arm] - preds[CONTROL], out.confidence)
            row.delta_interval, row.significance = (float(lo), float(hi)), sig(lo, hi)
            row.mde = unc.min_detectable(lo, hi, out.confidence)
    for (a, s), v in sorted(samples.items()):
        out.point_intervals[(a, s)] = tuple(map(float, unc.interval(v, out.confidence)))
        if has_control and a != CONTROL and (CONTROL, s) in samples:
            d = v - samples[(CONTROL, s)]
            lo, hi = unc.interval(d, out.confidence)
            out.per_size.append({"arm": a, "size": s, "delta": float(d[0]), "lo": float(lo), "hi": float(hi),
                                 "significance": sig(lo, hi)})
    out.placebo = placebo_check(out)


def add_pruned(r: Ranking, pruned: dict[str, dict], points: list[Point], licenses: dict, profiles: dict) -> None:
    """Arms stopped by successive halving rank below every arm that finished, in order of their delta vs the
    leader where they stopped, with that delta's interval (tasks.ops.pruning)."""
    means = observed_means(points, r.metric)
    for arm, info in sorted(pruned.items(), key=lambda kv: -kv[1]["delta"]):
        r.rows.append(RankRow(len(r.rows) + 1, arm, licenses.get(arm, ""), means.get(arm, {}), float("nan"),
                              float("nan"), Fit("constant", {"mean": float("nan")}), profile=profiles.get(arm, {}),
                              pruned=f"pruned at {info['size']}: {info['delta']:+.4f} vs the leader {info['leader']} "
                                     f"[{info['lo']:+.4f}, {info['hi']:+.4f}]"))


def placebo_check(r: Ranking) -> dict | None:
    """How often the ranking calls a placebo arm (D0's own distribution) different from the control: at the ranked
    estimate, and at each measured size. Each call is a false positive; the nominal rate is 1 - confidence."""
    rows = [row for row in r.rows if is_placebo(row.arm) and row.significance]
    if not rows:
        return None
    sizes = [d for d in r.per_size if is_placebo(d["arm"])]
    called = [row.arm for row in rows if row.significance in ("+", "-")]
    return {"arms": len(rows), "called": called, "rate": len(called) / len(rows), "nominal": round(1 - r.confidence, 4),
            "sizes": len(sizes), "sizes_called": sum(d["significance"] in ("+", "-") for d in sizes),
            "deltas": {row.arm: row.delta_vs_control for row in rows}}
