"""What a task type's `predict` asks of a model, answered fast: log-likelihoods of given continuations (rows batched
by length, as lm-evaluation-harness does; the prompt prefix all rows share runs once and its KV cache is reused;
label log-likelihoods copy the prompt's KV cache per option), greedy or sampled generations (the shared prefix's
KV cache reused the same way), and — for task types that run code — the sandbox. Also the one loader of a causal
LM and its tokenizer, for the evaluated model and the judge alike."""

import copy
from contextlib import contextmanager

import torch
from transformers import StoppingCriteriaList, StopStringCriteria

from tasks.backends import sandbox
from tasks.backends.decoding import Until, greedy, new_cache
from tasks.schema.training import Training


def load_model(folder: str, trust_remote_code: bool = False):
    """(model, tokenizer) in eval mode on the GPU when there is one (bf16 there, float32 on CPU); the tokenizer pads
    on the left with EOS when it has no pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model.to(device).eval(), tokenizer


class Scorer:
    """What a task type's `predict` asks of a model: log-likelihoods of given continuations, generations, and (for
    code) the sandbox that runs them."""

    def __init__(self, model, tokenizer, preset: Training, bf16: bool, reference: list | None = None):
        self.model, self.tokenizer, self.preset = model, tokenizer, preset
        self.reference = reference  # the base model's records on the same rows (task types with needs_reference)
        self.max_length, self.batch_size, self.bf16 = preset.max_length, preset.eval_batch_size, bf16

    @contextmanager
    def autocast(self):
        """bf16 autocast (when the study uses it) that casts each weight once per call, not at every use: autocast
        keeps the casts of parameters that require grad, and peft's merge leaves them all frozen (a decoding step
        cast all 135M weights of the demo model: 30 vs 18 s of a math point's generation, the same outputs)."""
        if not self.bf16:
            yield
            return
        frozen = [p for p in self.model.parameters() if p.dtype == torch.float32 and not p.requires_grad]
        for p in frozen:
            p.requires_grad_(True)  # only inside torch.no_grad(): no graph is built
        try:
            with torch.autocast(self.model.device.type, dtype=torch.bfloat16):
                yield
        finally:
            for p in frozen:
                p.requires_grad_(False)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False).input_ids

    def _by_length(self, lengths: list[int]):
        """Batches of row indices of similar length, longest first (a memory problem shows at once)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return (order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size))

    @torch.no_grad()
    def logprobs(self, prompts: list[str], options: list[list[str]]) -> list[list[tuple[float, int]]]:
        """For each prompt, (sum log p, n tokens) of each of its continuations followed by EOS."""
        if not prompts:
            return []
        ids = self._ids(prompts)
        shared = _common_prefix(ids)
        with self.autocast():
            prefix = self._prefix(ids[0][:shared])
            out: list = [None] * len(ids)
            # by prompt + longest continuation: a long gold solution (math, code) pads its batch's continuation pass
            longest = [max(map(len, self._ids(opts)), default=0) for opts in options]
            for batch in self._by_length([len(p) + c for p, c in zip(ids, longest)]):
                scored = continuation_logprobs(self.model, self.tokenizer, [ids[i][shared:] for i in batch],
                                               [options[i] for i in batch], prefix, shared)
                for i, s in zip(batch, scored):
                    out[i] = s
        return out

    def _prefix(self, ids: list[int]):
        """The KV cache of the token ids every prompt starts with (few-shot exemplars, instructions), computed once
        per benchmark; None when the prompts share nothing."""
        if not ids:
            return None
        return self.model(input_ids=torch.tensor([ids], device=self.model.device), use_cache=True).cache

    @staticmethod
    def execute(programs: list[dict], execution: dict) -> list:
        """Run programs (tasks.core.codeconvert.program dicts) in the sandbox under the study's execution settings."""
        return sandbox.run_problems(programs, execution)

    def generate(self, prompts: list[str], stop: list[str] | None = None) -> list[str]:
        """Greedy continuations (max_new_tokens of the study), decoded without special tokens. A row ends at the first
        of the `stop` strings (kept in its text), and a batch when all its rows ended: cut at the stop string, the
        text is the same as a full-length generation's."""
        return [texts[0] for texts in self.samples(prompts, until=stop)]

    @torch.no_grad()
    def samples(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                stop: list[str] | None = None, seed: int = 0, until: list[str] | None = None) -> list[list[str]]:
        """n continuations per prompt: greedy when temperature is 0 (n must be 1), else sampled (seeded, so a point
        always draws the same samples). A row stops early at any of the `stop` strings (transformers' stop_strings:
        the sequence, prompt included, ends with one; they stay in the text), or once its decoded text holds one of
        the `until` strings. Greedy rows leave their batch once ended (decoding.greedy); sampled ones go through
        generate(), whose random draws depend on the whole batch."""
        if n > 1 and not temperature:
            raise ValueError("n > 1 samples need a temperature > 0 (greedy decoding gives one answer)")
        if not prompts:
            return []
        ids = self._ids(prompts)
        shared = _common_prefix(ids)
        out: list = [None] * len(ids)
        torch.manual_seed(seed)
        with self.autocast():
            prefix = self._prefix(ids[0][:shared])
            for batch in self._by_length([len(x) for x in ids]):
                enc = self._with_prefix(ids, batch, shared, prefix, n)
                width = enc["input_ids"].shape[1]
                criteria = [Until(self.tokenizer, until, width)] if until else []
                criteria += [StopStringCriteria(self.tokenizer, stop)] if stop else []
                if temperature:
                    gen = self.model.generate(**enc, max_new_tokens=self.preset.max_new_tokens, do_sample=True,
                                              temperature=temperature, top_p=top_p, num_return_sequences=n,
                                              stopping_criteria=StoppingCriteriaList(criteria),
                                              pad_token_id=self.tokenizer.pad_token_id,
                                              eos_token_id=self.tokenizer.eos_token_id)
                    tokens = gen[:, width:]
                else:
                    tokens = greedy(self.model, self.tokenizer, enc, self.preset.max_new_tokens, criteria)
                texts = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
                for k, i in enumerate(batch):
                    out[i] = texts[k * n:(k + 1) * n]
        return out

    def _with_prefix(self, ids: list[list[int]], batch: list[int], shared: int, prefix, n: int) -> dict:
        """generate()'s inputs for a batch: the shared prefix, then each row's own tokens left-padded after it (the
        mask skips the padding; positions come from the mask, so every row sees the positions it would unpadded),
        with a copy of the prefix's KV cache for each of the rows x n sequences, so generate() runs only the rest."""
        enc = self.tokenizer.pad({"input_ids": [ids[i][shared:] for i in batch]}, return_tensors="pt")
        enc = enc.to(self.model.device)
        cache = new_cache(self.model)
        if prefix is None:
            return {**enc, "cache": cache}
        rows, device = len(batch), self.model.device
        head = torch.tensor([ids[batch[0]][:shared]], device=device).expand(rows, -1)
        for layer, done in zip(cache.layers, prefix.layers):
            layer.update(done.keys.expand(rows * n, -1, -1, -1), done.values.expand(rows * n, -1, -1, -1))
        return {"input_ids": torch.cat([head, enc.input_ids], 1), "cache": cache,
                "attention_mask": torch.cat([torch.ones_like(head), enc.attention_mask], 1)}


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
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
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
        cache = out.cache
        cache.reorder_cache(idx)
        full_mask = torch.cat([mask[idx], valid[:, :-1].long()], dim=1)
        cpos = pos[idx, -1:] + 1 + torch.arange(cwidth - 1, device=device)
        rest = model(input_ids=cont[:, :-1], attention_mask=full_mask, position_ids=cpos, cache=cache).logits
        logp[:, 1:] = torch.log_softmax(rest.float(), -1).gather(-1, cont[:, 1:, None])[..., 0]
    sums, counts = (logp * valid).sum(1).tolist(), valid.sum(1).tolist()
    result, k = [], 0
    for opts in options:
        result.append(list(zip(sums[k:k + len(opts)], counts[k:k + len(opts)])))
        k += len(opts)
    return result
