"""`curate run` end to end on the tiny model, real Prefect and MLflow: a clean candidate, a label-flipped one and
one holding copies of benchmark items, plus the control; 3 sizes x 2 seeds. The random-init tiny model learns
too little for the known-truth *order* (that runs on SmolLM2 in test_slow_gpu.py); here the contamination catch,
the run tree, intervals, P(best), significance marks and the back-test are checked."""

import csv
import json
import re

import mlflow
import pytest
from typer.testing import CliRunner

from conftest import run_tree, sentiment_entry, sentiment_study, study_runs as _runs, write_catalog, write_study
from cli.main import app

pytestmark = pytest.mark.integration


def test_run_tree_has_three_levels(finished_study):
    _, uri, _ = finished_study
    client, runs = _runs(uri)
    studies, arms, points = run_tree(runs)
    assert len(studies) == 1 and len(arms) == 4 and len(points) == 24
    assert {a.data.tags["curate.arm"] for a in arms} == {"control", "clean", "flipped", "copy"}
    assert {(p.data.params["size"], p.data.params["seed"]) for p in points} == {(s, e) for s in ("16", "32", "64") for e in "01"}
    assert all(r.info.status == "FINISHED" for r in runs)
    for p in points:
        assert {"size", "seed", "d0_share", "model", "candidate", "training.learning_rate", "training.lora.r"} <= set(p.data.params)
        assert {"accuracy", "macro_f1", "gold_logprob", "eval_loss", "n_examples", "train_tokens_per_s"} <= set(p.data.metrics)
        assert p.data.metrics["n_examples"] == 40 and "curate.point_fingerprint" in p.data.tags
        assert p.data.params["d0_share"] == ("1.0" if p.data.tags["curate.arm"] == "control" else "0.5")
    for a in arms:
        history = client.get_metric_history(a.info.run_id, "accuracy")
        assert sorted(m.step for m in history) == [16, 32, 64]  # one value per size: the mean over seeds
    copy = next(a for a in arms if a.data.tags["curate.arm"] == "copy")
    assert copy.data.metrics["contamination_exact"] == 10 and copy.data.metrics["contamination_removed"] == 10
    assert copy.data.params["profile.rows"] == "120" and json.loads(copy.data.params["profile.labels"]) == {"negative": 60, "positive": 60}
    assert int(copy.data.params["profile.tokens_p50"]) > 0


def test_point_artifacts_adapter_loads_and_predictions_complete(finished_study, tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, uri, _ = finished_study
    mlflow.set_tracking_uri(uri)
    _, runs = _runs(uri)
    point = next(r for r in runs if r.info.run_name == "clean/size=32/seed=1")
    from types import SimpleNamespace

    from flows.curate import point_run_name

    wide = SimpleNamespace(mixture=SimpleNamespace(sizes=[16, 128]))  # sorting by name in the MLflow UI sorts by size
    assert sorted(point_run_name(wide, "a", n, 0) for n in (128, 16)) == ["a/size=016/seed=0", "a/size=128/seed=0"]
    adapter = mlflow.artifacts.download_artifacts(run_id=point.info.run_id, artifact_path="adapter", dst_path=str(tmp_path))
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) > 0
    preds = mlflow.artifacts.download_artifacts(run_id=point.info.run_id, artifact_path="predictions.jsonl", dst_path=str(tmp_path))
    rows = [json.loads(x) for x in open(preds)]
    assert len(rows) == 40 and sum(r["correct"] for r in rows) / 40 == pytest.approx(point.data.metrics["accuracy"])


def test_ranking_artifacts_and_content(finished_study, tmp_path):
    _, uri, output = finished_study
    client, runs = _runs(uri)
    study = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    names = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"ranking.csv", "ranking.md", "scaling.png", "fits.json", "study.resolved.json"} <= names
    local = client.download_artifacts(study.info.run_id, "ranking.csv", str(tmp_path))
    rows = list(csv.DictReader(open(local)))
    assert {r["arm"] for r in rows} == {"control", "clean", "flipped", "copy"}
    est = next(k for k in rows[0] if k.startswith(("predicted@", "observed@")))
    predicted = [float(r[est]) for r in rows]
    assert predicted == sorted(predicted, reverse=True)
    control = next(r for r in rows if r["arm"] == "control")
    assert float(control["delta_vs_control"]) == 0.0 and control["sig"] == ""
    assert control["d0_copies"] == "" and all(r["d0_copies"].isdigit() for r in rows if r["arm"] != "control")
    assert sum(float(r["p_best"]) for r in rows) == pytest.approx(1.0, abs=0.02)
    for r in rows:
        assert float(r["delta_vs_control"]) == pytest.approx(float(r[est]) - float(control[est]), abs=2e-4)
        lo, hi = map(float, r["90% interval"].strip("[]").split(","))
        assert lo <= float(r[est]) <= hi
        assert r["arm"] == "control" or r["sig"] in {"+", "-", "~"}
    copy = next(r for r in rows if r["arm"] == "copy")
    assert copy["contaminated"] == "10" and copy["removed"] == "10" and copy["rows"] == "120"
    assert study.data.tags["curate.best_arm"] == rows[0]["arm"] and re.search(r"gold_logprob (observed at \d+|predicted at 512) ", output)
    assert "Agreement with the ranking on accuracy" in output


