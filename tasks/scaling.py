"""Fit a metric against mixture size and predict it at the target size. Plain numpy/scipy."""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

BOUNDS = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0), "exact_match": (0.0, 1.0), "f1": (0.0, 1.0),
          "gold_logprob": (-np.inf, 0.0), "eval_loss": (0.0, np.inf)}
MIN_POWER_LAW_SIZES = 4  # 3 parameters need more than 3 distinct sizes, or the fit passes through every point


@dataclass
class Fit:
    """y(N) = E + B * (N / n_ref) ** -alpha (form 'power_law'), or a + b * ln N ('log_linear'), or a constant."""
    form: str
    params: dict
    note: str = ""
    bounds: tuple = (-np.inf, np.inf)
    rmse: float = field(default=0.0)

    def predict(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        p = self.params
        if self.form == "power_law":
            y = p["E"] + p["B"] * (n / p["n_ref"]) ** -p["alpha"]
        elif self.form == "log_linear":
            y = p["a"] + p["b"] * np.log(n)
        else:
            y = np.full_like(n, p["mean"])
        return np.clip(y, *self.bounds)


def _power_law(x, y, n_ref, increasing: bool | None) -> dict:
    """Huber-loss least squares from several starts, with bounded parameters; keep the best.
    `increasing` fixes the sign of B so the curve improves with size (a score rises, a loss falls):
    without it, noisy non-monotone points at small sizes get fitted by a curve that gets worse with more data."""
    spread = max(float(np.ptp(y)), 1e-3)
    b_lo = 0.0 if increasing is False else -100 * spread
    b_hi = 0.0 if increasing else 100 * spread
    lo = [y.min() - 10 * spread, b_lo, 0.01]
    hi = [y.max() + 10 * spread, b_hi + 1e-12, 3.0]
    best = None
    for alpha in (0.1, 0.3, 0.6, 1.0, 2.0):
        start = np.clip([y[np.argmax(x)], y[np.argmin(x)] - y[np.argmax(x)], alpha], lo, hi)
        res = least_squares(lambda p: p[0] + p[1] * (x / n_ref) ** -p[2] - y, start, bounds=(lo, hi),
                            loss="huber", f_scale=spread / 100)
        if best is None or res.cost < best.cost:
            best = res
    return {"E": float(best.x[0]), "B": float(best.x[1]), "alpha": float(best.x[2]), "n_ref": float(n_ref)}


def fit_curve(sizes, values, metric: str = "", increasing: bool | None = None) -> Fit:
    """Saturating power law with >= 4 distinct sizes; fewer fall back to log-linear (2) or a constant (1), saying so.
    increasing=True/False constrains the power law to improve with size; None leaves the direction free."""
    x, y = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    bounds = BOUNDS.get(metric, (-np.inf, np.inf))
    distinct = len(np.unique(x))
    if distinct >= MIN_POWER_LAW_SIZES:
        fit = Fit("power_law", _power_law(x, y, x.min(), increasing), bounds=bounds)
    elif distinct >= 2:
        b, a = np.polyfit(np.log(x), y, 1)
        fit = Fit("log_linear", {"a": float(a), "b": float(b)},
                  f"{distinct} sizes: too few for E + B*N^-alpha (needs {MIN_POWER_LAW_SIZES}); fitted a + b*ln N", bounds)
    else:
        fit = Fit("constant", {"mean": float(y.mean())}, "one size: no trend can be fitted; predicting the observed mean", bounds)
    fit.rmse = float(np.sqrt(np.mean((fit.predict(x) - y) ** 2)))
    return fit
