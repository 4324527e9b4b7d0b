"""Bootstrap over benchmark examples and seeds. Plain numpy.

Every point saved its per-example scores (predictions.jsonl), and every point was evaluated on the
same benchmark, so one resample of example indices is applied to every point at once: differences
between arms are *paired* on the same examples. Seeds are resampled within each (arm, size).
"""

import numpy as np

def resample_points(examples: dict[tuple[str, int], list[dict]], metric_fn, n_boot: int,
                    seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """examples: (arm, size) -> per-example arrays of each seed; metric_fn(arrays, idx) -> the metric on each row of
    example indices idx (B x n), shape (B,) (the task type's `resample`). Returns (arm, size) -> (n_boot,) resampled
    metric (mean over resampled seeds on resampled examples); row 0 is the full data, unresampled."""
    rng = np.random.default_rng([seed, 11])
    n = {len(a["gold_logprob"]) for seeds in examples.values() for a in seeds}
    if len(n) != 1:
        raise ValueError(f"points were evaluated on benchmarks of different sizes: {sorted(n)}")
    n = n.pop()
    idx = rng.integers(0, n, (n_boot, n))
    idx[0] = np.arange(n)
    out = {}
    for key, seeds in examples.items():
        vals = np.stack([metric_fn(a, idx) for a in seeds])  # (seeds, B)
        pick = rng.integers(0, len(seeds), (n_boot, len(seeds)))
        pick[0] = np.arange(len(seeds))
        out[key] = vals[pick.T, np.arange(n_boot)].mean(0)
    return out


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
