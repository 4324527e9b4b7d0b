"""The scaling plot: every arm's points and fitted curve on one log-x axis, up to the target size."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tasks.ranking import Point, RankRow  # noqa: E402


def scaling_plot(rows: list[RankRow], points: list[Point], metric: str, target: int, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sizes = [p.size for p in points]
    grid = np.geomspace(min(sizes), max(target, max(sizes)), 200)
    for row, color in zip(rows, plt.cm.tab10.colors):
        pts = [p for p in points if p.arm == row.arm and metric in p.metrics]
        ax.scatter([p.size for p in pts], [p.metrics[metric] for p in pts], color=color, s=22, zorder=3)
        style = "--" if row.arm == "control" else "-"
        ax.plot(grid, row.fit.predict(grid), style, color=color, label=f"{row.arm} ({row.predicted:.3f} @ {target})")
    ax.axvline(target, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("mixture size (training examples)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs mixture size; dotted line = target size {target}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
