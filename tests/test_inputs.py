"""Data loading and study checks: each bad input gets one clear message before any training."""

import json
import zipfile

import pandas as pd
import pytest

from conftest import FIXTURES, MIRROR, sentiment_entry, sentiment_study, write_catalog
from tasks.backends.data import load_split, normalize
from tasks.errors import DataError
from tasks.errors import StudyInvalid
from tasks.ops.validate import check_study, read_prepared
from tasks.schema.sources import DataRef
from tasks.schema.study import Study


def _check(tmp_path, model_dir, candidates=("clean",), entries=None, **overrides):
    write_catalog(tmp_path / "catalog", entries or {"clean": sentiment_entry("candidate_clean.jsonl")})
    return check_study(Study.model_validate(sentiment_study(tmp_path, model_dir, list(candidates), **overrides)))


def _problems(*args, **kwargs) -> str:
    with pytest.raises(StudyInvalid) as err:
        _check(*args, **kwargs)
    return "\n".join(err.value.problems)


def test_good_study_writes_normalized_data(tmp_path, tiny_model):
    inputs = _check(tmp_path, tiny_model)
    assert [a.name for a in inputs.arms] == ["control", "clean"] and inputs.context["labels"] == ["negative", "positive"]
    d0 = [json.loads(x) for x in open(inputs.d0)]
    assert len(d0) == 120 and set(d0[0]) == {"text", "label"} and d0[0]["label"] in inputs.context["labels"]


def test_validated_inputs_are_read_back_until_catalog_or_data_change(tmp_path, tiny_model):
    """The CLI validates once; the flow reads data/inputs.json instead of validating again — unless it is stale."""
    import shutil

    local = tmp_path / "clean.jsonl"
    shutil.copy(FIXTURES / "candidate_clean.jsonl", local)
    entries = {"clean": {**sentiment_entry("x"), "path": str(local)}}
    inputs = _check(tmp_path, tiny_model, entries=entries)
    study = Study.model_validate(sentiment_study(tmp_path, tiny_model, ["clean"]))
    assert read_prepared(study) == inputs
    assert read_prepared(study.model_copy(update={"seed": 1})) is None  # a field that decides the data
    assert read_prepared(study.model_copy(update={"concurrency": 1})) == inputs  # one that does not
    local.write_text(local.read_text() + local.read_text().splitlines(True)[0])  # the candidate's file changed
    assert read_prepared(study) is None
    inputs = _check(tmp_path, tiny_model, entries=entries)
    (tmp_path / "catalog" / "clean.yaml").write_text((tmp_path / "catalog" / "clean.yaml").read_text() + "version: 2\n")
    assert read_prepared(study) is None  # the catalog entry changed


def test_malformed_jsonl_line_is_named(tmp_path, tiny_model):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence": "ok", "label": 1}\n{"sentence": "broken", "label": \n')
    assert f"{bad}:2: malformed JSONL line" in _problems(tmp_path, tiny_model, entries={"clean": {**sentiment_entry("x"), "path": str(bad)}})


def test_missing_column_lists_present_columns(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, entries={"clean": sentiment_entry("candidate_clean.jsonl", columns={"text": "review"})})
    assert "missing column 'review' (for field 'text'); columns present: sentence, label" in text


def test_labels_outside_d0_set(tmp_path, tiny_model):
    entry = sentiment_entry("candidate_clean.jsonl", label_names=["sad", "happy"])
    text = _problems(tmp_path, tiny_model, entries={"clean": entry})
    assert "labels outside D0's label set: happy, sad; D0 labels: negative, positive" in text


def test_label_map_fixes_foreign_labels(tmp_path, tiny_model):
    entry = sentiment_entry("candidate_clean.jsonl", label_names=["sad", "happy"], label_map={"sad": "negative", "happy": "positive"})
    assert _check(tmp_path, tiny_model, entries={"clean": entry}).arms[1].rows == 240


def test_empty_dataset(tmp_path, tiny_model):
    empty = tmp_path / "empty.csv"
    empty.write_text("sentence,label\n")
    assert "the dataset is empty" in _problems(tmp_path, tiny_model, entries={"clean": {**sentiment_entry("x"), "path": str(empty)}})


