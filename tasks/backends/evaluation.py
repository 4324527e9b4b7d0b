"""Score one adapter on the benchmark, in a worker process. The task type decides what is asked (tasks.tasktypes);
the Scorer answers fast: the base model is loaded once per worker and each point's adapter is merged into it and
taken out again; rows are batched by length (little padding, as lm-evaluation-harness does); the prompt prefix all
rows share runs once and its KV cache is reused; label log-likelihoods copy the prompt's KV cache per option."""

import copy
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from tasks import tasktypes
from tasks.backends import judge, models
from tasks.backends.data import read_jsonl, write_jsonl
from tasks.spec.training import Training

_BASE: dict[tuple, dict] = {}  # (model folder, trust_remote_code) -> the worker's base model, tokenizer, saved weights
_REFERENCE: dict[tuple, list] = {}  # (model, benchmark file and its mtime, task, preset) -> the base model's records


def _base(model_dir: str, trust_remote_code: bool) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = (str(model_dir), trust_remote_code)
    if key not in _BASE:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
        tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
        tokenizer.padding_side = "left"
        _BASE.clear()  # one base model per worker
        _BASE[key] = {"model": model.to(device).eval(), "tokenizer": tokenizer, "saved": {}}
    return _BASE[key]


def load_adapted(model_dir: str, adapter_dir: str | None, trust_remote_code: bool = False):
    """The worker's base model with the adapter merged into its weights (faster forward passes) and its tokenizer;
    adapter_dir=None scores the base model. Call unload_adapter() before the next adapter."""
    from peft import PeftConfig, PeftModel

    base = _base(model_dir, trust_remote_code)
    unload_adapter(base["model"])
    if not adapter_dir:
        return base["model"], base["tokenizer"]
    targets = set(PeftConfig.from_pretrained(adapter_dir).target_modules)
    for name, module in base["model"].named_modules():  # keep the weights the merge will change (not the whole model)
        # peft's rule: a target is a module name or its last parts ('q_proj'; 'all-linear' is saved as full names)
        if any(name == t or name.endswith("." + t) for t in targets) and name not in base["saved"]:
            base["saved"][name] = module.weight.detach().clone()
    merged = PeftModel.from_pretrained(base["model"], adapter_dir).merge_and_unload()
    base["dirty"] = True
    return merged.eval(), base["tokenizer"]


def unload_adapter(model) -> None:
    """Put the base weights back after a merged adapter."""
    base = next((b for b in _BASE.values() if b["model"] is model), None)
    if base is None or not base.pop("dirty", False):
        return
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, weight in base["saved"].items():
            modules[name].weight.copy_(weight)


class Scorer:
    """What a task type's `predict` asks of a model: log-likelihoods of given continuations, and greedy generations."""

    def __init__(self, model, tokenizer, preset: Training, bf16: bool, reference: list | None = None):
        self.model, self.tokenizer, self.preset = model, tokenizer, preset
        self.reference = reference  # the base model's records on the same rows (task types with needs_reference)
        self.max_length, self.batch_size = preset.max_length, preset.eval_batch_size
        self.autocast = torch.autocast(model.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False).input_ids

    def _by_length(self, ids: list[list[int]]):
        """Batches of row indices of similar length, longest first (a memory problem shows at once)."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        return (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))

    @torch.no_grad()
    def logprobs(self, prompts: list[str], options: list[list[str]]) -> list[list[tuple[float, int]]]:
        """For each prompt, (sum log p, n tokens) of each of its continuations followed by EOS."""
        ids = self._ids(prompts)
        shared = _common_prefix(ids)
        prefix = None
        with self.autocast:
            if shared:
                prefix = self.model(input_ids=torch.tensor([ids[0][:shared]], device=self.model.device),
                                    use_cache=True).past_key_values
            out: list = [None] * len(ids)
            for batch in self._by_length(ids):
                scored = continuation_logprobs(self.model, self.tokenizer, [ids[i][shared:] for i in batch],
                                               [options[i] for i in batch], prefix, shared)
                for i, s in zip(batch, scored):
                    out[i] = s
        return out

    def generate(self, prompts: list[str]) -> list[str]:
        """Greedy continuations (max_new_tokens of the study), decoded without special tokens."""
        return [texts[0] for texts in self.samples(prompts)]

    @torch.no_grad()
    def samples(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                stop: list[str] | None = None, seed: int = 0) -> list[list[str]]:
        """n continuations per prompt: greedy when temperature is 0 (n must be 1), else sampled (seeded, so a point
        always draws the same samples). A row stops early at any of the `stop` strings (they stay in the text)."""
        if n > 1 and not temperature:
            raise ValueError("n > 1 samples need a temperature > 0 (greedy decoding gives one answer)")
        ids = self._ids(prompts)
        out: list = [None] * len(ids)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature else {"do_sample": False}
        extra = {"stop_strings": stop, "tokenizer": self.tokenizer} if stop else {}
        torch.manual_seed(seed)
        with self.autocast:
            for batch in self._by_length(ids):
                enc = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(self.model.device)
                gen = self.model.generate(**enc, max_new_tokens=self.preset.max_new_tokens, num_return_sequences=n,
                                          pad_token_id=self.tokenizer.pad_token_id,
                                          eos_token_id=self.tokenizer.eos_token_id, **sampling, **extra)
                texts = self.tokenizer.batch_decode(gen[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
                for k, i in enumerate(batch):
                    out[i] = texts[k * n:(k + 1) * n]
        return out


def _common_prefix(ids: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving at least one token of each prompt to run per row."""
    if not ids:
        return 0
    first, n = ids[0], min(len(x) for x in ids) - 1
    for x in ids[1:]:
        n = next((k for k in range(n) if x[k] != first[k]), n)
    return max(n, 0)


