"""Back-test: hold out the largest measured size, predict it from the smaller ones, and compare the
extrapolation with the single-scale baseline ("rank by the largest remaining size"). Plain functions.

DataDecide (2025) found that baseline gets ~80% of pairwise decisions right and that no scaling-law
method beat it, so the ranking uses the extrapolation only when this back-test supports it.
"""

from itertools import combinations

import numpy as np
from scipy.stats import kendalltau, spearmanr

from tasks.errors import WorkbenchError
from tasks.core.scaling import FREE, fit_arms

MIN_SIZES = 3


def _pairwise(pred: np.ndarray, truth: np.ndarray) -> float:
    """Share of arm pairs ordered as the truth orders them (a tie in the prediction counts half)."""
    scores = []
    for i, j in combinations(range(len(truth)), 2):
        if truth[i] == truth[j]:
            continue
        d = np.sign(pred[i] - pred[j]) * np.sign(truth[i] - truth[j])
        scores.append(1.0 if d > 0 else 0.5 if d == 0 else 0.0)
    return float(np.mean(scores)) if scores else float("nan")


def scores(pred: np.ndarray, truth: np.ndarray, lower_is_better: bool) -> dict:
    sign = -1 if lower_is_better else 1
    rho = spearmanr(pred, truth).statistic if np.ptp(pred) and np.ptp(truth) else float("nan")
    tau = kendalltau(pred, truth).statistic if np.ptp(pred) and np.ptp(truth) else float("nan")
    best_true = np.max(sign * truth)
    picked = sign * truth[np.argmax(sign * pred)]
    return {"spearman": float(rho), "kendall_tau": float(tau), "pairwise_accuracy": _pairwise(sign * pred, sign * truth),
            "top1_regret": float(best_true - picked), "mean_abs_error": float(np.mean(np.abs(pred - truth)))}


def backtest(means: dict[str, dict[int, float]], metric: str, lower_is_better: bool, form: str = "auto",
             bounds: tuple = FREE) -> dict:
    """means: arm -> size -> observed metric. Returns the held-out size, per-arm predictions and both methods' scores."""
    sizes = sorted(set.intersection(*(set(m) for m in means.values())))
    if len(sizes) < MIN_SIZES:
        raise WorkbenchError(f"a back-test needs at least {MIN_SIZES} mixture sizes measured in every arm "
                             f"(one held out, two or more to fit); this study has {len(sizes)}: {sizes}")
    if len(means) < 2:
        raise WorkbenchError("a back-test compares arms; this study has only one")
    held, rest = sizes[-1], sizes[:-1]
    arms = sorted(means)
    fits = fit_arms({a: (rest, [means[a][s] for s in rest]) for a in arms}, bounds, not lower_is_better, form)
    truth = np.array([means[a][held] for a in arms])
    fitted = np.array([float(fits[a].predict(held)) for a in arms])
    baseline = np.array([means[a][rest[-1]] for a in arms])
    rows = [{"method": f"fit ({fits[arms[0]].form} on {', '.join(map(str, rest))})", **scores(fitted, truth, lower_is_better)},
            {"method": f"baseline (observed at {rest[-1]})", **scores(baseline, truth, lower_is_better)}]
    winner, reason = verdict(rows[0]["pairwise_accuracy"], rows[1]["pairwise_accuracy"], len(arms))
    return {"held_out": held, "fitted_on": rest, "rows": rows, "winner": winner, "reason": reason,
            "arms": {a: {"truth": float(t), "fit": float(f), "baseline": float(b)}
                     for a, t, f, b in zip(arms, truth, fitted, baseline)}}


def verdict(fit: float, baseline: float, n_arms: int) -> tuple[str, str]:
    """'fit' only when the extrapolation orders more held-out arm pairs right than the baseline and better than chance;
    'observed' when the baseline does better; 'inconclusive' otherwise. Ties never count as support."""
    if n_arms < 3:
        return "inconclusive", f"{n_arms} arms give {n_arms * (n_arms - 1) // 2} pair(s): too few to judge"
    if np.isnan(fit) or np.isnan(baseline):
        return "inconclusive", "no two arms differ at the held-out size"
    if fit <= 0.5:
        return "inconclusive", f"the fit orders arm pairs at or below chance (pairwise accuracy {fit:.2f})"
    if fit == baseline:
        return "inconclusive", f"fit and baseline tie (pairwise accuracy {fit:.2f} each)"
    if fit < baseline:
        return "observed", f"the baseline orders more pairs right: {baseline:.2f} vs {fit:.2f}"
    return "fit", f"pairwise accuracy {fit:.2f} vs the baseline's {baseline:.2f}"
