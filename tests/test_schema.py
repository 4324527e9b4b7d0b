"""Study and catalog validation: good files load; each bad one names file, line, field and the choices."""

from pathlib import Path

import pytest
import yaml

from conftest import ROOT, sentiment_entry, sentiment_study, write_catalog, write_study
from tasks.schema.catalog import load_catalog
from tasks.errors import StudyInvalid
from tasks.schema.study import load_study


@pytest.mark.parametrize("path", sorted((ROOT / "deployments" / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_is_valid(path):
    assert load_study(path).name == yaml.safe_load(path.read_text())["name"]


def test_shipped_catalog_is_valid():
    demo = load_catalog(ROOT / "deployments" / "catalogs" / "instruction-demo")
    assert {e.format for e in demo.values()} >= {"auto", "alpaca"} and len(demo) == 4
    entries = load_catalog(ROOT / "catalog")
    assert {"sst2-extra", "imdb-reviews", "sst2-label-flipped"} <= set(entries)
    assert entries["sst2-label-flipped"].label_noise > 0


def _problems(path: Path) -> list[str]:
    with pytest.raises(StudyInvalid) as err:
        load_study(path)
    return err.value.problems


def test_unknown_key_names_file_line_and_field(tmp_path):
    study = sentiment_study(tmp_path, tmp_path, ["a"])
    study["training"]["learnng_rate"] = 1e-3
    path = write_study(tmp_path, study)
    [problem] = _problems(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "learnng_rate" in t)
    assert problem == f"{path}:{line}: training.learnng_rate: unknown key; did you mean 'learning_rate'?"


def test_all_spec_problems_reported_at_once(tmp_path):
    study = sentiment_study(tmp_path, tmp_path, ["a"], task="summarization", target_size=-1, colour="blue")
    problems = _problems(write_study(tmp_path, study))
    text = "\n".join(problems)
    assert len(problems) == 3
    assert "task: unknown task type 'summarization'; task types: classification, code, extractive_qa" in text
    assert "target_size: Input should be greater than 0" in text
    assert "colour: unknown key" in text


def test_bad_metric_and_sizes(tmp_path):
    study = sentiment_study(tmp_path, tmp_path, ["a"], metrics=["bleu"], mixture={"sizes": [64]})
    text = "\n".join(_problems(write_study(tmp_path, study)))
    assert "metrics: unknown metric 'bleu' for task classification; valid: accuracy, macro_f1, gold_logprob, eval_loss" in text
    assert "mixture.sizes: give at least 2 distinct positive sizes" in text


def test_benchmark_needs_exactly_one_source(tmp_path):
    study = sentiment_study(tmp_path, tmp_path, ["a"], benchmark={})
    assert "give exactly one of 'data' (a dataset split) or 'holdout' (rows of D0)" in "\n".join(_problems(write_study(tmp_path, study)))


def test_yaml_syntax_error_has_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntask: [classification\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:") and "not valid YAML" in problem


def test_catalog_duplicate_and_broken_entries_fail_loudly(tmp_path):
    folder = write_catalog(tmp_path / "cat", {"one": sentiment_entry("d0.jsonl"), "two": sentiment_entry("d0.jsonl")})
    (folder / "three.yaml").write_text(yaml.safe_dump({"name": "one", **sentiment_entry("d0.jsonl")}))
    (folder / "four.yaml").write_text(yaml.safe_dump({"name": "four", "task": "classification", "path": "x.jsonl", "licence": "MIT"}))
    with pytest.raises(StudyInvalid) as err:
        load_catalog(folder)
    text = "\n".join(err.value.problems)
    assert "duplicate catalog entry 'one'" in text and "one.yaml" in text
    assert f"{folder / 'four.yaml'}:1: license: Field required" in text
    assert "four.yaml:1: licence: unknown key" in text


def test_command_line_options_and_smoke_are_validated_with_the_file(tmp_path):
    """--concurrency, --work-pool, --placebos and --smoke are merged into the study before validation: a value no
    study file could hold is refused, named by its option; a valid one wins over the file's."""
    study = sentiment_study(tmp_path, tmp_path, ["a"])
    study["training"]["batch_size"] = 32  # fine at sizes 16, 32; larger than --smoke's largest mixture (16 rows)
    path = write_study(tmp_path, study)
    assert load_study(path, {"concurrency": (3, "--concurrency")}).concurrency == 3
    with pytest.raises(StudyInvalid) as err:
        load_study(path, {"concurrency": (0, "--concurrency"), "noise.placebos": (99, "--placebos")})
    assert err.value.problems == [f"{path} (--concurrency): concurrency: Input should be greater than 0",
                                  f"{path} (--placebos): noise.placebos: Input should be less than or equal to 20"]
    with pytest.raises(StudyInvalid) as err:
        load_study(path, smoke=True)
    [problem] = err.value.problems
    assert problem.startswith(f"{path}:") and "training.batch_size x gradient_accumulation_steps = 32" in problem
    assert problem.endswith("(with --smoke)")
    study["training"]["batch_size"] = 8
    small = load_study(write_study(tmp_path, study), smoke=True)
    assert (small.name, small.mixture.sizes, small.benchmark.sample, small.training.max_steps) == \
        ("fixture-study-smoke", [8, 16], 8, 2)
    assert small.output_path == (tmp_path / "out-smoke").resolve() and small.concurrency == 2


def test_a_catalog_entry_extends_the_data_reference(tmp_path):
    """One home for the column mapping: a catalog entry has every DataRef field but the source, and its data_ref()
    carries them all."""
    from tasks.schema.catalog import CatalogEntry
    from tasks.schema.sources import DataMapping, DataRef

    assert set(DataMapping.model_fields) <= set(CatalogEntry.model_fields) & set(DataRef.model_fields)
    entry = CatalogEntry(name="x", task="classification", license="MIT", path="/d.jsonl", split="train[:5]",
                         subset="main", columns={"text": "s"}, label_names=["a", "b"], format="auto",
                         drop_unusable=True)
    ref = entry.data_ref()
    assert ref.source == "/d.jsonl" and all(getattr(ref, f) == getattr(entry, f) for f in DataMapping.model_fields)


def test_run_refuses_a_smoke_reduction_the_study_cannot_take_before_compute(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    study = sentiment_study(tmp_path, tmp_path, ["a"])
    study["training"]["batch_size"] = 32
    path = write_study(tmp_path, study)
    result = CliRunner().invoke(app, ["run", str(path), "--smoke", "--yes"])
    assert result.exit_code == 2 and "(with --smoke)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out-smoke").exists()  # nothing was written
