"""A user's first mistakes on the command line (issue 26, first part): a missing or wrong study path is one clear
line and exit status 2 for every verb that takes one, never a traceback; `curate --version`; a .json file that is one
JSON array (alpaca_data.json) is data like JSON Lines."""

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tasks.backends.data import load_split
from tasks.errors import DataError
from tasks.schema.sources import DataRef


@pytest.mark.parametrize("verb", [["validate"], ["plan"], ["run"], ["calibrate"], ["failures"], ["status"],
                                  ["push", "--repo", "org/x"], ["push-data", "--repo", "org/x"]])
def test_a_missing_study_file_is_one_clear_line(verb, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    missing = tmp_path / "nope.yaml"
    result = CliRunner().invoke(app, [verb[0], str(missing), *verb[1:]])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{missing}: no such file" in " ".join(result.output.split()), result.output
    assert not missing.exists() and list(tmp_path.iterdir()) == []  # and nothing was created


def test_a_folder_or_binary_file_as_the_study(tmp_path):
    folder = CliRunner().invoke(app, ["validate", str(tmp_path)])
    assert folder.exit_code == 2 and f"{tmp_path}: a folder, not a YAML file" in folder.output
    (tmp_path / "s.yaml").write_bytes(b"\xff\xfe\x00bad")
    binary = CliRunner().invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert binary.exit_code == 2 and "cannot be read as UTF-8 text" in binary.output


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("curate 0.") and "+src." in result.output


def test_a_json_array_reads_like_json_lines(tmp_path):
    rows = [{"instruction": "Name a colour.", "input": "", "output": "Blue."},
            {"instruction": "Add 2 and 2.", "input": "", "output": "4"}]
    (tmp_path / "alpaca_data.json").write_text(json.dumps(rows, indent=2))
    assert load_split(DataRef(source=str(tmp_path / "alpaca_data.json"))).to_list() == rows
    (tmp_path / "bad.json").write_text(json.dumps([rows[0], "not a row"]))
    with pytest.raises(DataError, match="item 1 of the JSON array is not an object"):
        load_split(DataRef(source=str(tmp_path / "bad.json")))
    (tmp_path / "cut.json").write_text(json.dumps(rows)[:-5])
    with pytest.raises(DataError, match="cut.json: not a valid JSON array: .*line 1 column"):
        load_split(DataRef(source=str(tmp_path / "cut.json")))


def test_read_only_verbs_create_no_store(tmp_path, tiny_model, monkeypatch):
    from conftest import sentiment_entry, sentiment_study, write_catalog, write_study

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_catalog(tmp_path / "catalog", {"clean": sentiment_entry("candidate_clean.jsonl")})
    study = write_study(tmp_path, sentiment_study(tmp_path, tiny_model, ["clean"]))
    never = CliRunner().invoke(app, ["status", str(study)])
    assert never.exit_code == 1 and "fixture-study: no study run yet" in " ".join(never.output.split())
    for verb in (["rank", "abc123"], ["backtest", "abc123"], ["failures", "abc123"]):
        result = CliRunner().invoke(app, [*verb, "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}"])
        assert result.exit_code == 2 and "no MLflow store at" in result.output, (verb, result.output)
    pushed = CliRunner().invoke(app, ["failures", str(study)])
    assert pushed.exit_code == 2 and "no MLflow store at" in " ".join(pushed.output.split())
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "out" / "mlflow.db").exists()
