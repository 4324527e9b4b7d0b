"""Data and settings that would change the answer, or crash a run, are refused or shown before compute (issue 25):
each attempt a careless or hostile user made gets a clear error (or a recorded warning), never a traceback."""

import json
import os

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, sentiment_entry, sentiment_study, write_catalog, write_study
from tasks.errors import StudyInvalid
from tasks.schema.study import Study
from tasks.ops.validate import check_study


def _rows(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _inputs(tmp_path, model, entries=None, **overrides):
    write_catalog(tmp_path / "catalog", entries or {"clean": sentiment_entry("candidate_clean.jsonl")})
    return check_study(Study.model_validate(sentiment_study(tmp_path, model, list(entries or ["clean"]), **overrides)))


def _problems(*args, **kwargs) -> str:
    with pytest.raises(StudyInvalid) as err:
        _inputs(*args, **kwargs)
    return "\n".join(err.value.problems)


def _d0(tmp_path, rows):
    return {"source": str(_write(tmp_path / "d0.jsonl", rows)), "columns": {"text": "sentence"},
            "label_names": ["negative", "positive"]}


# ---- labels ---------------------------------------------------------------------------------------------------
def test_float_labels_are_mapped_like_integers(tmp_path, tiny_model):
    rows = [dict(r, label=float(r["label"])) for r in _rows(FIXTURES / "d0.jsonl")]  # 0.0 / 1.0, as CSV exports write
    inputs = _inputs(tmp_path, tiny_model, base=_d0(tmp_path, rows))
    assert {r["label"] for r in _rows(inputs.d0)} == {"negative", "positive"}  # not "0.0" / "1.0"
    text_ids = [dict(r, label=str(int(r["label"]))) for r in rows]  # '0' / '1' read from a text column
    inputs = _inputs(tmp_path, tiny_model, base=_d0(tmp_path, text_ids))
    assert {r["label"] for r in _rows(inputs.d0)} == {"negative", "positive"}


def test_a_fractional_or_foreign_d0_label_is_refused_with_its_row(tmp_path, tiny_model):
    rows = _rows(FIXTURES / "d0.jsonl")
    half = rows[:5] + [dict(rows[5], label=0.5)] + rows[6:]
    assert f"D0 (base: {tmp_path / 'd0.jsonl'} [train]): row 5: label 0.5 is a fraction" in \
        _problems(tmp_path, tiny_model, base=_d0(tmp_path, half))
    foreign = rows[:7] + [dict(rows[7], label="neutral")] + rows[8:]
    assert "D0 (base): 1 rows have labels outside label_names, e.g. row 7: 'neutral'; label_names: negative, " \
           "positive" in _problems(tmp_path, tiny_model, base=_d0(tmp_path, foreign))


def test_a_one_class_benchmark_is_refused_and_a_skewed_one_reported(tmp_path, tiny_model):
    bench = _rows(FIXTURES / "benchmark.jsonl")
    positives = [r for r in bench if r["label"] == 1]
    one = {"data": {"source": str(_write(tmp_path / "b1.jsonl", positives)), "columns": {"text": "sentence"},
                    "label_names": ["negative", "positive"]}}
    text = _problems(tmp_path, tiny_model, benchmark=one)
    assert f"benchmark: all {len(positives)} rows have the label 'positive': accuracy would measure how often a " \
           "model says 'positive' (its bias), not its skill" in text and "benchmark.allow_one_class: true" in text
    inputs = _inputs(tmp_path, tiny_model, benchmark={**one, "allow_one_class": True})
    assert any("all" in w and "'positive'" in w for w in inputs.warnings)  # accepted when said, still reported
    skewed = positives * 9 + [r for r in bench if r["label"] == 0][:2]
    inputs = _inputs(tmp_path, tiny_model, benchmark={**one, "data": {**one["data"], "source": str(
        _write(tmp_path / "b2.jsonl", skewed))}})
    assert any(w.startswith("benchmark: ") and "of its rows have the label 'positive' (D0: " in w for w in inputs.warnings)


# ---- contamination and copies of D0 ---------------------------------------------------------------------------
def test_zero_width_characters_do_not_hide_benchmark_copies(tmp_path, tiny_model):
    bench = _rows(FIXTURES / "benchmark.jsonl")
    hidden = [dict(r, sentence="\u200b".join(r["sentence"])) for r in bench[:30]]  # a zero-width space between letters
    hidden += [dict(r, sentence=r["sentence"].upper().replace("E", "\u00c9").replace(" ", " \u2060"))
               for r in bench[30:40]]  # case, accents, word joiners
    path = _write(tmp_path / "hidden.jsonl", hidden + _rows(FIXTURES / "candidate_clean.jsonl")[:200])
    inputs = _inputs(tmp_path, tiny_model, entries={"clean": {**sentiment_entry("x"), "path": str(path)}})
    arm = inputs.arms[1]
    assert arm.contamination["removed"] == 40 and arm.rows <= 200


def test_a_candidate_that_copies_d0_is_reported(tmp_path, tiny_model):
    entries = {"d0-again": sentiment_entry("d0.jsonl")}
    inputs = _inputs(tmp_path, tiny_model, entries=entries)
    arm = inputs.arms[1]
    assert arm.profile["d0_copies"] == arm.rows > 0
    assert any(w.startswith("candidate 'd0-again': ") and "(all of them: it is D0 again)" in w for w in inputs.warnings)


# ---- crashes that became clear errors -------------------------------------------------------------------------
def test_a_binary_d0_file_is_named(tmp_path, tiny_model):
    # random bytes, but never starting with '[' (a 1-in-256 draw read as a JSON array, and failed this test once)
    (tmp_path / "d0.jsonl").write_bytes(b"\xff" + os.urandom(4000).replace(b"\n", b"\xff") + b"\n")
    base = {"source": str(tmp_path / "d0.jsonl"), "columns": {"text": "sentence"}}
    assert f"{tmp_path / 'd0.jsonl'}:1: not UTF-8 text" in _problems(tmp_path, tiny_model, base=base)


@pytest.mark.parametrize("change, message", [
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"training": {"learning_rate": float("inf")}}, "training.learning_rate: Input should be a finite number"),
    ({"training": {"epochs": float("inf")}}, "training.epochs: Input should be a finite number"),
    ({"training": {"epochs": float("nan")}}, "training.epochs: Input should be a finite number"),
    ({"training": {"batch_size": 1e6}}, "training.batch_size: Input should be less than or equal to 65536"),
    ({"training": {"batch_size": 64}}, "training.batch_size x gradient_accumulation_steps = 64 is larger than the largest mixture (32 rows)"),
    ({"training": {"batch_size": 8.5}}, "training.batch_size: Input should be a valid integer"),
    ({"target_size": 20}, "target_size 20 is below the largest mixture size 32"),
])
def test_impossible_settings_are_refused_by_validate(tmp_path, tiny_model, change, message):
    study = sentiment_study(tmp_path, tiny_model, ["clean"])
    for key, value in change.items():
        study[key] = {**study[key], **value} if isinstance(value, dict) else value
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    result = CliRunner().invoke(app, ["validate", str(write_study(tmp_path, study))])
    assert result.exit_code == 2 and message in result.output.replace("\n", " "), result.output
    assert "Traceback" not in result.output


def test_output_dir_that_is_a_file_and_remote_code(tmp_path, tiny_model):
    (tmp_path / "afile").write_text("x")
    assert f"output_dir: '{tmp_path / 'afile'}' is a file, not a folder" in _problems(
        tmp_path, tiny_model, output_dir=str(tmp_path / "afile" / "out"))
    study = sentiment_study(tmp_path, tiny_model, ["clean"])
    study["model"] = {**study["model"], "trust_remote_code": True}
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    result = CliRunner().invoke(app, ["validate", str(write_study(tmp_path, study))])
    assert result.exit_code == 0 and "warning model.trust_remote_code: true: Python code shipped with" in \
        " ".join(result.output.split())
    assert yaml.safe_load(write_study(tmp_path, study).read_text())["model"]["trust_remote_code"] is True