def test_empty_jsonl_file(tmp_path, tiny_model):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "the dataset is empty (no rows in empty.jsonl)" in _problems(tmp_path, tiny_model, entries={"clean": {**sentiment_entry("x"), "path": str(empty)}})


def test_size_larger_than_data_unless_repetition(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, mixture={"sizes": [16, 200]})
    assert "size 200 needs 200 D0 training rows for arm 'control' but only 120 exist" in text
    assert "mixture.allow_repetition: true" in text
    assert _check(tmp_path, tiny_model, mixture={"sizes": [16, 200], "allow_repetition": True})


def test_unknown_candidate_suggests(tmp_path, tiny_model):
    assert "Unknown candidate 'claen'. Did you mean 'clean'? Available: clean" in _problems(tmp_path, tiny_model, candidates=["claen"])


def test_unknown_model(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, model={"source": "nobody-here/no-such-model"})
    assert "model.source: 'nobody-here/no-such-model' is not in the local Hugging Face cache" in text


def _leaky(tmp_path):
    leaky = tmp_path / "leaky.jsonl"
    copies = (FIXTURES / "benchmark.jsonl").read_text().splitlines(True)[:3]
    leaky.write_text((FIXTURES / "candidate_clean.jsonl").read_text() + "".join(copies).replace("i found", "I found"))
    return {"clean": {**sentiment_entry("x"), "path": str(leaky)}}


def test_benchmark_copies_are_removed_and_counted(tmp_path, tiny_model):
    arm = _check(tmp_path, tiny_model, entries=_leaky(tmp_path)).arms[1]
    assert arm.contamination == {"checked": 243, "exact": 3, "near": 0, "removed": 3, "d0_copies": 0} and arm.rows == 240
    assert arm.profile["contaminated"] == 3 and arm.profile["removed_share"] == round(3 / 243, 4)


def test_benchmark_copies_flagged_are_kept(tmp_path, tiny_model):
    arm = _check(tmp_path, tiny_model, entries=_leaky(tmp_path), contamination={"mode": "flag"}).arms[1]
    assert arm.contamination["exact"] == 3 and arm.contamination["removed"] == 0 and arm.rows == 243


def test_benchmark_copies_fail_when_asked(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, entries=_leaky(tmp_path), contamination={"mode": "fail"})
    assert "contamination: 3 of 243 rows of candidate 'clean'" in text and "contamination.mode is 'fail'" in text


def test_benchmark_that_is_the_training_split_is_an_error(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, entries={"clean": sentiment_entry("benchmark.jsonl")})
    assert "40 of 40 rows of candidate 'clean'" in text and "more than half" in text


def test_unknown_contamination_mode_and_intervals_without_resamples(tmp_path, tiny_model):
    one = tmp_path / "one.jsonl"
    one.write_text((FIXTURES / "benchmark.jsonl").read_text().splitlines(True)[0])
    bench = {"data": {"source": str(one), "columns": {"text": "sentence"}, "label_names": ["negative", "positive"]}}
    assert "leave nothing to resample" in _problems(tmp_path, tiny_model, benchmark=bench)
    assert _check(tmp_path, tiny_model, benchmark=bench, seeds=2).arms
    with pytest.raises(Exception, match="Input should be 'remove', 'flag' or 'fail'"):
        _check(tmp_path, tiny_model, contamination={"mode": "drop"})


def test_every_problem_at_once(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, candidates=["nope"], mixture={"sizes": [16, 500]},
                     model={"source": str(tmp_path / "missing.gguf")})
    assert "Unknown candidate 'nope'" in text and "size 500" in text and "model.source" in text


def test_holdout_benchmark_never_overlaps_d0(tmp_path, tiny_model):
    inputs = _check(tmp_path, tiny_model, benchmark={"holdout": 30})
    d0, bench = ([json.loads(x)["text"] for x in open(p)] for p in (inputs.d0, inputs.benchmark))
    assert len(bench) == 30 and len(d0) == 90 and not set(d0) & set(bench)


