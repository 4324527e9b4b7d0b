"""Greedy decoding for evaluation, faster than transformers' generate() on a CPU and with the same tokens.

generate() decodes every row of a batch until its last row ends, and grows its KV cache by concatenation (a copy of
the whole cache at every token). Here a row leaves the batch as soon as it has ended (EOS, a stop string, the token
budget), and the cache appends into a buffer with room to grow. Every step runs the same forward pass generate()
runs (inputs, mask, positions, cache) for the rows still writing; a row's numbers do not depend on which other rows
share its batch (checked bit for bit, bf16 included), so each row gets the tokens generate() gives it.
"""

import torch
from transformers import DynamicCache, StoppingCriteria
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """A KV cache layer that appends each token into a buffer with room to grow, and keeps the keys in the dtype
    attention reads them in under autocast (RoPE leaves them float32, so SDPA cast every layer's whole key cache at
    every step). The same values reach attention over the same length, so the outputs are the same."""

    def update(self, keys: torch.Tensor, values: torch.Tensor, *args, **kwargs):
        kind = values.device.type
        if torch.is_autocast_enabled(kind) and values.dtype == torch.get_autocast_dtype(kind):
            keys = keys.to(values.dtype)  # the cast SDPA does under autocast, done once per token
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
            self.keys, self.values, self.view = keys[:, :, :0], values[:, :, :0], None
        new, length = keys.shape[-2], self.keys.shape[-2]
        if self.keys is not self.view or length + new > self.room:  # first token, rows selected or reordered, full
            self.room = 2 * (length + new) + 64
            self.kbuf = keys.new_empty(*keys.shape[:2], self.room, keys.shape[-1])
            self.vbuf = values.new_empty(*values.shape[:2], self.room, values.shape[-1])
            self.kbuf[:, :, :length], self.vbuf[:, :, :length] = self.keys, self.values
        self.kbuf[:, :, length:length + new], self.vbuf[:, :, length:length + new] = keys, values
        self.keys, self.values = self.kbuf[:, :, :length + new], self.vbuf[:, :, :length + new]
        self.view = self.keys
        return self.keys, self.values


def new_cache(model) -> DynamicCache:
    """An empty KV cache of GrowingLayers for the model."""
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


class Until(StoppingCriteria):
    """For generate(): ends a row once its decoded continuation holds one of `strings`, and the batch once every row
    has. Decoded text, not tokens, decides, so the text before the string is exactly what a full-length generation
    writes (the rows that go on are computed as before; the ended ones only get padding)."""

    def __init__(self, tokenizer, strings: list[str], start: int):
        self.tokenizer, self.strings, self.start = tokenizer, strings, start

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.strings) for t in texts], device=input_ids.device)


@torch.no_grad()
def greedy(model, tokenizer, enc: dict, max_new_tokens: int, criteria: list) -> list[list[int]]:
    """The greedy continuation (token ids) of each row of `enc` (generate()'s inputs: input_ids, attention_mask, and
    optionally a cache already holding the first tokens). A row ends at EOS, when one of generate()'s stopping
    `criteria` (called on the rows' whole sequences, prompt included) says so, or after max_new_tokens; an ended row
    leaves the batch."""
    seqs, mask, cache = enc["input_ids"], enc.get("attention_mask"), enc.get("cache") or new_cache(model)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0) if mask is not None else torch.arange(seqs.shape[1])[None]
    if mask is not None and bool((mask == 1).all()):
        mask = None  # as generate(): no padding, no mask
    done = cache.get_seq_length()
    step, pos = seqs[:, done:], pos[:, done:].expand(len(seqs), -1)
    rows, out = torch.arange(len(seqs)), [[] for _ in seqs]
    for _ in range(max_new_tokens):
        logits = model(input_ids=step, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                       logits_to_keep=1).logits
        tokens = logits[:, -1].float().argmax(-1)
        seqs = torch.cat([seqs, tokens[:, None]], 1)
        for row, token in zip(rows.tolist(), tokens.tolist()):
            out[row].append(token)
        ended = tokens == tokenizer.eos_token_id
        for criterion in criteria:
            ended |= criterion(seqs, None)
        if bool(ended.all()):
            break
        if bool(ended.any()):
            keep = (~ended).nonzero()[:, 0]
            cache.batch_select_indices(keep)
            mask, pos, rows, seqs, tokens = (mask[keep] if mask is not None else None), pos[keep], rows[keep], \
                seqs[keep], tokens[keep]
        step, pos = tokens[:, None], pos[:, -1:] + 1
        if mask is not None:
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], 1)
    return out
