"""Instruction data: every chat format normalized to one form, bad rows refused with file:line, and an instruction
study through `curate run` on the tiny model (run tree, metrics, predictions, ranking, which tokens carried the loss)."""

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES, run_tree, write_catalog, write_study
from tasks.backends.data import load_split, normalize
from tasks.core import chatformats
from tasks.errors import DataError
from tasks.schema.catalog import CatalogEntry
from tasks.schema.sources import DataRef

CHAT = FIXTURES / "chat"
U, A = {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi."}


@pytest.mark.parametrize("row, fmt, expected", [
    ({"messages": [U, A]}, "messages", [U, A]),
    ({"messages": [{"role": "system", "content": "Be brief."}, U, A]}, "messages",
     [{"role": "system", "content": "Be brief."}, U, A]),
    ({"prompt": "Say hi.", "completion": "Hi."}, "prompt_completion", [U, A]),
    ({"prompt": [U], "completion": [A]}, "prompt_completion", [U, A]),  # trl's conversational prompt/completion
    ({"instruction": "Say hi.", "input": "", "output": "Hi."}, "alpaca", [U, A]),
    ({"instruction": "Translate:", "input": "bonjour", "output": "hello"}, "alpaca",
     [{"role": "user", "content": "Translate:\n\nbonjour"}, {"role": "assistant", "content": "hello"}]),
    ({"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}]}, "sharegpt", [U, A]),
    ({"conversations": [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "Hi."}], "system": "Be brief."},
     "sharegpt", [{"role": "system", "content": "Be brief."}, U, A]),
])
def test_each_format_becomes_the_same_chat_form(row, fmt, expected):
    assert chatformats.detect(row) == fmt
    assert chatformats.to_messages(row, fmt) == expected


@pytest.mark.parametrize("row, fmt, message", [
    ({"messages": [{"role": "tool", "content": "x"}, A]}, "messages", "messages[0]: unknown role 'tool'; valid: system, user, assistant"),
    ({"messages": [U]}, "messages", "ends in a 'user' turn, not an assistant turn"),
    ({"messages": [U, {"role": "assistant", "content": "  "}]}, "messages", "turn 1: empty assistant turn"),
    ({"messages": [U, {"role": "assistant", "content": 5}]}, "messages", "messages[1]: 'content' must be a string, got int"),
    ({"messages": "hi"}, "messages", "'messages' must be a non-empty list of turns, got str"),
    ({"messages": [A]}, "messages", "no user turn"),
    ({"messages": [U, {"role": "system", "content": "x"}, A]}, "messages", "a system turn after the first turn"),
    ({"prompt": "Say hi.", "completion": ""}, "prompt_completion", "empty assistant turn"),
    ({"instruction": "Say hi.", "output": ["Hi."]}, "alpaca", "'output' must be a string, got list"),
    ({"instruction": " ", "output": "Hi."}, "alpaca", "empty 'instruction'"),
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "robot", "value": "b"}]}, "sharegpt",
     "conversations[1]: unknown from 'robot'"),
])
def test_bad_rows_say_what_is_wrong(row, fmt, message):
    with pytest.raises(chatformats.FormatError, match=None) as err:
        chatformats.to_messages(row, fmt)
    assert message in str(err.value)


def _read(path, **ref):
    ref = DataRef(source=str(path), **ref)
    return normalize(load_split(ref), "instruction", ref, "candidate 'x'")


@pytest.mark.parametrize("name, fmt", [("d0", "messages"), ("alpaca", "alpaca"), ("sharegpt", "sharegpt"),
                                       ("prompt_completion", "prompt_completion")])
def test_fixture_files_are_detected_and_normalized(name, fmt):
    rows = _read(CHAT / f"{name}.jsonl")
    assert {r["format"] for r in rows} == {fmt}
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"].startswith("The ") for r in rows)


def test_mixed_formats_and_unknown_formats_are_refused_with_file_and_line(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"messages": [U, A]}) + "\n\n" + json.dumps({"instruction": "a", "output": "b"}) + "\n")
    with pytest.raises(DataError) as err:
        _read(mixed)
    assert f"candidate 'x': mixed formats in one source: {mixed}:1 is messages, {mixed}:3 is alpaca" in str(err.value)
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"question": "a", "reply": "b"}) + "\n")
    with pytest.raises(DataError) as err:
        _read(odd)
    assert f"{odd}:1: cannot tell the data format from the keys ['question', 'reply']; formats tried: messages (keys: " \
           "messages); prompt_completion (keys: completion, prompt); alpaca (keys: instruction, output)" in str(err.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"messages": [U, A]}) + "\n" for _ in range(3))
                   + json.dumps({"messages": [U, {"role": "bot", "content": "x"}]}) + "\n")
    with pytest.raises(DataError) as err:
        _read(bad, split="train[1:]")  # the slice's start is counted: the bad row is still line 4
    assert f"{bad}:4: messages row: messages[1]: unknown role 'bot'" in str(err.value)


def test_a_declared_format_and_renamed_columns(tmp_path):
    path = tmp_path / "renamed.jsonl"
    path.write_text(json.dumps({"chat": [U, A]}) + "\n")
    rows = _read(path, columns={"messages": "chat"}, format="messages")
    assert rows == [{"messages": [U, A], "format": "messages"}]
    with pytest.raises(DataError, match="declared format alpaca|alpaca row: empty 'instruction'"):
        _read(path, columns={"messages": "chat"}, format="alpaca")


