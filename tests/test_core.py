"""Pure functions: mixtures, scoring, scaling fits, ranking — checked against hand-computed values."""

import math

import numpy as np
import pytest

from sklearn.metrics import f1_score

from tasks.core import mixing
from tasks.core.backtest import backtest
from tasks.core.contamination import BenchmarkIndex
from tasks.core.ranking import Point, RankOptions, rank_arms
from tasks.core.render import to_markdown
from tasks.core.scaling import fit_arms, fit_curve
from tasks.errors import WorkbenchError
from tasks.tasktypes import classification, extractive_qa

CLS = classification.TASK
ACC, LOSS = CLS.bounds("accuracy"), CLS.bounds("eval_loss")


def _fn(metric):
    return lambda ex, idx: CLS.resample(metric, ex, idx)

D0 = [{"text": f"d0-{i}", "label": "a"} for i in range(100)]
DK = [{"text": f"dk-{i}", "label": "b"} for i in range(50)]


def test_mixture_counts_and_determinism():
    m = mixing.mixture(D0, DK, 40, 0.75, seed=3)
    assert sum(r["origin"] == "d0" for r in m) == 30 and sum(r["origin"] == "candidate" for r in m) == 10
    assert m == mixing.mixture(D0, DK, 40, 0.75, seed=3)
    assert m != mixing.mixture(D0, DK, 40, 0.75, seed=4)
    control = mixing.mixture(D0, None, 40, 0.75, seed=3)
    assert len(control) == 40 and all(r["origin"] == "d0" for r in control)


def test_mixtures_are_nested_across_sizes_and_draw_only_from_sources():
    small = {r["text"] for r in mixing.mixture(D0, DK, 20, 0.5, 0)}
    large = {r["text"] for r in mixing.mixture(D0, DK, 80, 0.5, 0)}
    assert small < large and large <= {r["text"] for r in D0 + DK}


def test_repetition_cycles_through_all_rows():
    m = mixing.mixture(D0[:10], None, 25, 0.5, 0)
    counts = np.bincount([int(r["text"].split("-")[1]) for r in m])
    assert len(m) == 25 and counts.min() >= 2 and counts.max() <= 3


def test_classification_record_and_aggregate_by_hand():
    labels = ["neg", "pos"]
    recs = [classification.record({"label": "pos"}, labels, [(-2.0, 2), (-1.0, 2)]),   # right
            classification.record({"label": "neg"}, labels, [(-3.0, 2), (-0.5, 2)]),   # wrong
            classification.record({"label": "neg"}, labels, [(-0.1, 2), (-4.0, 2)])]   # right
    m = CLS.aggregate(recs, {"labels": labels})
    assert m["n_examples"] == 3 and m["accuracy"] == pytest.approx(2 / 3)
    # neg: tp=1 fp=0 fn=1 -> F1 2/3; pos: tp=1 fp=1 fn=0 -> F1 2/3
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["gold_logprob"] == pytest.approx((-1.0 - 3.0 - 0.1) / 3)
    assert m["eval_loss"] == pytest.approx(4.1 / 6)


