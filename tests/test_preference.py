"""Preference data and DPO: every preference form normalized to one pair, bad rows and a method that does not fit
the data refused with file:line, the implicit reward against the base model, and a DPO study through `curate run`
on the tiny model (its chosen/rejected-swapped negative control ranked below the control)."""

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, run_tree, write_catalog, write_study
from tasks.backends.data import load_split, normalize
from tasks.core.chatformats import FormatError
from tasks.errors import DataError
from tasks.schema.sources import DataRef
from tasks.tasktypes.preference import to_pair

PREF = FIXTURES / "preference"
U = {"role": "user", "content": "Is ice cold?"}
YES, NO = {"role": "assistant", "content": "Yes."}, {"role": "assistant", "content": "No."}
PAIR = {"prompt": [U], "chosen": "Yes.", "rejected": "No."}


@pytest.mark.parametrize("row", [
    {"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "No."},  # standard
    {"prompt": [U], "chosen": [YES], "rejected": [NO]},  # conversational
    {"chosen": [U, YES], "rejected": [U, NO]},  # implicit prompt: the turns both share
    {"prompt": "Is ice cold?", "chosen": [YES], "rejected": [NO]},
])
def test_each_preference_form_becomes_the_same_pair(row):
    assert to_pair(row) == PAIR


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Is ice cold?", "chosen": "Yes."}, "missing or empty 'rejected'"),
    ({"prompt": "Is ice cold?", "chosen": " ", "rejected": "No."}, "missing or empty 'chosen'"),
    ({"prompt": "Is ice cold?", "chosen": 1, "rejected": "No."}, "'chosen' must be a string or a list of turns, got int"),
    ({"prompt": "Is ice cold?", "chosen": "Yes.", "rejected": "Yes. "}, "'chosen' and 'rejected' are identical"),
    ({"chosen": [U, YES], "rejected": [{"role": "user", "content": "Is fire cold?"}, NO]},
     "prompt mismatch: 'chosen' and 'rejected' differ at turn 0"),
    ({"chosen": "Yes.", "rejected": "No."}, "missing or empty 'prompt'"),
    ({"prompt": [U], "chosen": [YES], "rejected": "No."}, "both be strings or both conversations"),
    ({"prompt": [U], "chosen": [YES], "rejected": [U]}, "'rejected' must end in a non-empty assistant turn"),
    ({"messages": [U, YES]}, "found messages rows (an SFT format), not preference pairs"),
    ({"instruction": "Is ice cold?", "output": "Yes."}, "found alpaca rows (an SFT format)"),
])
def test_bad_pairs_say_what_is_wrong(row, message):
    with pytest.raises(FormatError) as err:
        to_pair(row)
    assert message in str(err.value)


def _read(path, task="preference"):
    ref = DataRef(source=str(path))
    return normalize(load_split(ref), task, ref, "candidate 'x'")


def test_fixture_files_and_errors_with_file_and_line(tmp_path):
    assert _read(PREF / "d0.jsonl")[0]["prompt"][0]["role"] == "user"
    more = _read(PREF / "more.jsonl")
    assert len(more) == 80 and {r["chosen"] for r in more} == {"positive", "negative"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "a", "chosen": "b", "rejected": "c"}) + "\n"
                   + json.dumps({"prompt": "a", "chosen": "b", "rejected": "b"}) + "\n")
    with pytest.raises(DataError) as err:
        _read(bad)
    assert f"{bad}:2: 'chosen' and 'rejected' are identical" in str(err.value)


def test_a_method_that_does_not_fit_the_data_is_refused_naming_the_format_found():
    with pytest.raises(DataError) as err:  # SFT data in a preference study
        _read(FIXTURES / "chat" / "d0.jsonl")
    assert "found messages rows (an SFT format), not preference pairs" in str(err.value)
    with pytest.raises(DataError) as err:  # preference pairs in an instruction (SFT) study
        _read(PREF / "d0.jsonl", "instruction")
    assert "these are preference pairs (prompt/chosen/rejected): train them with task: preference" in str(err.value)
    with pytest.raises(DataError) as err:  # ... and in a classification study
        ref = DataRef(source=str(PREF / "d0.jsonl"))
        normalize(load_split(ref), "classification", ref, "D0")
    assert "missing column 'text'" in str(err.value) and "train them with task: preference" in str(err.value)


def test_training_method_must_fit_the_task(tmp_path, tiny_model):
    from tasks.schema.yamlfile import load_model_file
    from tasks.errors import StudyInvalid
    from tasks.schema.study import Study

    study = _study(tmp_path, tiny_model, task="instruction")
    study["training"]["method"] = "dpo"
    with pytest.raises(StudyInvalid) as err:
        load_model_file(Study, write_study(tmp_path, study))
    assert "training.method: dpo does not fit task instruction: set task: preference" in str(err.value)


