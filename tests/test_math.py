"""Math word problems: final-answer extraction and normalization against hand-written cases, few-shot exemplars
never trained on, denominators checked, bad inputs refused before compute, and a math study through `curate run`."""

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, run_tree, write_catalog, write_study
from tasks.core import mathanswers
from tasks.errors import StudyInvalid
from tasks.schema.study import Study
from tasks.ops.validate import check_study

MATH = FIXTURES / "math"


@pytest.mark.parametrize("text, answer", [
    ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("#### $18.00", "18"),
    ("#### -3.0", "-3"),
    ("so the total is \\boxed{1,000} dollars", "1000"),
    ("first \\boxed{2} then \\boxed{\\frac{3}{4}}", "3"),  # the last box; its first number
    ("The answer is $1,234.50.", "1234.5"),
    ("Therefore, the answer is: 18 eggs.", "18"),
    ("She pays 5 dollars, then 7 dollars.", "7"),  # the last number
    ("It is 40%.", "40"),
    ("9 apples", "9"),
    ("0.50", "0.5"),
    ("−7 degrees", "-7"),
    ("no number here", None),
    ("3:30 p.m.", None),  # a bare time or ratio is not one number (ASDiv has both)
    ("3:4", None),
    ("At 3:30 she had 12 apples.\n#### 12", "12"),
    ("", None),
])
def test_final_answers_are_extracted_and_normalized(text, answer):
    assert mathanswers.extract(text) == answer


@pytest.mark.parametrize("a, b, equal", [("18", "18", True), ("0.5", "0.50", True), ("3", "4", False),
                                         (None, "4", False), ("1000000", "1000000.0000001", True)])
def test_answers_compare_as_numbers(a, b, equal):
    assert mathanswers.same(a and mathanswers.normalize_number(a), b and mathanswers.normalize_number(b)) is equal


def test_training_targets_end_in_the_final_answer():
    assert mathanswers.solution_text("48/2 = <<48/2=24>>24 clips.\n#### 72", "72") == "48/2 = 24 clips.\n#### 72"
    assert mathanswers.solution_text("9 apples", "9") == "#### 9"
    assert mathanswers.solution_text("So \\boxed{4}.", "4") == "So \\boxed{4}.\n#### 4"


