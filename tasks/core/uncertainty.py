"""Bootstrap over benchmark examples, plus training noise measured from seeds. Plain numpy (what the intervals
contain, in words: tasks.core.render).

Every point saved its per-example scores (predictions.jsonl), and every point was evaluated on the same benchmark,
so one resample of example indices is applied to every point at once: differences between arms are *paired* on the
same examples. That covers the benchmark's sampling noise only. Training noise — how far a point's metric moves when
only the seed changes (data order, adapter init, rows drawn) — is measured from the points that ran more than one
seed (every point with `seeds` >= 2, else the control replicates) and added to every point of every resample.
"""

import numpy as np
from scipy.stats import norm



def training_noise(values: dict) -> dict | None:
    """values: (arm, size) -> the full-benchmark metric of each seed. The spread between seeds on the same benchmark
    is training noise alone; it is pooled per size over the (arm, size) groups with >= 2 seeds, with its degrees of
    freedom (it changes with size: on the demo the accuracy SD went from 0.017 at 16 rows to 0.082 at 128). A size
    without replicates borrows the noisier of its measured neighbours below and above (the nearest one outside
    the measured range). None when no group has two seeds."""
    groups = {k: np.asarray(v, float) for k, v in values.items() if len(v) >= 2}
    if not groups:
        return None
    per_size = {}
    for s in sorted({z for _, z in groups}):
        vs = [v for (_, z), v in groups.items() if z == s]
        df = sum(len(v) - 1 for v in vs)
        var = sum(float(((v - v.mean()) ** 2).sum()) for v in vs) / df
        per_size[s] = {"var": var, "sd": float(np.sqrt(var)), "df": df}
    def neighbour(s: int) -> int:
        near = [max((m for m in per_size if m <= s), default=None), min((m for m in per_size if m >= s), default=None)]
        return max((m for m in near if m is not None), key=lambda m: per_size[m]["var"])

    borrow = {s: neighbour(s) for _, s in values}
    df = sum(v["df"] for v in per_size.values())
    return {"per_size": per_size, "borrow": borrow, "df": df, "groups": len(groups),
            "sd": float(np.sqrt(sum(v["var"] * v["df"] for v in per_size.values()) / df)),
            "per_size_sd": {s: v["sd"] for s, v in per_size.items()}}


def resample_points(examples: dict[tuple[str, int], list[dict]], metric_fn, n_boot: int, seed: int = 0,
                    noise: dict | None = None) -> dict[tuple[str, int], np.ndarray]:
    """examples: (arm, size) -> per-example arrays of each seed; metric_fn(arrays, idx) -> the metric on each row of
    example indices idx (B x n), shape (B,) (the task type's `resample`). Returns (arm, size) -> (n_boot,): the mean
    over the point's seeds on resampled examples, plus — with `noise` (training_noise) — a training-noise draw of
    variance var/k for k seeds, var (of the point's size) itself drawn from its scaled-inverse-chi-square posterior
    (so few replicates give wider, t-like intervals). Row 0 is the full data, unperturbed."""
    rng = np.random.default_rng([seed, 11])
    n = {len(a["gold_logprob"]) for seeds in examples.values() for a in seeds}
    if len(n) != 1:
        raise ValueError(f"points were evaluated on benchmarks of different sizes: {sorted(n)}")
    n = n.pop()
    idx = rng.integers(0, n, (n_boot, n))
    idx[0] = np.arange(n)
    var = {}
    for s, v in (noise or {}).get("per_size", {}).items():
        var[s] = v["var"] * v["df"] / rng.chisquare(v["df"], n_boot)
        var[s][0] = 0.0
    out = {}
    for key, seeds in examples.items():
        value = np.stack([metric_fn(a, idx) for a in seeds]).mean(0)  # (B,)
        if var:
            value = value + rng.standard_normal(n_boot) * np.sqrt(var[noise["borrow"][key[1]]] / len(seeds))
        out[key] = value
    return out


def replicate_samples(points, metric_fn, n_boot: int, seed: int = 0) -> tuple[dict, dict | None, dict]:
    """The bootstrap of a set of points (objects with arm, size and per-example `examples`; those without examples
    are left out): (the full-benchmark metric of each seed per (arm, size), the training noise they measure
    (training_noise), the resampled metric per (arm, size) (resample_points)). The ranking and pruning share it."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for p in points:
        if p.examples is not None:
            groups.setdefault((p.arm, p.size), []).append(p.examples)
    full = {k: [float(metric_fn(a, np.arange(len(a["gold_logprob"]))[None])[0]) for a in seeds]
            for k, seeds in groups.items()}
    noise = training_noise(full)
    return full, noise, resample_points(groups, metric_fn, n_boot, seed, noise)


def interval(samples: np.ndarray, confidence: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap samples."""
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail], axis=axis)
    return lo, hi


def significance(lo: float, hi: float, lower_is_better: bool) -> str:
    """'+' better than the control, '-' worse, '~' not distinguishable from zero (interval covers 0)."""
    if lo > 0:
        return "-" if lower_is_better else "+"
    if hi < 0:
        return "+" if lower_is_better else "-"
    return "~"


def min_detectable(lo: float, hi: float, confidence: float, power: float = 0.8) -> float:
    """The smallest true delta detected with `power` at this confidence, from a delta interval: its half-width is
    z·SE, and an effect of (z + z_power)·SE lands outside zero with probability `power`."""
    z = norm.ppf(0.5 + confidence / 2)
    return float((hi - lo) / 2 / z * (z + norm.ppf(power)))
