"""Score one adapter on the benchmark: label log-likelihood (classification), greedy answers (extractive QA)."""

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tasks import models, prompts, scoring
from tasks.data import read_jsonl, write_jsonl
from tasks.study import Training


def load_adapted(model_dir: str, adapter_dir: str | None, trust_remote_code: bool = False):
    """Base model with the adapter merged in (faster forward passes); adapter_dir=None scores the base model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code).to(device)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.eval(), tokenizer


def _autocast(model, bf16: bool):
    device = model.device.type
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()


@torch.no_grad()
def continuation_logprobs(model, tokenizer, prompt_texts: list[str], options: list[list[str]]) -> list[list[tuple[float, int]]]:
    """For each prompt, (sum log p, n tokens) of each of its continuations followed by EOS.
    The prompt runs once; its KV cache is copied per continuation, so k labels cost ~1 forward, not k."""
    device = model.device
    enc = tokenizer(prompt_texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    mask = enc.attention_mask
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=enc.input_ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
    first = torch.log_softmax(out.logits[:, -1].float(), -1)
    owner = [b for b, opts in enumerate(options) for _ in opts]
    seqs = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for opts in options for c in opts]
    idx = torch.tensor(owner, device=device)
    width = max(map(len, seqs))
    cont = torch.full((len(seqs), width), tokenizer.pad_token_id, device=device)
    valid = torch.zeros((len(seqs), width), dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        cont[i, :len(s)], valid[i, :len(s)] = torch.tensor(s), True
    logp = torch.zeros((len(seqs), width), device=device)
    logp[:, 0] = first[idx, cont[:, 0]]
    if width > 1:
        cache = out.past_key_values
        cache.reorder_cache(idx)
        full_mask = torch.cat([mask[idx], valid[:, :-1].long()], dim=1)
        cpos = pos[idx, -1:] + 1 + torch.arange(width - 1, device=device)
        rest = model(input_ids=cont[:, :-1], attention_mask=full_mask, position_ids=cpos, past_key_values=cache).logits
        logp[:, 1:] = torch.log_softmax(rest.float(), -1).gather(-1, cont[:, 1:, None])[..., 0]
    sums, counts = (logp * valid).sum(1).tolist(), valid.sum(1).tolist()
    result, k = [], 0
    for opts in options:
        result.append(list(zip(sums[k:k + len(opts)], counts[k:k + len(opts)])))
        k += len(opts)
    return result


@torch.no_grad()
def generate_answers(model, tokenizer, prompt_texts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy answers, cut at the first newline."""
    enc = tokenizer(prompt_texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
    return [t.strip().split("\n")[0].strip() for t in texts]


def _batches(n: int, size: int):
    return (range(i, min(i + size, n)) for i in range(0, n, size))


def predict(model, tokenizer, rows: list[dict], task: str, labels: list[str], preset: Training, bf16: bool) -> list[dict]:
    """Per-example predictions with their scores."""
    reserve = prompts.answer_reserve(task, labels, rows, tokenizer)
    texts = [prompts.prompt(r, task, labels, tokenizer, preset.max_length, reserve) for r in rows]
    preds: list[dict] = []
    for batch in _batches(len(rows), preset.eval_batch_size):
        batch_rows, batch_texts = [rows[i] for i in batch], [texts[i] for i in batch]
        with _autocast(model, bf16):
            if task == "classification":
                opts = [[prompts.completion(task, lab) for lab in labels]] * len(batch)
                scored = continuation_logprobs(model, tokenizer, batch_texts, opts)
                preds += [scoring.classification_record(r, labels, s) for r, s in zip(batch_rows, scored)]
            else:
                opts = [[prompts.completion(task, r["answers"][0])] for r in batch_rows]
                scored = continuation_logprobs(model, tokenizer, batch_texts, opts)
                answers = generate_answers(model, tokenizer, batch_texts, preset.max_new_tokens)
                preds += [scoring.qa_record(r, a, s[0]) for r, a, s in zip(batch_rows, answers, scored)]
    return preds


def score_adapter(model_dir: str, adapter_dir: str | None, benchmark_path: str, task: str, labels: list[str],
                  preset: Training, out_dir: str, trust_remote_code: bool = False) -> dict:
    """Evaluate one adapter; write predictions.jsonl and return the metrics (denominators checked)."""
    start = time.perf_counter()
    model, tokenizer = load_adapted(model_dir, adapter_dir, trust_remote_code)
    rows = read_jsonl(Path(benchmark_path))
    preds = predict(model, tokenizer, rows, task, labels, preset, models.use_bf16(preset.bf16))
    metrics = scoring.aggregate(preds, task, labels)
    if metrics["n_examples"] != len(rows):
        raise RuntimeError(f"scored {metrics['n_examples']} of {len(rows)} benchmark examples")
    path = Path(out_dir) / "predictions.jsonl"
    write_jsonl(preds, path)
    return {"metrics": metrics, "predictions": str(path), "eval_seconds": time.perf_counter() - start}