def _study(tmp_path, model, **overrides) -> dict:
    study = {"name": "math-study", "task": "math", "base": {"source": str(MATH / "d0.jsonl")},
             "benchmark": {"data": {"source": str(MATH / "benchmark.jsonl")}}, "model": {"source": str(model)},
             "candidates": ["more", "shuffled"], "mixture": {"sizes": [16, 32]}, "target_size": 256,
             "fewshot": {"k": 2, "data": {"source": str(MATH / "fewshot.jsonl")}}, "noise": {"control_replicates": 1},
             "training": {"epochs": 1, "batch_size": 8, "max_length": 64, "max_new_tokens": 12, "eval_batch_size": 40,
                          "lora": {"r": 4, "alpha": 8}},
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog"), "concurrency": 2}
    write_catalog(tmp_path / "catalog", {n: {"task": "math", "license": "MIT", "path": str(MATH / f"{n}.jsonl")}
                                         for n in ("more", "shuffled")})
    study.update(overrides)
    return study


def _problems(tmp_path, study: dict) -> str:
    with pytest.raises(StudyInvalid) as err:
        check_study(Study.model_validate(study), write=False)
    return "\n".join(err.value.problems)


def test_fewshot_exemplars_are_never_trained_on(tmp_path, tiny_model):
    # the exemplars' split overlaps D0 and a candidate: its rows are removed from both, whatever the mode
    leaky = tmp_path / "leaky.jsonl"
    leaky.write_text((MATH / "more.jsonl").read_text() + (MATH / "fewshot.jsonl").read_text())
    study = _study(tmp_path, tiny_model, contamination={"mode": "flag"},
                   base={"source": str(tmp_path / "d0.jsonl")})
    (tmp_path / "d0.jsonl").write_text((MATH / "d0.jsonl").read_text() + (MATH / "fewshot.jsonl").read_text())
    write_catalog(tmp_path / "catalog", {"more": {"task": "math", "license": "MIT", "path": str(leaky)}})
    inputs = check_study(Study.model_validate(study), write=True)
    shots = inputs.context["fewshot"]
    assert len(shots) == 2 and all(s["final"] for s in shots)
    questions = {s["question"] for s in shots}
    for name in ("d0.jsonl", "candidate-more.jsonl"):
        rows = [json.loads(line) for line in (tmp_path / "out" / "data" / name).open()]
        assert not questions & {r["question"] for r in rows}, name
    more = next(a for a in inputs.arms if a.name == "more")
    assert more.contamination["fewshot_removed"] == 2 and inputs.d0_contamination["fewshot_removed"] == 2


def test_bad_math_inputs_are_refused_before_compute(tmp_path, tiny_model):
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text((MATH / "d0.jsonl").read_text()
                         + json.dumps({"question": "How many?", "answer": "Many, many."}) + "\n"
                         + json.dumps({"question": "And now?", "answer": "Still many."}) + "\n")
    found = _problems(tmp_path, _study(tmp_path, tiny_model, base={"source": str(no_answer)}))
    assert f"D0 (base: {no_answer} [train]): 2 of 122 rows have no final answer in their solution, " \
           f"e.g. {no_answer}:121: 'Many, many.'" in found and "drop_unusable: true drops such rows" in found
    study = _study(tmp_path, tiny_model, base={"source": str(no_answer), "drop_unusable": True})
    control = check_study(Study.model_validate(study), write=False).arms[0]
    assert control.rows == 120  # the two unanswerable rows dropped, with a warning
    found = _problems(tmp_path, _study(tmp_path, tiny_model, fewshot={"k": 8, "data": {
        "source": str(MATH / "fewshot.jsonl"), "split": "train[:5]"}}))
    assert "fewshot.k: 8 exemplars asked for, but split 'train[:5]'" in found and "has 5 rows" in found
    # a classification benchmark under a math study
    found = _problems(tmp_path, _study(tmp_path, tiny_model, benchmark={"data": {"source": str(FIXTURES / "benchmark.jsonl")}}))
    assert "missing column 'question' (for field 'question'), 'answer' (for field 'answer'); columns present: " \
           "sentence, label" in found


def test_a_run_that_scores_fewer_examples_is_an_error(tmp_path, tiny_model, monkeypatch):
    from tasks.backends import evaluation
    from tasks.schema.training import Training
    from tasks.tasktypes import math

    bench = tmp_path / "bench.jsonl"
    rows = [math.TASK.normalize(json.loads(line), None, "b", i) for i, line in enumerate((MATH / "benchmark.jsonl").open())]
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    real = math.TASK.predict
    monkeypatch.setattr(math.TASK, "predict", lambda rows, context, scorer: real(rows, context, scorer)[:-1])
    with pytest.raises(RuntimeError, match="scored 5 of 6 benchmark examples"):
        evaluation.score_adapter(str(tiny_model), None, str(bench), "math", {}, Training(max_new_tokens=4), str(tmp_path))


def test_presets_fill_what_the_study_leaves_out(tmp_path, tiny_model):
    study = _study(tmp_path, tiny_model, preset="quick")
    del study["mixture"]["sizes"], study["training"]["lora"]
    quick = Study.model_validate(study)
    assert quick.mixture.sizes == [32, 64, 128] and quick.benchmark.sample == 100 and quick.training.lora.r == 8
    assert quick.fewshot.k == 2  # the study's own value (it names a split, so the preset's k would apply)
    assert quick.training.max_new_tokens == 12 and quick.training.epochs == 1  # the study's own values win
    del study["fewshot"]
    assert Study.model_validate(study).fewshot.k == 0  # no split named: no exemplars from the preset
    thorough = Study.model_validate({**study, "preset": "thorough", "target_size": 4096})
    assert thorough.seeds == 3 and thorough.mixture.sizes[-1] == 2048 and thorough.benchmark.sample is None
    with pytest.raises(Exception, match="quick"):
        Study.model_validate({**study, "preset": "fast"})


@pytest.mark.integration
def test_a_math_study_with_fewshot_evaluation_runs_in_smoke_mode(tmp_path, tiny_model, prefect_harness):
    """`curate run --smoke` on a preset study: the whole path (few-shot prompts, generation, answer extraction,
    MLflow tree, ranking) on 8 benchmark rows and sizes 8 and 16, into its own experiment."""
    study = write_study(tmp_path, _study(tmp_path, tiny_model, preset="standard"))
    result = CliRunner().invoke(app, ["run", str(study), "--smoke"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = tmp_path / "out-smoke"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("math-study-smoke").experiment_id], max_results=100)
    studies, arms, points = run_tree(runs)
    assert len(arms) == 3 and len(points) == 3 * 2 + 2
    for p in points:
        assert {"accuracy", "token_logprob", "gold_logprob", "eval_loss"} <= set(p.data.metrics)
        assert p.data.metrics["n_examples"] == 8 and 0 <= p.data.metrics["accuracy"] <= 1
        assert p.data.params["size"] in ("8", "16") and p.data.params["training.max_steps"] == "2"
    shots = client.download_artifacts(studies[0].info.run_id, "fewshot.jsonl", str(tmp_path))
    assert len(open(shots).read().splitlines()) == 1  # smoke: one exemplar
    preds = [json.loads(line) for line in next(out.rglob("predictions.jsonl")).open()]
    assert len(preds) == 8 and {"gold", "prediction", "generation", "correct", "token_logprob"} <= set(preds[0])
    ranking = (out / "ranking" / "ranking.md").read_text()
    assert "| shuffled |" in ranking and "| more |" in ranking
    assert not (tmp_path / "out").exists()  # the study's real output folder is untouched


def test_label_noise_shuffles_solutions_between_problems():
    from tasks.tasktypes import math

    rows = [math.TASK.normalize(json.loads(line), None, "x", i) for i, line in enumerate((MATH / "d0.jsonl").open())]
    noisy = math.TASK.label_noise(rows, 0.5, 1, {})
    changed = [i for i, (a, b) in enumerate(zip(rows, noisy)) if a["answer"] != b["answer"]]
    assert len(changed) == 60 and [r["question"] for r in rows] == [r["question"] for r in noisy]
    assert sorted(r["answer"] for r in noisy) == sorted(r["answer"] for r in rows)  # the same solutions, moved
