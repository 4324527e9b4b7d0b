"""The scaling plot: every arm's points (with interval bars) and fitted curve (with its band) on one log-x axis."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.common import CONTROL, is_placebo  # noqa: E402
from tasks.core import render  # noqa: E402
from tasks.core.ranking import Point, Ranking  # noqa: E402


def scaling_plot(result: Ranking, points: list[Point], path: Path) -> Path:
    metric, target = result.metric, result.target
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    sizes = [p.size for p in points]
    grid = np.geomspace(min(sizes), max(target, max(sizes)), 200)
    colors = iter(plt.cm.tab10.colors)
    for row in result.rows:
        color = "0.6" if is_placebo(row.arm) else next(colors, "0.3")  # placebos: grey, drawn like any arm
        pts = [p for p in points if p.arm == row.arm and metric in p.metrics]
        ax.scatter([p.size for p in pts], [p.metrics[metric] for p in pts], color=color, s=10, alpha=0.4, zorder=3)
        xs = sorted(row.observed)
        ys = [row.observed[s] for s in xs]
        bars = [result.point_intervals.get((row.arm, s)) for s in xs]
        if all(bars):
            err = np.array([[y - b[0] for y, b in zip(ys, bars)], [b[1] - y for y, b in zip(ys, bars)]]).clip(0)
            ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, ms=4, capsize=3, zorder=4)
        style = "--" if row.arm == CONTROL else ":" if is_placebo(row.arm) else "-"
        if row.pruned:  # successive halving: its points only, no curve
            ax.plot(xs, ys, "x", color=color, label=render.plot_label(row))
            continue
        ax.plot(grid, row.fit.predict(grid), style, color=color, label=render.plot_label(row))
        if row.arm in result.bands:
            g, lo, hi = result.bands[row.arm]
            ax.fill_between(g, lo, hi, color=color, alpha=0.12, lw=0)
    ax.axvline(target, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("mixture size (training examples)")
    ax.set_ylabel(metric)
    ax.set_title(render.plot_title(result), fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
