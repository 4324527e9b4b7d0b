"""Rank arms at the target size, with intervals, P(best), significance vs the control, and the method the
back-test supports. Plain functions over points read from MLflow."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr

from tasks.common import CONTROL, is_placebo
from tasks.core import backtest as bt
from tasks.core import uncertainty as unc
from tasks.core.gates import gates_note, summary as gate_summary
from tasks.core.scaling import FREE, Fit, fit_arms
AUTO_BACKTEST_SIZES = 4  # the ranking back-tests itself when a study has this many sizes


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

    @property
    def ranked_at(self) -> str:
        """What was ranked, in words, for every surface (terminal, ranking.md, Prefect, MLflow, plot)."""
        return f"predicted at {self.target}" if self.method == "fit" else f"observed at {max(self.rows[0].observed)}"

    estimate_label = property(lambda self: self.ranked_at.replace(" at ", "@"))  # the table's column: observed@128


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
              lower_is_better: bool = False, *, fit_form: str = "auto", method: str = "auto", intervals: bool = True,
              confidence: float = 0.9, n_boot: int = 400, seed: int = 0, profiles: dict | None = None,
              bounds: tuple = FREE, metric_fn=None, bands: bool = True) -> Ranking:
    """Fit each arm, choose fit or observed ranking (back-test and fit checks), bootstrap the uncertainty, order.
    bounds: where the metric's fitted curve must stay; metric_fn(arrays, idx): the metric on resampled examples
    (the task type's `resample`), needed for intervals. bands=False skips the fitted-curve bands (for the plot), and
    with them every refit when the ranking is on observed values."""
    means = observed_means(points, metric)
    arms = list(means)
    curves = {a: (list(means[a]), list(means[a].values())) for a in arms}
    fits = fit_arms(curves, bounds, not lower_is_better, fit_form)
    notes = {a: unreliable(fits[a], means[a], lower_is_better) for a in arms}
    largest = max(s for m in means.values() for s in m)
    common = set.intersection(*(set(m) for m in means.values()))
    real = {a: m for a, m in means.items() if not is_placebo(a)}  # placebos never judge the extrapolation
    result = None
    if method == "auto" and len(common) >= AUTO_BACKTEST_SIZES and len(real) >= 2:
        result = bt.backtest(real, metric, lower_is_better, fit_form, bounds)
    chosen, why = method, f"set in the study (ranking.method: {method})"
    if method == "auto":
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
    where = target_size if chosen == "fit" else largest

    def estimate(fitted: dict[str, Fit], observed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if chosen == "fit":
            return {a: np.asarray(fitted[a].predict(target_size), float) for a in arms}
        return {a: observed[a] for a in arms}

    est = {a: float(v) for a, v in estimate(fits, {a: np.float64(means[a].get(largest, np.nan)) for a in arms}).items()}
    base = est.get(CONTROL, float("nan"))
    order = sorted(arms, key=lambda a: est[a], reverse=not lower_is_better)
    ranks = {a: i + 1 for i, a in enumerate(a for a in order if not is_placebo(a))}
    rows = [RankRow(ranks.get(a, 0), a, licenses.get(a, ""), means[a], est[a], est[a] - base, fits[a], note=notes[a],
                    profile=(profiles or {}).get(a, {})) for a in order]
    out = Ranking(rows, metric, target_size, chosen, f"ranked on {'fit' if chosen == 'fit' else 'observed'} "
                  f"{metric} at {where}: {why}", confidence, result)
    if intervals and metric_fn and all(p.examples is not None for p in points if p.arm in arms):
        _bootstrap(out, points, fits, (fit_form, bounds, metric_fn), lower_is_better, n_boot, seed, estimate, largest,
                   bands)
    return out


def _bootstrap(out: Ranking, points, fits, how, lower_is_better, n_boot, seed, estimate, largest, bands) -> None:
    """Resample benchmark examples (paired across arms) and seeds; refit every arm on every resample."""
    (fit_form, bounds, metric_fn), arms = how, [r.arm for r in out.rows]
    groups = defaultdict(list)
    for p in points:
        groups[(p.arm, p.size)].append(p.examples)
    n = len(next(iter(groups.values()))[0]["gold_logprob"])
    full = {k: [float(metric_fn(a, np.arange(n)[None])[0]) for a in seeds] for k, seeds in groups.items()}
    out.noise = unc.training_noise(full)
    if out.noise:
        multi = sorted(k for k, v in full.items() if len(v) >= 2)
        out.noise["source"] = (f"control replicates at sizes {sorted({s for _, s in multi})}"
                               if {a for a, _ in multi} == {CONTROL} else "the seeds of every point")
    samples = unc.resample_points(groups, metric_fn, n_boot, seed, out.noise)
    sizes = {a: sorted(s for (arm, s) in groups if arm == a) for a in arms}
    grid = np.geomspace(min(min(s) for s in sizes.values()), max(out.target, largest), 60)
    preds, curves = {a: np.empty(n_boot) for a in arms}, {a: np.empty((n_boot, len(grid))) for a in arms}
    refits = bands or out.method == "fit"
    for b in range(n_boot):
        refit = fit_arms({a: (sizes[a], [samples[(a, s)][b] for s in sizes[a]]) for a in arms}, bounds,
                         not lower_is_better, fit_form, start=fits) if refits else fits
        observed = {a: samples[(a, largest)][b] if (a, largest) in samples else np.nan for a in arms}
        for a, v in estimate(refit, observed).items():
            preds[a][b] = v
        for a in arms:
            curves[a][b] = refit[a].predict(grid) if bands else np.nan
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
    out.bands = {a: (grid, *unc.interval(curves[a], out.confidence)) for a in arms} if bands else {}
    out.n_boot = n_boot


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


def _fmt_interval(iv: tuple | None, signed: bool = False) -> str:
    if iv is None:
        return ""
    f = "{:+.4f}" if signed else "{:.4f}"
    return f"[{f.format(iv[0])}, {f.format(iv[1])}]"


def _columns(r: Ranking) -> tuple[list[str], list[list[str]]]:
    sizes = sorted({s for row in r.rows for s in row.observed})
    pct = f"{round(r.confidence * 100)}%"
    header = ["rank", "arm", "license", *[f"{r.metric}@{s}" for s in sizes], r.estimate_label, f"{pct} interval",
              "delta_vs_control", f"delta {pct} interval", "sig", "mde", "p_best", "contaminated", "removed", "rows",
              "duplicates", "d0_copies", "tokens_p50", "method", *(["gates"] if r.gates else [])]
    body = []
    for row in r.rows:
        prof = row.profile
        how = row.pruned or (("fit " + row.fit.form) if r.method == "fit" else "observed")
        body.append([str(row.rank) if row.rank else "A/A", row.arm, row.license,
                     *[f"{row.observed[s]:.4f}" if s in row.observed else "" for s in sizes],
                     "" if row.pruned else f"{row.predicted:.4f}", _fmt_interval(row.interval),
                     "" if row.pruned else f"{row.delta_vs_control:+.4f}",
                     _fmt_interval(row.delta_interval, True), row.significance,
                     "" if row.mde is None else f"{row.mde:.4f}",
                     "" if row.p_best is None else f"{row.p_best:.2f}", str(prof.get("contaminated", "")),
                     *(str(prof.get(k, "")) for k in ("removed", "rows", "duplicates", "d0_copies")),
                     str(prof.get("tokens_p50", "")), how + (" (fit unreliable)" if row.note else ""),
                     *([gate_summary(row.gates)] if r.gates else [])])
    return header, body


def to_csv(r: Ranking) -> str:
    header, body = _columns(r)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    return buf.getvalue()


def to_records(r: Ranking) -> list[dict]:
    header, body = _columns(r)
    return [dict(zip(header, b)) for b in body]


def to_markdown(r: Ranking, extra: str = "") -> str:
    header, body = _columns(r)
    lines = [f"**{r.method_note}.**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    if r.n_boot:
        lines += ["", unc.intervals_note(r)]
    if r.gates:
        lines += ["", gates_note(r)]
    if r.placebo:
        lines += ["", unc.placebo_note(r)]
    if r.per_size:
        lines += ["", "Paired delta vs control at each measured size:", "",
                  "| arm | size | delta | interval | sig |", "|---|---|---|---|---|"]
        lines += [f"| {d['arm']} | {d['size']} | {d['delta']:+.4f} | [{d['lo']:+.4f}, {d['hi']:+.4f}] | {d['significance']} |"
                  for d in r.per_size]
    notes = [f"- {row.arm}: {row.fit.note}" for row in r.rows if row.fit.note]
    notes += [f"- {row.arm}: fit unreliable, {row.note}" for row in r.rows if row.note]
    if notes:
        lines += ["", "Fit notes:", *notes]
    if r.backtest:
        lines += ["", bt.to_markdown(r.backtest, r.metric).rstrip()]
    if extra:
        lines += ["", extra.rstrip()]
    return "\n".join(lines) + "\n"

