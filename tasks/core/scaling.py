"""Fit a metric against mixture size and predict it at the target size. Plain numpy/scipy."""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

FREE = (-np.inf, np.inf)
MIN_POWER_LAW_SIZES = 4  # 3 parameters need more than 3 distinct sizes, or the fit passes through every point


@dataclass
class Fit:
    """y(N) = E + B * (N / n_ref) ** -alpha (form 'power_law', or 'shared_exponent' when alpha is shared by all
    arms), or a + b * ln N ('log_linear'), or a constant."""
    form: str
    params: dict
    note: str = ""
    bounds: tuple = (-np.inf, np.inf)
    rmse: float = field(default=0.0)

    def predict(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        p = self.params
        if self.form in ("power_law", "shared_exponent"):
            y = p["E"] + p["B"] * (n / p["n_ref"]) ** -p["alpha"]
        elif self.form == "log_linear":
            y = p["a"] + p["b"] * np.log(n)
        else:
            y = np.full_like(n, p["mean"])
        return np.clip(y, *self.bounds)


ALPHAS = (0.1, 0.3, 0.6, 1.0, 2.0)  # starting exponents
ALPHA_BOUNDS = (0.01, 3.0)
TOL = {"ftol": 1e-7, "xtol": 1e-7, "gtol": 1e-7, "max_nfev": 200}  # predictions need 3-4 digits
WARM = {**TOL, "max_nfev": 40}  # bootstrap refits start at the full-data optimum: a few steps move them to theirs


def _eb_bounds(y, increasing: bool | None) -> tuple[list, list, float]:
    """Bounds for (E, B): E near the data, B's sign fixed by `increasing` so the curve improves with size
    (a score rises, a loss falls); without it, noisy non-monotone small-size points get fitted by a curve
    that gets worse with more data."""
    spread = max(float(np.ptp(y)), 1e-3)
    b_lo = 0.0 if increasing is False else -100 * spread
    b_hi = 0.0 if increasing else 100 * spread
    return [y.min() - 10 * spread, b_lo], [y.max() + 10 * spread, b_hi + 1e-12], spread


def _power_law(x, y, n_ref, increasing: bool | None, start: dict | None = None) -> dict:
    """Huber-loss least squares from several starts (or one warm start), with bounded parameters; keep the best."""
    (e_lo, b_lo), (e_hi, b_hi), spread = _eb_bounds(y, increasing)
    lo, hi = [e_lo, b_lo, ALPHA_BOUNDS[0]], [e_hi, b_hi, ALPHA_BOUNDS[1]]
    starts = ([[start["E"], start["B"], start["alpha"]]] if start else
              [[y[np.argmax(x)], y[np.argmin(x)] - y[np.argmax(x)], a] for a in ALPHAS])
    u = x / n_ref

    def jac(p):
        pw = u ** -p[2]
        return np.stack([np.ones_like(u), pw, -p[1] * pw * np.log(u)], 1)

    best = None
    for s in starts:
        res = least_squares(lambda p: p[0] + p[1] * u ** -p[2] - y, np.clip(s, lo, hi), jac=jac, bounds=(lo, hi),
                            loss="huber", f_scale=spread / 100, **(WARM if start else TOL))
        if best is None or res.cost < best.cost:
            best = res
    return {"E": float(best.x[0]), "B": float(best.x[1]), "alpha": float(best.x[2]), "n_ref": float(n_ref)}


def fit_shared(curves: dict[str, tuple], bounds: tuple = FREE, increasing: bool | None = None,
               start: dict[str, Fit] | None = None) -> dict[str, Fit]:
    """E_k + B_k * N^-alpha with one alpha for every arm k: 2 parameters per arm + 1, so 3 sizes are enough.
    curves: arm -> (sizes, values)."""
    arms = list(curves)
    data = [(np.asarray(curves[a][0], float), np.asarray(curves[a][1], float)) for a in arms]
    n_ref = min(float(x.min()) for x, _ in data)
    lo, hi, scale = [ALPHA_BOUNDS[0]], [ALPHA_BOUNDS[1]], []
    for _, y in data:
        (e_lo, b_lo), (e_hi, b_hi), spread = _eb_bounds(y, increasing)
        lo += [e_lo, b_lo]
        hi += [e_hi, b_hi]
        scale.append(spread)

    def residuals(p):
        return np.concatenate([(p[1 + 2 * k] + p[2 + 2 * k] * (x / n_ref) ** -p[0] - y) / scale[k]
                               for k, (x, y) in enumerate(data)])

    rows = sum(len(x) for x, _ in data)

    def jac(p):
        j, r = np.zeros((rows, len(lo))), 0
        for k, (x, _) in enumerate(data):
            u = x / n_ref
            pw = u ** -p[0]
            sl = slice(r, r + len(x))
            j[sl, 0] = -p[2 + 2 * k] * pw * np.log(u) / scale[k]
            j[sl, 1 + 2 * k] = 1 / scale[k]
            j[sl, 2 + 2 * k] = pw / scale[k]
            r += len(x)
        return j

    if start:
        first = start[arms[0]].params
        starts = [[first["alpha"], *[v for a in arms for v in (start[a].params["E"], start[a].params["B"])]]]
    else:
        starts = [[a, *[v for x, y in data for v in (y[np.argmax(x)], y[np.argmin(x)] - y[np.argmax(x)])]] for a in ALPHAS]
    best = None
    for s in starts:
        res = least_squares(residuals, np.clip(s, lo, hi), jac=jac, bounds=(lo, hi), loss="huber", f_scale=0.01,
                            **(WARM if start else TOL))
        if best is None or res.cost < best.cost:
            best = res
    fits = {}
    for k, (a, (x, y)) in enumerate(zip(arms, data)):
        fit = Fit("shared_exponent", {"E": float(best.x[1 + 2 * k]), "B": float(best.x[2 + 2 * k]),
                                      "alpha": float(best.x[0]), "n_ref": n_ref}, bounds=bounds)
        fit.rmse = float(np.sqrt(np.mean((fit.predict(x) - y) ** 2)))
        fits[a] = fit
    return fits


def fit_curve(sizes, values, bounds: tuple = FREE, increasing: bool | None = None, start: Fit | None = None) -> Fit:
    """Saturating power law with >= 4 distinct sizes; fewer fall back to log-linear (2) or a constant (1), saying so.
    increasing=True/False constrains the power law to improve with size; None leaves the direction free.
    `start`: a previous fit of the same form to start from (one start instead of several; for bootstrap refits)."""
    x, y = np.asarray(sizes, dtype=float), np.asarray(values, dtype=float)
    distinct = len(np.unique(x))
    if distinct >= MIN_POWER_LAW_SIZES:
        warm = start.params if start is not None and start.form == "power_law" else None
        fit = Fit("power_law", _power_law(x, y, x.min(), increasing, warm), bounds=bounds)
    elif distinct >= 2:
        b, a = np.polyfit(np.log(x), y, 1)
        fit = Fit("log_linear", {"a": float(a), "b": float(b)},
                  f"{distinct} sizes: too few for E + B*N^-alpha (needs {MIN_POWER_LAW_SIZES}); fitted a + b*ln N", bounds)
    else:
        fit = Fit("constant", {"mean": float(y.mean())}, "one size: no trend can be fitted; predicting the observed mean", bounds)
    fit.rmse = float(np.sqrt(np.mean((fit.predict(x) - y) ** 2)))
    return fit


def fit_arms(curves: dict[str, tuple], bounds: tuple, increasing: bool | None, form: str = "auto",
             start: dict[str, Fit] | None = None) -> dict[str, Fit]:
    """Fit every arm (curves: arm -> (sizes, values)): a power law per arm, or one exponent shared by all arms.
    bounds: where the metric's curve must stay (a share stays in [0, 1], a log-probability below 0).
    'auto': per arm with >= 4 sizes, shared with 3 (2 parameters per arm + 1); fewer sizes fall back per arm."""
    sizes = min(len(np.unique(c[0])) for c in curves.values())
    if form == "auto":
        form = "power_law" if sizes >= MIN_POWER_LAW_SIZES else "shared_exponent"
    if form == "shared_exponent" and sizes >= 3 and len(curves) >= 2:
        return fit_shared(curves, bounds, increasing, start)
    return {a: fit_curve(x, y, bounds, increasing, (start or {}).get(a)) for a, (x, y) in curves.items()}