def _study(tmp_path, tiny_model, **overrides):
    write_catalog(tmp_path / "catalog", {
        name: {"task": "preference", "license": "CC0-1.0", "path": str(PREF / f"{name}.jsonl")}
        for name in ("more", "swapped")})
    study = {"name": "pref-study", "task": "preference", "base": {"source": str(PREF / "d0.jsonl")},
             "benchmark": {"data": {"source": str(PREF / "benchmark.jsonl")}}, "model": {"source": str(tiny_model)},
             "candidates": ["more", "swapped"], "mixture": {"sizes": [16, 48], "d0_share": 0.25},
             "target_size": 256, "noise": {"control_replicates": 1},
             "training": {"method": "dpo", "epochs": 3, "batch_size": 8, "learning_rate": 2e-2, "max_length": 48,
                          "eval_batch_size": 30, "lora": {"r": 4, "alpha": 8}},
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog"), "concurrency": 2}
    study.update(overrides)
    return study


def test_the_base_model_is_its_own_reference_and_dpo_moves_the_reward(tmp_path, tiny_model):
    from tasks.backends.evaluation import score_adapter
    from tasks.backends.training import train_adapter
    from tasks.schema.training import Training
    from tasks.backends.data import write_jsonl

    preset = Training(method="dpo", epochs=4, batch_size=8, learning_rate=2e-2, max_length=48, eval_batch_size=30,
                      max_new_tokens=4, lora={"r": 4, "alpha": 8})
    bench = tmp_path / "bench.jsonl"
    write_jsonl(_read(PREF / "benchmark.jsonl"), bench)
    context = {"beta": 0.1}
    base = score_adapter(str(tiny_model), None, str(bench), "preference", context, preset, str(tmp_path / "base"))
    assert base["metrics"]["reward_margin"] == 0 and base["metrics"]["reward_accuracy"] == 0.5  # no adapter: r = 0
    mixture = tmp_path / "train.jsonl"
    write_jsonl(_read(PREF / "d0.jsonl"), mixture)
    trained = train_adapter(str(mixture), str(tiny_model), preset, "preference", context, 0, str(tmp_path / "point"))
    assert trained["train_steps"] == 4 * 8 and trained["train_tokens"] > 0  # 4 epochs of ceil(60 / 8) steps
    scored = score_adapter(str(tiny_model), trained["adapter_dir"], str(bench), "preference",
                           {**context, "generate": ["token_f1"]}, preset, str(tmp_path / "point"))
    # the benchmark's pairs follow D0's rule (the right sentiment word): DPO on D0 prefers their chosen responses
    assert scored["metrics"]["reward_accuracy"] > 0.8 and scored["metrics"]["reward_margin"] > 0
    preds = [json.loads(line) for line in open(scored["predictions"])]
    assert len(preds) == 30 and all(abs(p["reward_margin"] - (p["reward_chosen"] - p["reward_rejected"])) < 1e-6
                                    for p in preds)
    # the generated-answer metric beside the reward: a greedy answer scored against the chosen response
    assert 0 <= scored["metrics"]["token_f1"] <= 1 and all("prediction" in p and "token_f1" in p for p in preds)


@pytest.mark.integration
def test_a_dpo_study_with_successive_halving_prunes_the_swapped_pairs(tmp_path, tiny_model, prefect_harness):
    """DPO end to end with ranking.prune_after: 1: after size 16 the swapped arm (the negative control) is
    significantly worse than the leader, trains no larger size, and ranks last, marked with its interval."""
    study = _study(tmp_path, tiny_model, ranking={"prune_after": 1})
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("pref-study").experiment_id], max_results=100)
    studies, arms, points = run_tree(runs)
    sizes = {a: sorted(int(p.data.params["size"]) for p in points if p.data.tags["curate.arm"] == a)
             for a in ("control", "more", "swapped")}
    assert sizes == {"control": [16, 16, 48, 48], "more": [16, 48], "swapped": [16]}  # pruned: no size 48
    for p in points:
        assert {"reward_margin", "reward_accuracy", "gold_logprob", "eval_loss"} <= set(p.data.metrics)
        assert p.data.metrics["n_examples"] == 30
    swapped = next(a for a in arms if a.data.tags["curate.arm"] == "swapped")
    assert swapped.data.tags["curate.pruned_at"] == "16" and swapped.data.metrics["pruned_delta_hi"] < 0
    assert studies[0].data.metrics["points_pruned"] == 1 and studies[0].data.metrics["points_trained"] == 7
    ranking = (tmp_path / "out" / "ranking" / "ranking.md").read_text()
    table = ranking.split("\n\n")[1].splitlines()  # the ranking table, best arm first
    column = [c.strip() for c in table[0].split("|")].index("arm")
    order = [[c.strip() for c in line.split("|")][column] for line in table[2:]]
    assert order[-1] == "swapped" and sorted(order) == ["control", "more", "swapped"], ranking
    assert "pruned at 16: " in table[-1] and "Successive halving after size 16: 1 arm(s) pruned (swapped)" in ranking