def test_fields_added_later_keep_older_catalog_fingerprints():
    entry = CatalogEntry(name="x", task="instruction", license="MIT", path="x.jsonl")
    assert entry.fingerprint() != CatalogEntry(name="x", task="instruction", license="MIT", path="x.jsonl",
                                               format="alpaca").fingerprint()
    from tasks.common import fingerprint
    assert entry.fingerprint() == fingerprint(entry.model_dump(exclude={"description", "size_hint", "format", "subset",
                                                                         "drop_unusable"}))


def test_label_noise_on_an_entry_without_labels_is_refused_before_compute(tmp_path, tiny_model):
    from tasks.errors import StudyInvalid
    from tasks.schema.study import Study
    from tasks.ops.validate import check_study

    write_catalog(tmp_path / "catalog", {"noisy": {"task": "instruction", "license": "CC0-1.0", "label_noise": 0.5,
                                                   "path": str(CHAT / "alpaca.jsonl")}})
    study = {"name": "chat-study", "task": "instruction", "base": {"source": str(CHAT / "d0.jsonl")},
             "benchmark": {"data": {"source": str(CHAT / "benchmark.jsonl")}}, "model": {"source": str(tiny_model)},
             "candidates": ["noisy"], "mixture": {"sizes": [16, 32]}, "target_size": 256,
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog")}
    with pytest.raises(StudyInvalid) as err:
        check_study(Study.model_validate(study), write=False)
    assert "candidate 'noisy'" in str(err.value.problems) and \
           "label_noise: task type 'instruction' has no labels to add noise to" in str(err.value.problems)


@pytest.mark.integration
def test_an_instruction_study_with_candidates_in_three_formats(tmp_path, tiny_model, prefect_harness):
    write_catalog(tmp_path / "catalog", {
        name: {"task": "instruction", "license": "CC0-1.0", "path": str(CHAT / f"{name}.jsonl")}
        for name in ("alpaca", "sharegpt", "prompt_completion")})
    study = {"name": "chat-study", "task": "instruction", "base": {"source": str(CHAT / "d0.jsonl")},
             "benchmark": {"data": {"source": str(CHAT / "benchmark.jsonl")}}, "model": {"source": str(tiny_model)},
             "candidates": ["alpaca", "sharegpt", "prompt_completion"], "mixture": {"sizes": [16, 32]},
             "metrics": ["token_logprob", "eval_loss", "exact_match", "token_f1", "rouge_l"],
             "target_size": 256, "noise": {"control_replicates": 1},
             "training": {"epochs": 1, "batch_size": 8, "max_length": 48, "max_new_tokens": 8, "eval_batch_size": 30,
                          "lora": {"r": 4, "alpha": 8}},
             "output_dir": str(tmp_path / "out"), "catalog_dir": str(tmp_path / "catalog"), "concurrency": 2}
    result = CliRunner().invoke(app, ["run", str(write_study(tmp_path, study))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("chat-study").experiment_id], max_results=100)
    studies, arms, points = run_tree(runs)
    assert len(studies) == 1 and len(arms) == 4 and len(points) == 4 * 2 + 2
    for p in points:
        assert {"token_logprob", "eval_loss", "exact_match", "token_f1", "rouge_l"} <= set(p.data.metrics)
        assert p.data.metrics["n_examples"] == 30 and p.data.metrics["token_logprob"] < 0
        assert 0 <= p.data.metrics["rouge_l"] <= 1
        assert p.data.params["loss_on"].startswith("last assistant turn (prompt/completion, completion-only loss; "
                                                   "plain 'User:/Assistant:' turns")  # the tiny model has no template
    arm = {a.data.tags["curate.arm"]: a for a in arms}
    assert arm["sharegpt"].data.params["profile.format"] == "sharegpt"
    preds = [json.loads(line) for line in (tmp_path / "out").rglob("predictions.jsonl").__next__().read_text().splitlines()]
    assert len(preds) == 30 and {"gold", "prediction", "token_logprob", "exact_match", "rouge_l"} <= set(preds[0])
    ranking = (tmp_path / "out" / "ranking" / "ranking.md").read_text()
    assert "token_logprob" in ranking and all(f"| {n} |" in ranking for n in ("alpaca", "sharegpt", "prompt_completion"))


MARKED = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ 'Assistant: ' }}{% generation %}"
          "{{ m['content'] + eos_token }}{% endgeneration %}{{ '\\n' }}{% else %}{{ m['role'] + ': ' + m['content'] + '\\n' }}"
          "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")


def test_a_template_that_marks_assistant_tokens_trains_on_every_assistant_turn(tmp_path, tiny_model):
    import shutil

    from transformers import AutoTokenizer

    from tasks.backends.training import train_adapter
    from tasks.backends.data import write_jsonl
    from tasks.schema.training import Training
    from tasks.tasktypes import instruction

    model = tmp_path / "marked"
    shutil.copytree(tiny_model, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = MARKED
    tok.save_pretrained(model)
    assert instruction.assistant_masks(AutoTokenizer.from_pretrained(model))
    rows = _read(CHAT / "sharegpt.jsonl")[:16]
    two_turns = {"messages": [U, A, U, A], "format": "messages"}  # multi-turn rows go to trl whole
    write_jsonl(rows + [two_turns], tmp_path / "mix" / "mixture.jsonl")
    out = train_adapter(str(tmp_path / "mix" / "mixture.jsonl"), str(model), Training(max_length=48, batch_size=8,
                        lora={"r": 4, "alpha": 8}), "instruction", {}, 0, str(tmp_path / "mix"))
    assert out["notes"]["loss_on"].startswith("assistant turns") and out["train_steps"] == 3
    assert (tmp_path / "mix" / "adapter" / "adapter_config.json").exists()