def test_formats_csv_parquet_zip_folder(tmp_path):
    rows = [json.loads(x) for x in open(FIXTURES / "d0.jsonl")][:10]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "folder").mkdir()
    pd.DataFrame(rows).to_json(tmp_path / "folder" / "train.jsonl", orient="records", lines=True)
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        z.write(tmp_path / "d.csv", "train.csv")
    for source in ("d.csv", "d.parquet", "folder", "d.zip"):
        ref = DataRef(source=str(tmp_path / source), columns={"text": "sentence"}, label_names=["negative", "positive"])
        assert normalize(load_split(ref), "classification", ref, source)[0] == {"text": rows[0]["sentence"], "label": ["negative", "positive"][rows[0]["label"]]}


def test_hub_id_served_from_mirror():
    ref = DataRef(source="stanfordnlp/sst2", split="validation[:5]", columns={"text": "sentence"}, label_names=["negative", "positive"])
    rows = normalize(load_split(ref), "classification", ref, "sst2")
    assert len(rows) == 5 and MIRROR.exists()


def test_qa_answers_normalized():
    ref = DataRef(source=str(FIXTURES / "qa.jsonl"))
    rows = normalize(load_split(ref), "extractive_qa", ref, "qa")
    assert rows[0]["answers"] == ["wonderful"] and rows[0]["question"] == "How was the film?"


def test_missing_package_file():
    with pytest.raises(DataError, match="Python package 'no_such_pkg' is not installed"):
        load_split(DataRef(source="pypi:no_such_pkg/x.csv"))


def test_placebo_arms_draw_unused_d0_rows_and_d0_noise_is_documented(tmp_path, tiny_model):
    """noise.placebos: each placebo's 'candidate' rows are D0 rows no mixture uses as D0, in its own order;
    base.label_noise replaces a fixed share of D0's labels (after any hold-out)."""
    from tasks.core import mixing

    inputs = _check(tmp_path, tiny_model, noise={"placebos": 2}, mixture={"sizes": [16, 32], "d0_share": 0.5})
    assert [a.name for a in inputs.arms] == ["control", "clean", "placebo-1", "placebo-2"]
    d0 = [json.loads(x) for x in open(inputs.d0)]
    used = {d0[i]["text"] for i in mixing._take(len(d0), 16, __import__("numpy").random.default_rng([0, 0]))}
    p1, p2 = ([json.loads(x) for x in open(inputs.arm(f"placebo-{k}").data)] for k in (1, 2))
    assert len(p1) == len(d0) - 16 and not used & {r["text"] for r in p1} and p1 != p2
    assert sorted(map(json.dumps, p1)) == sorted(map(json.dumps, p2))  # the same pool, drawn in another order
    noisy = _check(tmp_path, tiny_model, base={**sentiment_study(tmp_path, tiny_model, [])["base"], "label_noise": 0.25})
    flipped = sum(a["label"] != b["label"] for a, b in zip(d0, (json.loads(x) for x in open(noisy.d0))))
    assert flipped == round(0.25 * len(d0))


def test_noise_options_are_checked(tmp_path, tiny_model):
    text = _problems(tmp_path, tiny_model, noise={"placebos": 1}, mixture={"sizes": [16, 220], "d0_share": 0.5})
    assert "noise.placebos: a placebo arm needs 110 D0 rows beyond the 110" in text
    with pytest.raises(ValueError, match="replicate_sizes .* must be mixture sizes"):
        Study.model_validate(sentiment_study(tmp_path, tiny_model, ["clean"], noise={"replicate_sizes": [48]}))
    entries = {"placebo-9": sentiment_entry("candidate_clean.jsonl")}
    assert "reserved for placebo arms" in _problems(tmp_path, tiny_model, ["placebo-9"], entries=entries)
    study = Study.model_validate(sentiment_study(tmp_path, tiny_model, ["clean"], mixture={"sizes": [16, 32, 64]}))
    assert study.arm_points("control") == [(16, 0), (16, 1), (16, 2), (16, 3), (32, 0), (64, 0), (64, 1), (64, 2),
                                           (64, 3)]  # replicates at the smallest and largest size
    assert study.arm_points("clean") == [(16, 0), (32, 0), (64, 0)]
    assert Study.model_validate({**study.model_dump(), "seeds": 2}).arm_points("control") == [
        (s, e) for s in (16, 32, 64) for e in (0, 1)]  # with seeds >= 2 every point measures the noise itself
