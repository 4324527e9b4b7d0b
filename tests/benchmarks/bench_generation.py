"""The generation part of `make bench` (tests/benchmarks/bench_train_eval.py): the math and code demos' evaluation
by this code and by commit d7b7149 (before issue 28), on one adapter trained on D0 rows -> seconds of generation and
of the whole evaluation per point, the speed-ups, and how many generations are identical."""

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench_common import ROOT, STUDIES, checkout, say, score
from tasks.backends import models
from tasks.backends.data import write_jsonl
from tasks.schema.training import Training

BEFORE_GEN = "d7b7149"  # the last commit before issue 28 (generation without stop strings or a prefix cache)


def demo_inputs(name: str, tmp: Path, overrides: dict) -> tuple[dict, str, dict, str]:
    """A shipped demo's validated benchmark file, context, training preset and D0 file (written under tmp)."""
    from tasks.ops.validate import check_study
    from tasks.schema.study import load_study

    study = load_study(STUDIES / f"{name}.yaml", {"output_dir": (str(tmp / name), "--out"), **overrides})
    inputs = check_study(study)
    return study.training.model_dump(mode="json"), inputs.benchmark, inputs.context, inputs.d0


def demo_adapter(model_dir, name: str, task: str, preset: dict, context: dict, d0: str, rows: int, tmp: Path) -> str:
    """An adapter trained on the demo's first D0 rows with its recipe: scored merged, as every point's is."""
    from tasks.backends.data import read_jsonl
    from tasks.backends.training import train_adapter

    path = tmp / f"{name}-d0.jsonl"
    write_jsonl(read_jsonl(Path(d0))[:rows], path)
    train_adapter(str(path), str(model_dir), Training(**preset), task, context, 0, str(tmp / f"{name}-adapter"))
    return str(tmp / f"{name}-adapter" / "adapter")


def bench_generation(model_dir, name: str, task: str, tmp: Path, points: int, overrides: dict, rows: int) -> dict:
    """One demo's evaluation (generation included) before issue 28 and now, on one adapter trained on D0 rows."""
    preset, bench, context, d0 = demo_inputs(name, tmp, overrides)
    adapter = demo_adapter(model_dir, name, task, preset, context, d0, rows, tmp)
    old = checkout(BEFORE_GEN, tmp / "before-gen")
    args = {"model": str(model_dir), "adapter": adapter, "bench": bench, "task": task, "context": context,
            "preset": preset, "points": points, "threads": 1}
    runs = {n: score(code, {**args, "out": str(tmp / f"{name}-{n}")}) for n, code in (("before", old), ("now", ROOT))}
    per_point = {k: statistics.median(v["times"]) for k, v in runs.items()}
    generating = {k: statistics.median(v["generation"]) for k, v in runs.items()}
    texts = {k: [json.loads(x)["generation"] for x in open(v["predictions"])] for k, v in runs.items()}
    result = {"n": len(texts["now"]), "per_point": per_point, "speedup": per_point["before"] / per_point["now"],
              "generating": generating, "gen_speedup": generating["before"] / generating["now"],
              "same": sum(x == y for x, y in zip(texts["before"], texts["now"])), "bf16": models.use_bf16(preset["bf16"])}
    if result["bf16"]:  # bf16 rounding depends on where a row sits in its padded batch: the old code against itself
        smaller = {**preset, "eval_batch_size": preset["eval_batch_size"] - 1}
        other = score(old, {**args, "preset": smaller, "out": str(tmp / f"{name}-before-smaller")})
        result["self_same"] = sum(x == json.loads(y)["generation"] for x, y in zip(texts["before"],
                                                                                   open(other["predictions"])))
        result["smaller"] = smaller["eval_batch_size"]
    return result


def report_generation(model_dir, args, tmp: Path) -> None:
    """The math and code demos' evaluation, before issue 28 and now ('--quick': 4 benchmark rows each)."""
    quick = {"benchmark.sample": (4, "--quick")} if args.quick else {}
    demos = [("gsm8k-demo", "math", quick)] if "gsm8k-demo" in args.demos else []
    if "code-demo" in args.demos:
        demos += code_demo(args.quick, quick)
    for name, task, overrides in demos:
        if args.fp32:
            overrides = {**overrides, "training.bf16": ("false", "--fp32")}
        rows = 8 if args.quick else 32
        g = bench_generation(model_dir, name, task, tmp, 1, overrides, rows)
        precision = "bf16 autocast" if g["bf16"] else "float32"
        say(f"generation ({name}: {g['n']} benchmark rows, an adapter trained on {rows} D0 rows, {precision}):  "
            f"generating before ({BEFORE_GEN}) {g['generating']['before']:.1f} s/point   now "
            f"{g['generating']['now']:.1f} s/point   speed-up {g['gen_speedup']:.2f}x")
        say(f"  identical generations: {g['same']}/{g['n']}" + (
            f"   (bf16: the code before against itself with eval_batch_size {g['smaller']}: {g['self_same']}/{g['n']})"
            if g["bf16"] else ""))
        say(f"  the whole evaluation (scoring + generation):  before {g['per_point']['before']:.1f} s/point   now "
            f"{g['per_point']['now']:.1f} s/point   speed-up {g['speedup']:.2f}x")


def code_demo(quick_mode: bool, overrides: dict) -> list:
    """The code demo, its MBPP and HumanEval sources converted where `make demo-code` puts them; skipped (said so)
    with --quick or without bubblewrap, which runs the generated code."""
    if quick_mode:  # the same code path as the math demo's; converting and validating MBPP takes a minute more
        say("generation (code demo): skipped with --quick")
        return []
    if not shutil.which("bwrap"):
        say("generation (code demo): skipped, bubblewrap (bwrap) is not installed")
        return []
    sources = ROOT / "runs" / "code-demo-sources"
    for name, repo, split in (("mbpp-train", "google-research-datasets/mbpp", "train"),
                              ("mbpp-test", "google-research-datasets/mbpp", "test"),
                              ("humaneval", "openai/openai_humaneval", "test")):
        if not (sources / f"{name}.jsonl").exists():
            subprocess.run([str(Path(sys.executable).parent / "curate"), "convert", name.split("-")[0], repo,
                            str(sources / f"{name}.jsonl"), "--split", split], check=True, capture_output=True)
    return [("code-demo", "code", overrides)]