def test_backtest_command_prints_fidelity_table(finished_study):
    _, uri, _ = finished_study
    client, runs = _runs(uri)
    study = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    result = CliRunner().invoke(app, ["backtest", study.info.run_id, "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert "fit on [16, 32], predict 64" in result.output and "baseline (observed at 32)" in result.output
    assert "pairwise_accuracy" in result.output
    metrics = client.get_run(study.info.run_id).data.metrics
    assert 0 <= metrics["backtest_baseline_pairwise_accuracy"] <= 1 and "backtest_fit_mean_abs_error" in metrics
    assert all(v == float(f"{v:.4g}") for k, v in metrics.items() if k.startswith("backtest_"))  # shown: rounded


def test_rank_reproduces_ranking_from_mlflow_alone(finished_study, tmp_path):
    _, uri, _ = finished_study
    client, runs = _runs(uri)
    study = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    original = open(client.download_artifacts(study.info.run_id, "ranking.csv", str(tmp_path))).read()
    result = CliRunner().invoke(app, ["rank", study.info.run_id, "--tracking-uri", uri, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "ranking.csv").read_text() == original


def test_validate_reports_bad_study_without_training(tmp_path, tiny_model):
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    path = write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["claen"], mixture={"sizes": [16, 999]},
                                                      target_size=1024))
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "Unknown candidate 'claen'. Did you mean 'clean'?" in result.output and "size 999" in result.output
    assert not (tmp_path / "out" / "mlflow.db").exists()


def test_rerun_reuses_every_finished_point_and_status_shows_it(finished_study):
    """Same study again: every point has a finished run of the same fingerprint, so nothing trains; the new study
    run holds copies tagged with their origin (predictions included), and the ranking is the same."""
    tmp, uri, _ = finished_study
    result = CliRunner().invoke(app, ["run", str(tmp / "study.yaml")])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "points trained: 0, reused from earlier runs: 24" in result.output
    client, runs = _runs(uri)
    studies = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    assert len(studies) == 2
    rankings = [open(client.download_artifacts(s.info.run_id, "ranking.csv", str(tmp / s.info.run_id))).read()
                for s in studies]
    assert rankings[0] == rankings[1]
    status = CliRunner().invoke(app, ["status", str(tmp / "study.yaml")])
    assert status.exit_code == 0, status.output
    assert status.output.count("completed (reused)") == 24 and studies[1].info.run_id in status.output


def test_calibrate_adds_placebo_arms_and_control_replicates(tmp_path, tiny_model, prefect_harness):
    """`curate calibrate` on a one-seed study: the control runs its replicate seeds (training noise), two placebo
    arms train on more D0 rows, and the ranking reports how often a placebo is called different (A/A)."""
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    path = write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["clean"], ranking={"bootstrap": 100}))
    result = CliRunner().invoke(app, ["calibrate", str(path), "--placebos", "2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "+ 6 control replicates (training noise) = 14 points" in result.output
    assert "Placebo (A/A) check:" in result.output and "of 2 placebo arm(s) called different" in result.output
    assert "training noise in every interval: seed-to-seed SD" in result.output
    assert "from control replicates at sizes [16, 32]" in result.output
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    client, runs = _runs(uri)
    studies, arms, points = run_tree(runs)
    assert sorted(a.data.tags["curate.arm"] for a in arms) == ["clean", "control", "placebo-1", "placebo-2"]
    control = [p for p in points if p.data.params["arm"] == "control"]
    assert sorted((p.data.params["size"], p.data.params["seed"]) for p in control) == [
        (s, e) for s in ("16", "32") for e in "0123"]
    assert 0 <= studies[0].data.metrics["placebo_false_positive_rate"] <= 1
    rows = {r["arm"]: r for r in csv.DictReader(open(tmp_path / "out" / "ranking" / "ranking.csv"))}
    assert rows["placebo-1"]["rank"] == "A/A" and rows["placebo-1"]["p_best"] == "" and rows["clean"]["mde"]
    assert studies[0].data.tags["curate.best_arm"] in ("clean", "control")


def test_mining_the_finished_study_gives_one_record_per_failure(finished_study):
    """`curate failures`: one sft_candidates record per wrong benchmark label of the chosen point, in the store once."""
    tmp, uri, _ = finished_study
    client, runs = _runs(uri)
    study = min((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    db, out = f"sqlite:///{tmp / 'review.db'}", tmp / "mined.jsonl"
    args = ["failures", study.info.run_id, "--tracking-uri", uri, "--arm", "control", "--out", str(out), "--db", db]
    mined = CliRunner().invoke(app, args)
    assert mined.exit_code == 0, mined.output
    preds = [json.loads(line) for line in (tmp / "out" / "points" / "control" / "size64-seed0" / "predictions.jsonl").open()]
    wrong = [p for p in preds if not p["correct"]]
    records = [json.loads(line) for line in out.open()]
    assert len(records) == len(wrong) and f"{len(wrong)} of {len(preds)} benchmark examples scored below 0.5" in mined.output
    assert all(r["benchmark_run_id"] == study.info.run_id and r["status"] == "needs_review" and r["quality_score"] < 0.5
               and r["failure_reason"].startswith("wrong label") and r["corrected_response"] is None for r in records)
    assert {r["model_response"] for r in records} <= {"negative", "positive"}
    assert f"review store: {len(wrong)} added, 0 already there" in mined.output
    assert f"review store: 0 added, {len(wrong)} already there" in CliRunner().invoke(app, args).output
    by_file = CliRunner().invoke(app, ["failures", str(tmp / "study.yaml"), "--arm", "control", "--no-store", "--out",
                                       str(tmp / "by-file.jsonl")])  # a study file: its latest run, in its own store
    assert by_file.exit_code == 0 and len((tmp / "by-file.jsonl").read_text().splitlines()) == len(wrong), by_file.output
    missing = CliRunner().invoke(app, ["failures", study.info.run_id, "--tracking-uri", uri, "--arm", "nope"])
    assert missing.exit_code == 2 and "has no arm 'nope'; arms: clean, control, copy, flipped" in missing.output
