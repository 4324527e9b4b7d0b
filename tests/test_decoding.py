"""Generation for evaluation (tasks.backends.scorer, tasks.backends.decoding): every way it was made faster gives the
tokens transformers' generate() gives on the whole prompts."""


def test_generation_that_stops_at_a_stop_string_gives_the_text_a_full_generation_gives(tiny_model):
    """Rows end early at the stop string (math: '\\nQuestion:'); cut there, every row's text is the full-length
    greedy generation's, in a batch where some rows stop and others run on."""
    from tasks.backends.evaluation import load_adapted
    from tasks.backends.scorer import Scorer
    from tasks.schema.training import Training

    model, tokenizer = load_adapted(str(tiny_model), None)
    scorer = Scorer(model, tokenizer, Training(max_new_tokens=24, eval_batch_size=4), bf16=False)
    prompts = [f"Question: what is {i} plus {i * 3}?\nAnswer:" for i in range(6)]
    full = scorer.generate(prompts)
    stop = next(t[4:7] for t in full if len(t) > 8)  # a string the model does write: some rows stop on it
    early = scorer.generate(prompts, stop=[stop])
    assert [t.split(stop)[0] for t in early] == [t.split(stop)[0] for t in full]
    assert sum(stop in t for t in full) >= 1 and sum(len(a) < len(b) for a, b in zip(early, full)) >= 1


