"""Training and scoring on the tiny fixture model: the KV-cache label scorer equals the naive one;
an adapter trains, saves and loads; extractive QA is scored end to end."""

import json

import pytest
import torch

from conftest import FIXTURES
from tasks.backends.data import load_split, normalize, write_jsonl
from tasks.backends.evaluation import load_adapted, score_adapter
from tasks.backends.scorer import continuation_logprobs
from tasks.schema.sources import DataRef
from tasks.schema.training import Training
from tasks.backends.training import train_adapter


def _naive(model, tok, prompt, cont):
    """log p(cont + EOS | prompt) from one full forward pass, no cache."""
    p = tok(prompt, add_special_tokens=False).input_ids
    c = tok(cont, add_special_tokens=False).input_ids + [tok.eos_token_id]
    logits = model(torch.tensor([p + c])).logits[0].float().log_softmax(-1)
    return sum(logits[len(p) - 1 + i, t].item() for i, t in enumerate(c))


def test_cached_continuation_scores_equal_naive_scores(tiny_model):
    model, tok = load_adapted(str(tiny_model), None)
    prompts = ["Text: a dull film\nLabel:", "Text: what a wonderful and moving story this was\nLabel:"]
    options = [[" negative", " positive", " World Sports"], [" positive", " x"]]
    with torch.no_grad():
        got = continuation_logprobs(model, tok, tok(prompts, add_special_tokens=False).input_ids, options)
        for p, opts, scores in zip(prompts, options, got):
            for c, (s, n) in zip(opts, scores):
                assert s == pytest.approx(_naive(model, tok, p, c), abs=1e-4)
                assert n == len(tok(c, add_special_tokens=False).input_ids) + 1


def test_train_adapter_saves_loadable_adapter(tiny_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    rows = [{"text": json.loads(x)["sentence"], "label": ["negative", "positive"][json.loads(x)["label"]]}
            for x in open(FIXTURES / "d0.jsonl")][:24]
    write_jsonl(rows, tmp_path / "mix.jsonl")
    preset = Training(epochs=1, batch_size=8, learning_rate=1e-3, max_length=48, lora={"r": 4, "alpha": 8})
    out = train_adapter(str(tmp_path / "mix.jsonl"), str(tiny_model), preset, "classification",
                        {"labels": ["negative", "positive"]}, 0, str(tmp_path))
    assert out["train_steps"] == 3 and out["train_tokens"] > 0 and out["quantized_4bit"] is False
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), out["adapter_dir"])
    assert any("lora_A" in n for n, _ in model.named_parameters())
    bench = [{"text": json.loads(x)["sentence"], "label": ["negative", "positive"][json.loads(x)["label"]]}
             for x in open(FIXTURES / "benchmark.jsonl")]
    write_jsonl(bench, tmp_path / "bench.jsonl")
    scored = score_adapter(str(tiny_model), out["adapter_dir"], str(tmp_path / "bench.jsonl"), "classification",
                           {"labels": ["negative", "positive"]}, preset, str(tmp_path))
    assert scored["metrics"]["n_examples"] == 40 and 0 <= scored["metrics"]["accuracy"] <= 1
    assert len(open(scored["predictions"]).readlines()) == 40


def test_extractive_qa_scored_end_to_end(tiny_model, tmp_path):
    ref = DataRef(source=str(FIXTURES / "qa.jsonl"))
    write_jsonl(normalize(load_split(ref), "extractive_qa", ref, "qa"), tmp_path / "qa.jsonl")
    preset = Training(max_length=64, eval_batch_size=16, max_new_tokens=4)
    out = score_adapter(str(tiny_model), None, str(tmp_path / "qa.jsonl"), "extractive_qa", {}, preset, str(tmp_path))
    m = out["metrics"]
    assert m["n_examples"] == 40 and 0 <= m["exact_match"] <= m["f1"] <= 1 and m["gold_logprob"] < 0 < m["eval_loss"]
    preds = [json.loads(x) for x in open(out["predictions"])]
    assert len(preds) == 40 and preds[0]["gold"] == ["wonderful"] and isinstance(preds[0]["prediction"], str)
