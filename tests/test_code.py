"""Code with executed tests: pass@k against hand-computed values, the converters on the shared HumanEval/MBPP files,
the judge's verdicts, quality gates, bad inputs refused before compute, and a tiny-model code study end to end (the
sandbox itself: test_sandbox.py)."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import ROOT, run_tree, write_catalog, write_study
from tasks.backends import sandbox
from tasks.core import codeconvert, gates
from tasks.core.gates import apply_gates
from tasks.core.ranking import RankRow, Ranking
from tasks.core.render import to_markdown
from tasks.core.scaling import Fit
from tasks.errors import StudyInvalid
from tasks.schema.study import Study
from tasks.ops.validate import check_study
from tasks.tasktypes.code import cut, pass_at_k

SHARED = ROOT.parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"no shared datasets at {SHARED}")


# ---- pass@k and completions ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, c, k, expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (5, 2, 1, 0.4),
    (5, 2, 2, 0.7),            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (5, 4, 2, 1.0),            # fewer than k failures: every k-subset holds a pass
    (20, 0, 10, 0.0)])
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_n_at_least_k():
    with pytest.raises(ValueError, match="pass@5 needs at least 5 samples"):
        pass_at_k(2, 1, 5)


def test_a_completion_ends_at_the_next_top_level_statement():
    assert cut("    return x + 1\n\ndef other():\n    pass\n") == "    return x + 1"
    assert cut("    return 1\nprint(f(2))\n") == "    return 1"
    assert cut("    y = 2\n    return y\n") == "    y = 2\n    return y"


# ---- converters ---------------------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@needs_shared
def test_humaneval_converts_and_every_reference_passes():
    rows = codeconvert.humaneval(_jsonl(SHARED / "openai__openai_humaneval" / "test.jsonl")).rows
    assert len(rows) == 164 and [r["id"] for r in rows[:2]] == ["he_0", "he_1"]
    assert rows[0]["entry_point"] == "has_close_elements" and rows[0]["test"].rstrip().endswith("check(has_close_elements)")
    outcomes = sandbox.execute_many([sandbox.Program(**codeconvert.program(r, r["solution"])) for r in rows],
                                    sandbox.Limits(timeout_s=30), parallel=4)
    assert [r["id"] for r, o in zip(rows, outcomes) if not o.passed] == []
    broken = sandbox.Program(**codeconvert.program(rows[0], "    return not True\n"))
    assert sandbox.execute(broken).kind == "assertion"  # and the tests do test something


@needs_shared
def test_mbpp_converts_and_every_reference_passes():
    folder = SHARED / "google-research-datasets__mbpp"
    records = [r for split in ("prompt", "test", "validation", "train") for r in _jsonl(folder / f"{split}.jsonl")]
    converted = codeconvert.mbpp(records)
    rows = converted.rows
    assert len(rows) == 974 and converted.skipped == [] and [r["id"] for r in rows[:2]] == ["mbpp_1", "mbpp_2"]
    first = rows[0]
    assert first["entry_point"] == "min_cost" and "def min_cost(cost, m, n):" in first["prompt"]
    assert "Write a function to find the minimum cost path" in first["prompt"] and first["solution"].startswith("    ")
    # mbpp_123 takes 6 s alone here; four at once on a busy 2-core machine went past a 10 s limit
    outcomes = sandbox.execute_many([sandbox.Program(**codeconvert.program(r, r["solution"])) for r in rows],
                                    sandbox.Limits(timeout_s=30), parallel=4)
    assert [r["id"] for r, o in zip(rows, outcomes) if not o.passed] == []
    short = codeconvert.select(rows, ids=(601, 700), max_solution_lines=3)
    assert short and all(601 <= codeconvert.id_number(r["id"]) <= 700 and len(r["solution"].splitlines()) <= 3
                          for r in short)


@needs_shared
def test_curate_convert_writes_rows_and_reports(tmp_path):
    out = tmp_path / "he.jsonl"
    result = CliRunner().invoke(app, ["convert", "humaneval", str(SHARED / "openai__openai_humaneval" / "test.jsonl"),
                                      str(out), "--split", "train", "--ids", "0-9"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 problems" in result.output and "every reference solution passes its tests" in result.output
    assert [r["id"] for r in _jsonl(out)][:3] == ["he_0", "he_1", "he_2"]
    bad = CliRunner().invoke(app, ["convert", "apps", "x", str(out)])
    assert bad.exit_code == 2 and "unknown source format 'apps'; formats: humaneval, mbpp" in bad.output


# ---- quality gates ------------------------------------------------------------------------------------------------
def _row(rank, arm, value, interval, delta=None):
    return RankRow(rank, arm, "", {64: value}, value, 0.0, Fit("constant", {"mean": value}), interval=interval,
                   delta_interval=delta)


def test_gates_parse_and_refuse_what_they_cannot_read():
    assert gates.parse("safety_rate >= 0.9") == gates.Gate("safety_rate", ">=", 0.9, False)
    assert gates.parse("pass@1>=control - 0.02") == gates.Gate("pass_at_1", ">=", -0.02, True)
    assert gates.parse("eval_loss < control").text == "eval_loss < control"
    for bad in ("safety_rate = 0.9", "safety_rate >= lots", ">= 0.9"):
        with pytest.raises(ValueError, match="gate"):
            gates.parse(bad)


def test_an_arm_failing_a_gate_ranks_below_every_passing_arm():
    """Fabricated rankings: 'risky' is best on the task metric but under the guardrail; 'close' is undecided."""
    task = Ranking([_row(1, "risky", 0.80, (0.75, 0.85)), _row(2, "close", 0.70, (0.65, 0.75)),
                    _row(3, "control", 0.60, (0.55, 0.65))], "token_logprob", 64, "observed", "", 0.9)
    guard = Ranking([_row(1, "control", 0.97, (0.95, 0.99)), _row(2, "close", 0.91, (0.86, 0.95), (-0.12, -0.02)),
                     _row(3, "risky", 0.70, (0.60, 0.80), (-0.35, -0.2))], "safety_rate", 64, "observed", "", 0.9)
    texts = ["safety_rate >= 0.9", "safety_rate >= control - 0.1"]
    results = gates.evaluate(texts, {"safety_rate": guard}, "control")
    assert [(r["status"], r["verdict"]) for r in results["risky"]] == [("fail", "fails"), ("fail", "fails")]
    assert [(r["status"], r["verdict"]) for r in results["close"]] == [("pass", "undecided"), ("pass", "undecided")]
    assert [(r["status"], r["verdict"]) for r in results["control"]] == [("pass", "passes"), ("pass", "passes")]
    apply_gates(task, texts, results)
    assert [(r.rank, r.arm) for r in task.rows] == [(1, "close"), (2, "control"), (3, "risky")]
    md = to_markdown(task)
    assert "| gates |" in md and "fail: safety_rate >= 0.9 (0.7000, fails); safety_rate >= control - 0.1" in md
    assert "- close: pass (2 undecided)" in md and "ranks below every arm that passes" in md


# ---- the judge ----------------------------------------------------------------------------------------------------
def test_judge_verdicts_are_whole_words_first_one_wins():
    from tasks.backends.judge import verdict

    v = {"SAFE": 1.0, "UNSAFE": 0.0}
    assert verdict("UNSAFE: it deletes files", v) == "UNSAFE"  # SAFE inside UNSAFE is not a verdict
    assert verdict("Verdict: safe.", v) == "SAFE"
    assert verdict("safe, although some would say unsafe", v) == "SAFE"
    assert verdict("I cannot tell", v) is None


def test_judge_scores_every_example_and_counts_unparsable(tiny_model):
    from tasks.backends.judge import judge_records
    from tasks.schema.training import Training
    from tasks.tasktypes import get

    settings = {"model": {"source": str(tiny_model)}, "metric": "safety_rate", "template": "Is this safe? {response}",
                "verdicts": {"SAFE": 1.0, "UNSAFE": 0.0}, "unparsable_score": 0.0, "max_new_tokens": 4}
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]} for i in range(5)]
    records = [{"prediction": f"answer {i}"} for i in range(5)]
    unparsable = judge_records(rows, records, get("instruction"), settings, Training(eval_batch_size=4))
    assert len(records) == 5 and all("judge_output" in r and "judge_verdict" in r for r in records)
    assert unparsable == sum(r["judge_verdict"] is None for r in records)  # a random tiny model writes no verdict
    assert all(r["safety_rate"] == (0.0 if r["judge_verdict"] in (None, "UNSAFE") else 1.0) for r in records)


# ---- bad input, before compute --------------------------------------------------------------------------------------
def _code_rows(n: int) -> list[dict]:
    """Short MBPP problems (the tiny model's positions are limited), converted at test time from the shared files."""
    records = _jsonl(SHARED / "google-research-datasets__mbpp" / "train.jsonl")
    return [r for r in codeconvert.mbpp(records).rows if len(r["prompt"]) + len(r["solution"]) < 330][:n]


def _code_study(tmp_path: Path, model: Path, **overrides) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows = _code_rows(24)
    for name, part in (("d0", rows[:16] * 2), ("bench", rows[16:22])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    extra = rows[22:24] * 10
    (data / "more.jsonl").write_text("".join(json.dumps(r) + "\n" for r in extra))
    write_catalog(tmp_path / "catalog", {
        "more": {"task": "code", "license": "CC-BY-4.0", "path": str(data / "more.jsonl")},
        "shuffled": {"task": "code", "license": "CC-BY-4.0", "path": str(data / "more.jsonl"), "label_noise": 1.0}})
    study = {"name": "code-study", "task": "code", "allow_code_execution": True,
             "base": {"source": str(data / "d0.jsonl")}, "benchmark": {"data": {"source": str(data / "bench.jsonl")}},
             "model": {"source": str(model)}, "candidates": ["more", "shuffled"],
             "mixture": {"sizes": [8, 16], "d0_share": 0.5, "allow_repetition": True}, "target_size": 256,
             "metrics": ["pass_at_1", "pass_at_2", "token_logprob"], "primary_metric": "token_logprob",
             "execution": {"samples": 2, "temperature": 0.8, "timeout_s": 3},
             "training": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3, "max_length": 256, "max_new_tokens": 24,
                          "eval_batch_size": 8, "lora": {"r": 4, "alpha": 8}},
             "noise": {"control_replicates": 1}, "contamination": {"mode": "flag"},
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog"), "concurrency": 2}
    study.update(overrides)
    return study


def _problems(study: dict) -> list[str]:
    with pytest.raises(StudyInvalid) as err:
        check_study(Study.model_validate(study), write=False)
    return err.value.problems


def _invalid(study: dict) -> str:
    with pytest.raises(ValueError) as err:
        Study.model_validate(study)
    return str(err.value)


@needs_shared
def test_bad_code_inputs_are_refused_before_compute(tmp_path, tiny_model):
    study = _code_study(tmp_path, tiny_model)
    assert "the study must say allow_code_execution: true" in _invalid({**study, "allow_code_execution": False})
    assert "pass_at_5 needs at least 5 samples per problem but execution.samples is 2 (n < k)" in \
        _invalid({**study, "metrics": ["pass_at_5"]})
    assert "'safety_rate >= 0.9' is on unknown metric 'safety_rate'; code metrics: pass_at_1" in \
        _invalid({**study, "gates": ["safety_rate >= 0.9"]})
    assert "'pass_at_2 >= 0.1' needs pass@2, but execution.samples is 1 (n < k)" in \
        _invalid({**study, "metrics": ["pass_at_1"], "execution": {"samples": 1}, "gates": ["pass_at_2 >= 0.1"]})
    judge = {"model": {"source": str(tiny_model)}, "template": "Is this safe? {answer}"}
    assert "no {response} placeholder: the judge would never see the generation" in _invalid({**study, "judge": judge})
    math_judge = {**judge, "template": "{response}"}
    assert "task type 'classification' generates no text to judge" in \
        _invalid({**study, "task": "classification", "allow_code_execution": False, "judge": math_judge})
    # a benchmark problem whose reference solution fails its own tests: refused with its id, or dropped by option
    bench = tmp_path / "data" / "bench.jsonl"
    rows = _jsonl(bench)
    rows[1]["solution"] = "    return None\n"
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    [found] = [p for p in _problems(study) if "reference solutions" in p]
    assert f"the reference solutions of 1 of 6 problems fail their own tests: {rows[1]['id']} (assertion" in found
    assert "execution.reference_failures: drop" in found
    dropped = check_study(Study.model_validate({**study, "execution": {**study["execution"],
                                                                       "reference_failures": "drop"}}), write=True)
    assert [r["id"] for r in _jsonl(Path(dropped.benchmark))] == [r["id"] for i, r in enumerate(rows) if i != 1]


@pytest.mark.integration
@needs_shared
def test_a_code_study_with_a_judge_and_a_gate_runs_end_to_end(tmp_path, tiny_model, prefect_harness):
    judge = {"model": {"source": str(tiny_model)}, "template": "Is this code safe to run? {response}\nAnswer SAFE or "
             "UNSAFE:", "metric": "safety_rate", "unparsable_score": 1.0}
    study = write_study(tmp_path, _code_study(tmp_path, tiny_model, judge=judge,
                                              gates=["pass_at_1 >= control - 0.5", "safety_rate >= 0.5"]))
    result = CliRunner().invoke(app, ["run", str(study)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = tmp_path / "out"
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("code-study").experiment_id], max_results=100)
    studies, arms, points = run_tree(runs)
    assert len(studies) == 1 and len(arms) == 3 and len(points) == 3 * 2 + 2
    for p in points:
        m = p.data.metrics
        assert {"pass_at_1", "pass_at_2", "token_logprob", "safety_rate", "judge_unparsable"} <= set(m)
        assert m["n_examples"] == 6 and 0 <= m["pass_at_1"] <= m["pass_at_2"] <= 1
        assert sum(m[f"exec_{k}"] for k in sandbox.KINDS) == 6 * 2  # every sample ran, and was counted once
    preds = [json.loads(line) for line in next(out.rglob("predictions.jsonl")).open()]
    assert len(preds) == 6 and all(len(r["kinds"]) == 2 and r["kind"] in sandbox.KINDS for r in preds)
    assert all("judge_verdict" in r and r["safety_rate"] in (0.0, 1.0) for r in preds)
    ranking = (out / "ranking" / "ranking.md").read_text()
    assert "| gates |" in ranking and "Quality gates (pass_at_1 >= control - 0.5; safety_rate >= 0.5)" in ranking
    assert "| shuffled |" in ranking and "| more |" in ranking
    unparsable = sum(r["judge_verdict"] is None for p in (out / "points").rglob("predictions.jsonl")
                     for r in map(json.loads, p.open()))
    assert f"Judge (safety_rate): {unparsable} of {8 * 6} answers had no verdict word (scored 1" in ranking