def test_squad_scores_use_official_normalization():
    assert extractive_qa.squad_scores("The Broncos!", ["Denver Broncos", "broncos"]) == (1.0, 1.0)
    em, f1 = extractive_qa.squad_scores("Denver", ["Denver Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)


def test_power_law_recovers_known_parameters():
    n = np.array([32, 64, 128, 256, 512, 1024])
    y = 0.9 - 0.8 * (n / 32.0) ** -0.5
    fit = fit_curve(n, y, ACC, increasing=True)
    assert fit.form == "power_law"
    assert fit.params["E"] == pytest.approx(0.9, abs=1e-3) and fit.params["alpha"] == pytest.approx(0.5, abs=1e-2)
    assert float(fit.predict(8192)) == pytest.approx(0.9 - 0.8 * 256 ** -0.5, abs=2e-3)


def test_power_law_robust_to_one_outlier():
    n = np.array([16, 32, 64, 128, 256, 512, 1024])
    y = 2.0 + 3.0 * (n / 16.0) ** -0.4
    y[3] += 1.0
    fit = fit_curve(n, y, LOSS, increasing=False)
    assert fit.params["alpha"] == pytest.approx(0.4, abs=0.05)


def test_direction_constraint_keeps_the_curve_improving_with_size():
    n, y = [24, 48, 96, 192], [0.67, 0.60, 0.635, 0.79]  # a dip at small sizes, as seen in the demo
    free, rising = fit_curve(n, y, ACC), fit_curve(n, y, ACC, increasing=True)
    assert rising.params["B"] <= 1e-9 and float(rising.predict(4096)) >= float(rising.predict(192)) - 1e-9
    assert free.params["B"] > 0  # unconstrained, the same points give a curve that falls with more data


def test_fallbacks_say_so():
    fit = fit_curve([10, 100, 1000], [0.5, 0.6, 0.7], ACC)
    assert fit.form == "log_linear" and "too few" in fit.note
    assert float(fit.predict(10000)) == pytest.approx(0.8)
    assert float(fit_curve([10, 100, 1000], [0.5, 0.9, 1.3], ACC).predict(1e6)) == 1.0  # clipped to the metric's range
    assert fit_curve([64, 64], [0.5, 0.7]).form == "constant"


def test_rank_orders_by_prediction_with_delta_vs_control():
    pts = [Point(arm, s, 0, {"accuracy": base + 0.05 * math.log2(s / 16)})
           for arm, base in (("control", 0.6), ("good", 0.7), ("bad", 0.5)) for s in (16, 32, 64)]
    r = rank_arms(pts, {"good": "MIT"}, "accuracy", 256, RankOptions(fit_form="power_law"))
    rows = r.rows
    assert r.method == "fit" and "no back-test" in r.method_note
    assert [x.arm for x in rows] == ["good", "control", "bad"]
    assert rows[0].delta_vs_control == pytest.approx(0.1) and rows[2].delta_vs_control == pytest.approx(-0.1)
    assert rows[0].license == "MIT" and rows[0].observed == pytest.approx({16: 0.7, 32: 0.75, 64: 0.8})
    loss = rank_arms([Point(p.arm, p.size, 0, {"eval_loss": 1 - p.metrics["accuracy"]}) for p in pts], {}, "eval_loss",
                     256, RankOptions(True, fit_form="power_law"))
    assert [x.arm for x in loss.rows] == ["good", "control", "bad"]
    assert "| 1 | good | MIT | 0.7000 | 0.7500 | 0.8000 | 0.9000 |" in to_markdown(r)


def test_shared_exponent_recovers_alpha_from_three_sizes():
    n = np.array([32, 64, 128])
    curves = {arm: (n, e - b * (n / 32.0) ** -0.6) for arm, e, b in (("a", 0.9, 0.4), ("b", 0.8, 0.3), ("c", 0.7, 0.1))}
    fits = fit_arms(curves, ACC, True, "auto")
    assert {f.form for f in fits.values()} == {"shared_exponent"}
    assert fits["a"].params["alpha"] == pytest.approx(0.6, abs=0.02) and fits["b"].params["E"] == pytest.approx(0.8, abs=0.01)


def test_unreliable_fits_fall_back_to_the_observed_ranking():
    pts = [Point(arm, s, 0, {"accuracy": v}) for arm, vals in (("control", (0.6, 0.62, 0.64, 0.66)),
                                                              ("falling", (0.70, 0.66, 0.62, 0.58)))
           for s, v in zip((16, 32, 64, 128), vals)]
    r = rank_arms(pts, {}, "accuracy", 1024, RankOptions(method="fit"))
    assert r.method == "fit" and "not improving" in r.rows[1].note
    auto = rank_arms(pts, {}, "accuracy", 1024)
    assert auto.method == "observed" and "inconclusive (2 arms" in auto.method_note  # one pair: no verdict
    assert [x.arm for x in auto.rows] == ["control", "falling"] and auto.rows[0].predicted == pytest.approx(0.66)
    three = rank_arms([p for p in pts if p.size < 128], {}, "accuracy", 1024)  # too few sizes to back-test
    assert three.method == "observed" and "1 arm fit(s) are unreliable" in three.method_note


def _examples(p_correct: float, n: int, rng) -> dict:
    correct = (rng.random(n) < p_correct).astype(float)
    gold = rng.integers(0, 2, n)
    return {"correct": correct, "gold": gold, "pred": np.where(correct == 1, gold, 1 - gold),
            "gold_logprob": np.log(np.clip(rng.normal(p_correct, 0.05, n), 0.01, 1)), "gold_tokens": np.ones(n)}


def test_bootstrap_intervals_p_best_and_significance():
    rng = np.random.default_rng(0)
    truth = {"control": 0.60, "better": 0.78, "same": 0.60, "worse": 0.40}
    pts = []
    for arm, acc in truth.items():
        for s in (50, 100, 200):
            for seed in (0, 1):
                ex = _examples(acc + 0.02 * math.log2(s / 50), 400, rng)
                pts.append(Point(arm, s, seed, {"accuracy": ex["correct"].mean()}, ex))
    r = rank_arms(pts, {}, "accuracy", 800, RankOptions(n_boot=200, confidence=0.9, bounds=ACC, metric_fn=_fn("accuracy")))
    by = {x.arm: x for x in r.rows}
    assert [x.arm for x in r.rows][0] == "better" and r.rows[-1].arm == "worse"
    assert (by["better"].significance, by["worse"].significance, by["same"].significance) == ("+", "-", "~")
    assert sum(x.p_best for x in r.rows) == pytest.approx(1.0) and by["better"].p_best > 0.8
    for x in r.rows:
        assert x.interval[0] <= x.predicted <= x.interval[1]
        assert x.arm == "control" or x.delta_interval[0] <= x.delta_vs_control <= x.delta_interval[1]
    assert {(d["arm"], d["size"]) for d in r.per_size} == {(a, s) for a in ("better", "same", "worse") for s in (50, 100, 200)}
    assert r.point_intervals[("better", 200)][0] < r.rows[0].observed[200] < r.point_intervals[("better", 200)][1]
    assert set(r.bands) == set(truth) and "90% percentile bootstrap" in to_markdown(r)


def _aa_points(rng, arms, n_seeds, sd_train, n=200, sizes=(32, 64, 128), replicate=()):
    """Arms of equal truth: per-example correctness drawn around a per-point training shift of sd `sd_train`
    (logit scale), so seed-to-seed spread is training noise; `replicate` sizes give the control 4 seeds."""
    difficulty = rng.normal(0.8, 1.5, n)
    pts = []
    for arm in arms:
        for s in sizes:
            for seed in range(4 if arm == "control" and s in replicate else n_seeds):
                logit = difficulty + 0.2 * math.log2(s / 32) + rng.normal(0, sd_train)
                correct = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
                gold = rng.integers(0, 2, n)
                ex = {"correct": correct, "gold": gold, "pred": np.where(correct == 1, gold, 1 - gold),
                      "gold_logprob": np.log(np.clip(correct * 0.8 + 0.1, 0.01, 1)), "gold_tokens": np.ones(n)}
                pts.append(Point(arm, s, seed, {"accuracy": correct.mean()}, ex))
    return pts


def _rank_aa(pts, **kw):
    return rank_arms(pts, {}, "accuracy", 1024, RankOptions(method="observed", n_boot=200, bounds=ACC,
                                                            metric_fn=_fn("accuracy"), bands=False, **kw))


def test_training_noise_widens_intervals_and_one_seed_without_replicates_calls_nothing():
    quiet = _rank_aa(_aa_points(np.random.default_rng(3), ["control", "a"], 3, 0.0))
    noisy = _rank_aa(_aa_points(np.random.default_rng(3), ["control", "a"], 3, 0.6))
    width = [(r.rows[0].delta_interval or r.rows[1].delta_interval) for r in (quiet, noisy)]
    assert noisy.noise["sd"] > 2 * quiet.noise["sd"] and noisy.noise["df"] == 2 * 3 * 2
    assert width[1][1] - width[1][0] > 1.5 * (width[0][1] - width[0][0])
    assert noisy.noise["source"] == "the seeds of every point"
    single = _rank_aa(_aa_points(np.random.default_rng(3), ["control", "a"], 1, 0.6))
    assert single.noise is None and {r.significance for r in single.rows} == {"", "?"}
    assert "No training noise was measured" in to_markdown(single)


def test_control_replicates_give_a_single_seed_study_its_training_noise_and_mde():
    pts = _aa_points(np.random.default_rng(4), ["control", "a", "placebo-1"], 1, 0.6, replicate=(32, 64))
    r = _rank_aa(pts)
    assert r.noise["df"] == 2 * 3 and r.noise["source"] == "control replicates at sizes [32, 64]"
    assert r.rows[0].p_best is not None and next(x for x in r.rows if x.arm == "placebo-1").p_best is None
    assert next(x for x in r.rows if x.arm == "placebo-1").rank == 0  # A/A arms are not ranked among candidates
    row = next(x for x in r.rows if x.arm == "a")
    assert row.mde == pytest.approx((row.delta_interval[1] - row.delta_interval[0]) / 2 / 1.6449 * (1.6449 + 0.8416),
                                    rel=1e-3)
    assert r.placebo["arms"] == 1 and "Placebo (A/A) check" in to_markdown(r)


def test_aa_false_positive_rate_is_nominal_with_training_noise_and_not_without():
    """Simulated A/A studies (one seed, 3 control replicates at two sizes): with training noise folded in, a placebo
    is called different at about the nominal 10%; with benchmark resampling alone, far more often."""
    rng = np.random.default_rng(5)
    called_with = called_without = 0
    trials = 30
    for _ in range(trials):
        pts = _aa_points(rng, ["control", "placebo-1"], 1, 0.5, replicate=(32, 64))
        r = _rank_aa(pts)
        called_with += r.placebo["called"] != []
        bare = [p for p in pts if p.seed == 0]  # the same study without replicates: no noise measured ...
        old = _rank_aa(bare)
        lo, hi = old.rows[0].delta_interval or old.rows[1].delta_interval  # ... judged on benchmark sampling alone
        called_without += not lo <= 0 <= hi
    assert called_with / trials <= 0.15 and called_without / trials >= 0.3


def test_resampling_with_the_identity_reproduces_every_metric():
    rng = np.random.default_rng(1)
    ex = _examples(0.7, 300, rng)
    idx = np.arange(300)[None]
    assert CLS.resample("accuracy", ex, idx)[0] == pytest.approx(ex["correct"].mean())
    assert CLS.resample("macro_f1", ex, idx)[0] == pytest.approx(f1_score(ex["gold"], ex["pred"], average="macro"))
    assert CLS.resample("eval_loss", ex, idx)[0] == pytest.approx(-ex["gold_logprob"].mean())


def test_backtest_scores_by_hand_and_picks_the_better_method():
    # truth at the held-out size 400 reverses the order seen at 200; extrapolation of the clean trends gets it right
    means = {"a": {50: 0.50, 100: 0.60, 200: 0.70, 400: 0.80},   # steep
             "b": {50: 0.70, 100: 0.72, 200: 0.74, 400: 0.76},   # flat
             "c": {50: 0.40, 100: 0.45, 200: 0.50, 400: 0.55}}
    result = backtest(means, "accuracy", False, "power_law", ACC)
    fit, base = result["rows"]
    assert base["pairwise_accuracy"] == pytest.approx(2 / 3) and base["top1_regret"] == pytest.approx(0.04)
    assert base["mean_abs_error"] == pytest.approx((0.10 + 0.02 + 0.05) / 3)
    assert fit["pairwise_accuracy"] == 1.0 and fit["spearman"] == pytest.approx(1.0) and result["winner"] == "fit"
    tie = backtest({"a": {50: .5, 100: .6, 200: .7, 400: .8}, "b": {50: .6, 100: .7, 200: .8, 400: .7},
                    "c": {50: .4, 100: .5, 200: .6, 400: .75}}, "accuracy", False, "power_law", ACC)
    assert tie["winner"] in ("inconclusive", "observed")
    assert backtest({k: means[k] for k in "ab"}, "accuracy", False, "power_law", ACC)["winner"] == "inconclusive"
    from tasks.core.backtest import verdict
    assert verdict(0.5, 0.5, 4)[0] == "inconclusive" and "chance" in verdict(0.5, 0.5, 4)[1]
    assert verdict(0.75, 0.75, 4) == ("inconclusive", "fit and baseline tie (pairwise accuracy 0.75 each)")
    assert verdict(0.5, 0.3, 4)[0] == "inconclusive" and verdict(0.6, 0.8, 4)[0] == "observed"
    with pytest.raises(WorkbenchError, match="needs at least 3 mixture sizes"):
        backtest({a: {50: 0.5, 100: 0.6} for a in "ab"}, "accuracy", False)


def test_contamination_exact_near_and_short_phrases():
    long_item = "the film opens with a long shot of the harbour at dawn and the camera never looks away"
    index = BenchmarkIndex([long_item, "An utterly charming and very funny little picture, really.", "so good"])
    assert index.match("The film opens with a long shot of the harbour at dawn, and the camera never looks away!") == "exact"
    assert index.match("I loved it: a long shot of the harbour at dawn and the camera never looks away from it") == "near"
    assert index.match("critics agree: an utterly charming and very funny little picture really, go see it") == "near"
    assert index.match("this was so good") is None  # short phrases are common language: exact match only
    assert index.match("so good") == "exact"
    assert index.match("the film opens with a long shot of the harbour at noon") is None
