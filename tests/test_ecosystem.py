"""Configs from the ecosystem (issue 26): dataset entries written for axolotl and LLaMA-Factory run through
`curate validate`; their keys that mean something else are refused with what to write; trl's, axolotl's and peft's
training spellings; gradient accumulation, a scheduler with warm-up, gradient checkpointing and all-linear LoRA in a
real training run; QLoRA refused before compute without the [gpu] extra; one macro-F1."""

import json
import math

import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from cli.main import app
from conftest import FIXTURES
from tasks.schema.catalog import CatalogEntry
from tasks.schema.sources import DataRef
from tasks.schema.training import Training

CHAT = FIXTURES / "chat"


def _instruction_study(tmp_path, model, entries: dict) -> str:
    (tmp_path / "catalog").mkdir()
    for name, fields in entries.items():
        (tmp_path / "catalog" / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "task": "instruction",
                                                                           "license": "CC0-1.0", **fields}))
    study = {"name": "eco", "task": "instruction", "base": {"path": str(CHAT / "d0.jsonl"), "type": "chat_template"},
             "benchmark": {"data": {"source": str(CHAT / "benchmark.jsonl")}}, "model": {"source": str(model)},
             "candidates": list(entries), "mixture": {"sizes": [16, 32]}, "target_size": 256,
             "training": {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "lora_r": 4, "lora_alpha": 8,
                          "lr_scheduler": "cosine", "warmup_ratio": 0.1, "lora_target_modules": "all-linear"},
             "output_dir": "runs/{name}", "catalog_dir": "catalog"}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
    return str(tmp_path / "study.yaml")