def test_generation_reusing_the_shared_prefix_cache_writes_what_full_prompts_write(tiny_model):
    """Few-shot prompts share their exemplars: the Scorer encodes that prefix once and generates from a copy of its
    KV cache, rows of different lengths left-padded after it. Greedy and sampled, the texts are those generate()
    writes from the whole prompts, left-padded in front as before."""
    import torch

    from tasks.backends.evaluation import load_adapted
    from tasks.backends.scorer import Scorer, _common_prefix
    from tasks.schema.training import Training

    model, tokenizer = load_adapted(str(tiny_model), None)
    scorer = Scorer(model, tokenizer, Training(max_new_tokens=12, eval_batch_size=3), bf16=False)
    shots = "Question: what is 2 plus 2?\nAnswer: 2 + 2 = 4. The answer is 4.\n\n"
    prompts = [shots + f"Question: what is {i} plus {'1' * (i + 1)}?\nAnswer:" for i in range(5)]
    assert _common_prefix(scorer._ids(prompts)) > 10  # the case under test: a long shared prefix

    def whole(n, temperature):
        out = []
        for batch in scorer._by_length([len(x) for x in scorer._ids(prompts)]):
            enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            kw = {"do_sample": True, "temperature": temperature} if temperature else {"do_sample": False}
            gen = model.generate(**enc, max_new_tokens=12, num_return_sequences=n, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, **kw)
            texts = tokenizer.batch_decode(gen[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
            out += [(i, texts[k * n:(k + 1) * n]) for k, i in enumerate(batch)]
        return [texts for _, texts in sorted(out)]

    assert scorer.samples(prompts) == whole(1, 0.0)
    torch.manual_seed(0)
    sampled = whole(2, 0.8)
    assert scorer.samples(prompts, n=2, temperature=0.8, seed=0) == sampled


def test_a_scorer_asked_about_no_rows_answers_with_no_rows(tiny_model):
    """No prompts: no prefix to encode, nothing to score or generate (not an IndexError)."""
    from tasks.backends.evaluation import load_adapted
    from tasks.backends.scorer import Scorer
    from tasks.schema.training import Training

    model, tokenizer = load_adapted(str(tiny_model), None)
    scorer = Scorer(model, tokenizer, Training(max_new_tokens=4), bf16=False)
    assert scorer.logprobs([], []) == [] and scorer.generate([]) == []


def test_the_growing_kv_cache_decodes_what_transformers_cache_decodes_under_bf16(tiny_model):
    """Generation appends each token's keys and values into a buffer with room to grow, keys kept in bf16 under
    autocast (the cast attention makes anyway): on a merged model (frozen weights, as after peft's merge), greedy
    texts long enough to regrow the buffer are those of transformers' own cache; the weights are frozen again after."""
    import torch
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from tasks.backends.evaluation import load_adapted
    from tasks.backends.decoding import GrowingLayer
    from tasks.backends.scorer import Scorer
    from tasks.schema.training import Training

    model, tokenizer = load_adapted(str(tiny_model), None)
    model.requires_grad_(False)
    scorer = Scorer(model, tokenizer, Training(max_new_tokens=4), bf16=True)
    enc = tokenizer([f"Question: what is {i} plus 1?" for i in (1, 22, 333)], return_tensors="pt", padding=True)
    texts = []
    with torch.no_grad(), scorer.autocast():
        assert all(p.requires_grad for p in model.parameters())  # what lets autocast keep each weight's cast
        for layer in (DynamicLayer, GrowingLayer):
            cache = DynamicCache(config=model.config)
            cache.layers = [layer() for _ in cache.layers]
            gen = model.generate(**enc, cache=cache, max_new_tokens=96, min_new_tokens=96, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            texts.append(gen.tolist())
        assert cache.layers[0].keys.dtype == torch.bfloat16 and cache.layers[0].keys.shape[-2] > 96 + 8
    assert texts[0] == texts[1]
    assert not any(p.requires_grad for p in model.parameters())


def test_the_growing_kv_cache_holds_what_concatenation_holds_after_regrowth_and_reordering():
    import torch

    from tasks.backends.decoding import GrowingLayer

    layer, keys, values = GrowingLayer(), [], []
    for step, n in enumerate([5, 1, 1, 80, 1, 3]):
        k, v = torch.randn(2, 3, n, 4), torch.randn(2, 3, n, 4)
        keys.append(k), values.append(v)
        got_k, got_v = layer.update(k, v)
        assert torch.equal(got_k, torch.cat(keys, -2)) and torch.equal(got_v, torch.cat(values, -2))
        if step == 2:  # generate() with beams reorders rows by assigning new tensors: the buffer follows
            layer.keys, layer.values = layer.keys[[1, 0]], layer.values[[1, 0]]
            keys, values = [torch.cat(keys, -2)[[1, 0]]], [torch.cat(values, -2)[[1, 0]]]
    assert layer.get_seq_length() == 91


def test_greedy_decoding_that_drops_ended_rows_gives_generates_tokens_also_for_stops_across_the_prompt(tiny_model):
    """decoding.greedy takes a row out of its batch once it ended; each row's tokens are generate()'s, with EOS, a
    stop string that begins in the prompt (transformers matches stop strings on the whole sequence: the code task's
    '\\n```' after a prompt ending in a newline) and the token budget."""
    from transformers import StoppingCriteriaList, StopStringCriteria

    from tasks.backends.decoding import greedy
    from tasks.backends.evaluation import load_adapted

    model, tokenizer = load_adapted(str(tiny_model), None)
    prompts = [f"Question: what is {i} plus {'1' * (i + 1)}?\nAnswer:" for i in range(5)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    width = enc.input_ids.shape[1]

    def generated(criteria):
        gen = model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                             eos_token_id=tokenizer.eos_token_id, stopping_criteria=StoppingCriteriaList(criteria))
        return real(gen[:, width:].tolist())

    def real(rows):  # generate() pads an ended row (and this tokenizer's pad token is its EOS)
        return [[t for t in row if t not in (tokenizer.pad_token_id, tokenizer.eos_token_id)] for row in rows]

    free = generated([])
    assert real(greedy(model, tokenizer, dict(enc), 20, [])) == free
    first = tokenizer.decode(free[0][:2], skip_special_tokens=True)
    stop = ["Answer:" + first]  # spans the prompt's end and the first row's first tokens
    criteria = [StopStringCriteria(tokenizer, stop)]
    ours = real(greedy(model, tokenizer, dict(enc), 20, criteria))
    assert ours == [row[:len(r)] for row, r in zip(free, ours)] and len(ours[0]) <= 2 < len(free[0])
    assert ours == generated(criteria)
