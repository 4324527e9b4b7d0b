"""Successive halving (opt-in, `ranking.prune_after: K`): every arm trains its K smallest sizes; then an arm whose
paired delta vs the leader at the K-th size is significantly worse (its whole interval, at ranking.confidence, on
the worse side of zero) trains no larger size. The interval is the ranking's own: a bootstrap over benchmark
examples, paired across arms, plus training noise measured from the seeds run so far. The control is never pruned
(every delta is measured against it), nor is the leader. Pruned arms rank below every arm that finished, marked
"pruned at N" with that interval (tasks.backends.report)."""

from tasks import tasktypes
from tasks.backends import report, tracking
from tasks.common import CONTROL, is_placebo
from tasks.core import uncertainty as unc
from tasks.schema.study import Study


def rungs(study: Study) -> list[list[int]]:
    """The sizes of each round: all at once, or the first K and then the rest."""
    k, sizes = study.ranking.prune_after, study.mixture.sizes
    return [sizes[:k], sizes[k:]] if k and k < len(sizes) else [sizes]


def decide(study: Study, uri: str, study_run_id: str, size: int) -> dict[str, dict]:
    """{arm: {size, leader, delta, lo, hi}} for every arm to stop, from the finished points at `size` in MLflow."""
    data = tracking.read_study(uri, study_run_id)
    kind, metric = tasktypes.get(study.task), study.primary
    o = report.rank_options(study, kind, metric)
    _, noise, samples = unc.replicate_samples(report.points_of(data, kind), o.metric_fn, o.n_boot, o.seed)
    if noise is None:  # no replicate measured training noise: nothing can be called worse
        return {}
    at = {a: v for (a, s), v in samples.items() if s == size}
    real = [a for a in at if not is_placebo(a)]
    if len(real) < 2:
        return {}
    leader = max(real, key=lambda a: -at[a][0] if o.lower_is_better else at[a][0])
    out = {}
    for arm in real:
        if arm in (CONTROL, leader):
            continue
        d = at[arm] - at[leader]
        lo, hi = (float(x) for x in unc.interval(d, o.confidence))
        if unc.significance(lo, hi, o.lower_is_better) == "-":
            out[arm] = {"size": size, "leader": leader, "delta": float(d[0]), "lo": lo, "hi": hi}
    return out


def mark(uri: str, arm_run_id: str, info: dict) -> None:
    """Record the decision on the arm run (read back by the ranking)."""
    tracking.set_tags(uri, arm_run_id, {tracking.PRUNED: info["size"], tracking.PRUNED + "_leader": info["leader"]})
    tracking.log_metrics(uri, arm_run_id, {"pruned_delta_vs_leader": info["delta"], "pruned_delta_lo": info["lo"],
                                           "pruned_delta_hi": info["hi"]})