def test_an_axolotl_and_a_llama_factory_entry_run_through_validate(tmp_path, tiny_model):
    rows = [json.loads(line) for line in (CHAT / "alpaca.jsonl").read_text().splitlines()]
    renamed = [{"instr": r["instruction"], "inp": r["input"], "out": r["output"]} for r in rows]
    (tmp_path / "alpaca_data.json").write_text(json.dumps(renamed, indent=2))  # one JSON array, LLaMA-Factory's way
    study = _instruction_study(tmp_path, tiny_model, {
        "axolotl-style": {"path": str(CHAT / "sharegpt.jsonl"), "type": "sharegpt"},
        "llamafactory-style": {"file_name": "alpaca_data.json", "formatting": "alpaca",  # relative to the entry file
                               "columns": {"prompt": "instr", "query": "inp", "response": "out"}}})
    (tmp_path / "catalog" / "alpaca_data.json").write_text((tmp_path / "alpaca_data.json").read_text())
    result = CliRunner().invoke(app, ["validate", study, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {a["name"]: a["rows"] for a in doc["arms"]} == {"control": 120, "axolotl-style": 100, "llamafactory-style": 100}


@pytest.mark.parametrize("fields, message", [
    ({"path": "x.jsonl", "type": "completion"}, "type: 'completion' has no equivalent here; formats read: alpaca"),
    ({"path": "x.jsonl", "data_files": ["a.json"]}, "data_files: not read here: give the file itself"),
    ({"hub_id": "org/x", "ranking": True}, "ranking: not read here: preference pairs are a study's task"),
    ({"path": "x.jsonl", "file_name": "y.json"}, "'file_name' and 'path' both name the path; give one"),
    ({"path": "x.jsonl", "formatting": "sharegpt", "tags": {"role_tag": "speaker"}}, "tags: role tags other than"),
    ({"path": "x.jsonl", "type": "sharegpt", "format": "alpaca"}, "'type' says sharegpt but 'format'"),
    ({"path": "x.jsonl", "formatting": "sharegpt", "tags": "from/value"}, "tags: a mapping of role tags"),
])
def test_their_keys_that_mean_something_else_are_refused_with_what_to_write(fields, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("'", "'")):
        CatalogEntry.model_validate({"name": "x", "task": "instruction", "license": "MIT", **fields})


def test_their_spellings_map_onto_ours():
    lf = CatalogEntry.model_validate({"name": "x", "task": "instruction", "license": "MIT", "hf_hub_url": "org/x",
                                      "formatting": "sharegpt", "columns": {"messages": "dialog", "system": "sys"},
                                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                               "assistant_tag": "assistant"}})
    assert (lf.hub_id, lf.format, lf.columns) == ("org/x", "messages", {"messages": "dialog", "system": "sys"})
    ax = DataRef.model_validate({"path": "tatsu-lab/alpaca", "type": "alpaca:chatml", "name": "main",
                                 "split": "train[:100]"})
    assert (ax.source, ax.format, ax.subset, ax.split) == ("tatsu-lab/alpaca", "alpaca", "main", "train[:100]")
    ours = DataRef.model_validate({"source": "a.jsonl", "columns": {"prompt": "question", "completion": "answer"}})
    assert ours.columns == {"prompt": "question", "completion": "answer"}  # our own prompt/completion keys stay


def test_training_spellings_of_trl_and_axolotl():
    t = Training.model_validate({"per_device_train_batch_size": 4, "num_train_epochs": 2, "warmup_ratio": 0.1,
                                 "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "sequence_len": 256})
    assert (t.batch_size, t.epochs, t.warmup_steps, t.max_length) == (4, 2, 0.1, 256)
    assert (t.lora.r, t.lora.alpha, t.lora.dropout) == (16, 32, 0.05)
    assert Training.model_validate({"lora": {"lora_r": 2, "target_modules": "all-linear"}}).lora.target_modules == "all-linear"
    for bad, message in [({"batch_size": 4, "micro_batch_size": 8}, "'micro_batch_size' and 'batch_size' are the same"),
                         ({"lora_r": 4, "lora": {"r": 8}}, "'lora_r' and lora.r are the same setting"),
                         ({"warmup_steps": 2.5}, "neither a whole number of steps nor a share"),
                         ({"lr_scheduler_type": "cosine_annealing"}, "Input should be 'linear', 'cosine'"),
                         ({"lora": {"target_modules": "all"}}, "all-linear"),
                         ({"gradient_accumulation_steps": 1.5}, "valid integer")]:
        with pytest.raises(ValidationError, match=message):
            Training.model_validate(bad)


@pytest.mark.integration
def test_accumulation_schedule_checkpointing_and_all_linear_in_a_real_run(tmp_path, tiny_model):
    from peft import PeftConfig

    from tasks.backends.data import write_jsonl
    from tasks.backends.training import train_adapter

    rows = [json.loads(line) for line in (FIXTURES / "d0.jsonl").read_text().splitlines()][:24]
    write_jsonl([{"text": r["sentence"], "label": ["negative", "positive"][r["label"]]} for r in rows],
                tmp_path / "mix" / "mixture.jsonl")
    preset = Training(batch_size=4, gradient_accumulation_steps=3, lr_scheduler_type="cosine", warmup_steps=0.25,
                      gradient_checkpointing=True, max_length=48, lora={"r": 4, "alpha": 8, "target_modules": "all-linear"})
    out = train_adapter(str(tmp_path / "mix" / "mixture.jsonl"), str(tiny_model), preset, "classification",
                        {"labels": ["negative", "positive"]}, 0, str(tmp_path / "mix"))
    assert out["train_steps"] == math.ceil(24 / (4 * 3)) and math.isfinite(out["train_loss"])
    adapted = {m.rsplit(".", 1)[-1] for m in PeftConfig.from_pretrained(out["adapter_dir"]).target_modules}
    assert {"q_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted and "lm_head" not in adapted
    # scoring merges the adapter into the worker's base model; every merged weight must come back for the next arm
    from tasks.backends.evaluation import load_adapted

    base, _ = load_adapted(str(tiny_model), None)
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    merged, _ = load_adapted(str(tiny_model), out["adapter_dir"])
    assert any(not (p == before[n]).all() for n, p in merged.named_parameters() if n in before)
    restored, _ = load_adapted(str(tiny_model), None)
    assert all((p == before[n]).all() for n, p in restored.named_parameters())


def test_qlora_without_bitsandbytes_is_refused_naming_the_extra(monkeypatch):
    from tasks.backends import models

    monkeypatch.setattr(models, "has_bitsandbytes", lambda: False)
    assert "pip install 'curation-workbench[gpu]'" in models.quantization_problem("4bit")
    assert models.quantization_problem("auto") is None and not models.use_4bit("none")


def test_one_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    from tasks.tasktypes.classification import TASK

    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"]
    gold, pred = rng.integers(0, 2, 50), rng.integers(0, 3, 50)  # 'c' never gold: counted, scores 0
    records = [{"gold": labels[g], "prediction": labels[p], "correct": g == p, "gold_logprob": -1.0, "gold_tokens": 1}
               for g, p in zip(gold, pred)]
    got = TASK.aggregate(records, {"labels": labels})["macro_f1"]
    assert got == pytest.approx(f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0))
