"""Bootstrap over benchmark examples and seeds. Plain numpy.

Every point saved its per-example scores (predictions.jsonl), and every point was evaluated on the
same benchmark, so one resample of example indices is applied to every point at once: differences
between arms are *paired* on the same examples. Seeds are resampled within each (arm, size).
"""

import numpy as np

MEAN_METRICS = {"accuracy": "correct", "exact_match": "exact_match", "f1": "f1", "gold_logprob": "gold_logprob"}


def example_arrays(records: list[dict], task: str, labels: list[str]) -> dict[str, np.ndarray]:
    """Per-example columns of one point's predictions, in benchmark order."""
    out = {"gold_logprob": np.array([r["gold_logprob"] for r in records], float),
           "gold_tokens": np.array([r["gold_tokens"] for r in records], float)}
    if task == "classification":
        code = {lab: i for i, lab in enumerate(labels)}
        out["correct"] = np.array([r["correct"] for r in records], float)
        out["gold"] = np.array([code[r["gold"]] for r in records])
        out["pred"] = np.array([code[r["prediction"]] for r in records])
    else:
        out["exact_match"] = np.array([r["exact_match"] for r in records], float)
        out["f1"] = np.array([r["f1"] for r in records], float)
    return out


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """sklearn's f1_score(average='macro', labels=all, zero_division=0), without its per-call overhead."""
    tp = np.bincount(gold[gold == pred], minlength=n_labels)
    fp = np.bincount(pred, minlength=n_labels) - tp
    fn = np.bincount(gold, minlength=n_labels) - tp
    den = 2 * tp + fp + fn
    return float(np.mean(np.divide(2 * tp, den, out=np.zeros(n_labels), where=den > 0)))


def metric_values(ex: dict[str, np.ndarray], metric: str, idx: np.ndarray) -> np.ndarray:
    """The metric on each row of example indices idx (shape B x n) -> shape (B,)."""
    if metric in MEAN_METRICS:
        return ex[MEAN_METRICS[metric]][idx].mean(1)
    if metric == "eval_loss":
        return -ex["gold_logprob"][idx].sum(1) / ex["gold_tokens"][idx].sum(1)
    if metric == "macro_f1":
        n_labels = int(max(ex["gold"].max(), ex["pred"].max())) + 1
        return np.array([macro_f1(ex["gold"][i], ex["pred"][i], n_labels) for i in idx])
    raise KeyError(f"no per-example form for metric '{metric}'")


def resample_points(examples: dict[tuple[str, int], list[dict]], metric: str, n_boot: int,
                    seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """examples: (arm, size) -> per-example arrays of each seed. Returns (arm, size) -> (n_boot,) resampled
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
        vals = np.stack([metric_values(a, metric, idx) for a in seeds])  # (seeds, B)
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
