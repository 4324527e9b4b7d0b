"""Rank arms by predicted metric at the target size, with deltas vs the control. Plain functions."""

import csv
import io
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tasks.scaling import Fit, fit_curve

CONTROL = "control"


@dataclass
class Point:
    arm: str
    size: int
    seed: int
    metrics: dict


@dataclass
class RankRow:
    rank: int
    arm: str
    license: str
    observed: dict  # size -> mean metric over seeds
    predicted: float
    delta_vs_control: float
    fit: Fit


def observed_means(points: list[Point], metric: str) -> dict[str, dict[int, float]]:
    by = defaultdict(lambda: defaultdict(list))
    for p in points:
        if metric in p.metrics:
            by[p.arm][p.size].append(p.metrics[metric])
    return {arm: {s: float(np.mean(v)) for s, v in sorted(sizes.items())} for arm, sizes in by.items()}


def rank_arms(points: list[Point], licenses: dict[str, str], metric: str, target_size: int,
              lower_is_better: bool = False) -> list[RankRow]:
    """Fit each arm, predict at target_size, order best first; delta is relative to the control arm."""
    means = observed_means(points, metric)
    fits = {arm: fit_curve([p.size for p in points if p.arm == arm and metric in p.metrics],
                           [p.metrics[metric] for p in points if p.arm == arm and metric in p.metrics], metric,
                           increasing=not lower_is_better)
            for arm in means}
    predicted = {arm: float(f.predict(target_size)) for arm, f in fits.items()}
    base = predicted.get(CONTROL, float("nan"))
    order = sorted(predicted, key=lambda a: predicted[a], reverse=not lower_is_better)
    return [RankRow(i + 1, arm, licenses.get(arm, ""), means[arm], predicted[arm], predicted[arm] - base, fits[arm])
            for i, arm in enumerate(order)]


def _columns(rows: list[RankRow], metric: str, target: int) -> tuple[list[str], list[list[str]]]:
    sizes = sorted({s for r in rows for s in r.observed})
    header = ["rank", "arm", "license", *[f"{metric}@{s}" for s in sizes], f"predicted@{target}", "delta_vs_control", "fit"]
    body = [[str(r.rank), r.arm, r.license, *[f"{r.observed[s]:.4f}" if s in r.observed else "" for s in sizes],
             f"{r.predicted:.4f}", f"{r.delta_vs_control:+.4f}", r.fit.form] for r in rows]
    return header, body


def to_csv(rows: list[RankRow], metric: str, target: int) -> str:
    header, body = _columns(rows, metric, target)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    return buf.getvalue()


def to_markdown(rows: list[RankRow], metric: str, target: int) -> str:
    header, body = _columns(rows, metric, target)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    notes = sorted({f"- {r.arm}: {r.fit.note}" for r in rows if r.fit.note})
    return "\n".join(lines) + ("\n\nFit notes:\n" + "\n".join(notes) if notes else "") + "\n"


def to_records(rows: list[RankRow], metric: str, target: int) -> list[dict]:
    header, body = _columns(rows, metric, target)
    return [dict(zip(header, r)) for r in body]