def continuation_logprobs(model, tokenizer, prompts: list[list[int]], options: list[list[str]], prefix=None,
                          prefix_len: int = 0) -> list[list[tuple[float, int]]]:
    """For each prompt (token ids, after a shared prefix whose KV cache is `prefix`), (sum log p, n tokens) of each of
    its continuations followed by EOS. The prompt runs once; its KV cache is copied per continuation, so k labels cost
    ~1 forward, not k. Prompts are left-padded; explicit positions keep every row's positions as if unpadded."""
    device, n = model.device, len(prompts)
    width = max(map(len, prompts))
    input_ids = torch.full((n, width), tokenizer.pad_token_id, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    pos = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    if prefix is not None:
        cache = copy.deepcopy(prefix)
        cache.reorder_cache(torch.zeros(n, dtype=torch.long, device=device))
        mask = torch.cat([torch.ones((n, prefix_len), dtype=torch.long, device=device), mask], 1)
    # the last position's logits only; as an index tensor the slice is a contiguous copy, so the LM head is one matrix
    # product (an int slice made it a batched product over a copy of the head per row: 7 % of all scoring time)
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=torch.tensor([width - 1], device=device))
    first = torch.log_softmax(out.logits[:, -1].float(), -1)
    owner = [b for b, opts in enumerate(options) for _ in opts]
    seqs = [tokenizer(c, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for opts in options for c in opts]
    idx = torch.tensor(owner, device=device)
    cwidth = max(map(len, seqs))
    cont = torch.full((len(seqs), cwidth), tokenizer.pad_token_id, device=device)
    valid = torch.zeros((len(seqs), cwidth), dtype=torch.bool, device=device)
    for i, s in enumerate(seqs):
        cont[i, :len(s)], valid[i, :len(s)] = torch.tensor(s), True
    logp = torch.zeros((len(seqs), cwidth), device=device)
    logp[:, 0] = first[idx, cont[:, 0]]
    if cwidth > 1:
        cache = out.past_key_values
        cache.reorder_cache(idx)
        full_mask = torch.cat([mask[idx], valid[:, :-1].long()], dim=1)
        cpos = pos[idx, -1:] + 1 + torch.arange(cwidth - 1, device=device)
        rest = model(input_ids=cont[:, :-1], attention_mask=full_mask, position_ids=cpos, past_key_values=cache).logits
        logp[:, 1:] = torch.log_softmax(rest.float(), -1).gather(-1, cont[:, 1:, None])[..., 0]
    sums, counts = (logp * valid).sum(1).tolist(), valid.sum(1).tolist()
    result, k = [], 0
    for opts in options:
        result.append(list(zip(sums[k:k + len(opts)], counts[k:k + len(opts)])))
        k += len(opts)
    return result


def score_adapter(model_dir: str, adapter_dir: str | None, benchmark_path: str, task: str, context: dict,
                  preset: Training, out_dir: str, trust_remote_code: bool = False) -> dict:
    """Evaluate one adapter; write predictions.jsonl and return the metrics (denominators checked)."""
    start = time.perf_counter()
    kind = tasktypes.get(task)
    rows = read_jsonl(Path(benchmark_path))
    bf16 = models.use_bf16(preset.bf16)
    reference = None
    if kind.needs_reference:  # the base model's own scores, once per worker and benchmark
        key = (model_dir, benchmark_path, Path(benchmark_path).stat().st_mtime_ns, task, preset.model_dump_json())
        if key not in _REFERENCE:
            base, tokenizer = load_adapted(model_dir, None, trust_remote_code)
            _REFERENCE.clear()
            _REFERENCE[key] = kind.predict(rows, context, Scorer(base, tokenizer, preset, bf16))
        reference = _REFERENCE[key]
    model, tokenizer = load_adapted(model_dir, adapter_dir, trust_remote_code)
    try:
        preds = kind.predict(rows, context, Scorer(model, tokenizer, preset, bf16, reference))
    finally:
        unload_adapter(model)
    unparsable = judge.judge_records(rows, preds, kind, context["judge"], preset) if context.get("judge") else None
    metrics = kind.aggregate(preds, context)
    if unparsable is not None:
        metrics["judge_unparsable"] = unparsable
    if metrics["n_examples"] != len(rows):
        raise RuntimeError(f"scored {metrics['n_examples']} of {len(rows)} benchmark examples")
    path = Path(out_dir) / "predictions.jsonl"
    write_jsonl(preds, path)
    return {"metrics": metrics, "predictions": str(path), "eval_seconds": time.perf_counter() - start}
