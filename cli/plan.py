"""`curate plan STUDY.yaml`: model size, FLOPs and tokens, memory per GPU, the GPU kinds that fit with time and cost,
LoRA or full fine-tune, and this machine's estimate; `curate run` and `submit` show the short form and ask first."""

import sys
from pathlib import Path

import typer

from cli import output
from cli.output import console, fail, table
from tasks.errors import WorkbenchError


def _count(n: int) -> str:
    return f"{n / 1e9:,.2f} B" if n >= 1e9 else f"{n / 1e6:,.1f} M" if n >= 1e6 else f"{n:,}"


def _gib(x: float) -> str:
    return f"{x:.1f}"


def clock(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def build(study, gpus_file: Path | None = None, parallel: int | None = None, inputs=None) -> dict:
    from tasks.core import plan as P
    from tasks.ops import plan as ops

    shape = ops.model_shape(study)
    w = ops.workload(study, parallel, inputs)
    gpus, table_ = ops.gpu_table(gpus_file or ops.GPUS)
    mfu, overhead = table_["mfu"], table_["overhead"]
    rows = P.gpu_options(shape, w, gpus, mfu, overhead, table_["load_gib_per_s"], table_["qlora_slowdown"])
    rate = ops.measured(study)
    local = ops.local_time(study, shape, w, rate, table_["local_overhead"]) if rate else None
    seen = ops.observed(study, shape, w)
    from_run = ops.local_time(study, shape, w, seen, seen["overhead_s"]) if seen else None
    return {"study": study, "shape": shape, "w": w, "rows": rows, "best": P.cheapest(rows), "mfu": mfu,
            "overhead": overhead, "full": P.full_vs_lora(shape, w, gpus), "rate": rate, "local": local,
            "totals": P.study_time(shape, w, 1.0, 0.0), "seen": seen, "from_run": from_run}


def show(p: dict, short: bool = False) -> None:
    from tasks.core import plan as P

    s, w, study = p["shape"], p["w"], p["study"]
    lora, qlora = (P.memory(s, w, False, q) for q in (False, True))
    console.print(f"[bold]plan[/] {study.name}: {s.name}, {_count(s.params)} parameters (LoRA r={study.training.lora.r}: "
                  f"{_count(s.lora_params)} trainable), {w.method.upper()}; {p['totals']['points']} points "
                  f"({len(study.candidates) + 1} arms), {w.parallel} at once")
    t = p["totals"]
    console.print(f"  tokens per point: train {min(w.train_tokens):,}-{max(w.train_tokens):,}, benchmark "
                  f"{w.eval_tokens:,} scored + {w.generated_tokens:,} generated; compute: train "
                  f"{P.human_flops(t['train_flops'])}, evaluation {P.human_flops(t['eval_flops'])}", highlight=False)
    console.print(f"  memory per GPU: LoRA bf16 {_gib(sum(lora.values()))} GiB (weights {_gib(lora['weights'])}, "
                  f"activations {_gib(lora['activations'])}), QLoRA 4-bit {_gib(sum(qlora.values()))} GiB, full "
                  f"fine-tune {_gib(p['full']['need_full_gb'])} GiB", highlight=False)
    best, local = p["best"], p["local"]
    if best:
        console.print(f"  cheapest GPU that fits: {w.parallel} x {best['gpu']} ({best['setup']}): "
                      f"{clock(best['wall_h'] * 3600)} wall, {best['gpu_h']:.2f} GPU-h, ${best['cost']:.2f} "
                      f"(at {p['mfu']:.0%} MFU, {p['overhead']:.0f} s per point + loading the weights)", highlight=False)
    if local:
        console.print(f"  this machine ({p['rate']['machine']}, measured {p['rate']['measured_at']}): "
                      f"{clock(local['wall_s'])} wall, {local['parallel']} arm(s) at once", highlight=False)
    elif short and not p["from_run"]:
        console.print("  this machine: not measured (curate plan STUDY --measure)")
    if p["from_run"]:
        seen = p["seen"]
        console.print(f"  this machine at the rates of this study's last run ({seen['machine']}, "
                      f"{seen['measured_at']}, {seen['overhead_s']:.0f} s overhead per point): {clock(p['from_run']['wall_s'])} "
                      f"wall; that run took {clock(seen['actual_wall_s'])}", highlight=False)
    for note in w.notes:
        console.print(f"  note: {note}")
    if short:
        return
    rows = [{"gpu": r["gpu"], "memory GiB": f"{r['memory_gb']:.0f}", "needs GiB": f"{r['need_gb']:.1f}",
             "set-up": r["setup"], "wall": clock(r["wall_h"] * 3600) if "wall_h" in r else "-",
             "GPU-h": f"{r['gpu_h']:.2f}" if "gpu_h" in r else "-", "$/h": f"{r['price_per_hour']:.2f}",
             "cost $": f"{r['cost']:.2f}" if "cost" in r else "-"} for r in p["rows"]]
    console.print(table(rows, f"{w.parallel} GPU(s) of a kind, {p['mfu']:.0%} MFU (infra/gpus.yaml)"))
    console.print(f"recommendation: {p['full']['why']}", highlight=False)


def plan(study_path: Path = typer.Argument(..., help="Study YAML file."),
         gpus: Path = typer.Option(None, help="GPU table (default infra/gpus.yaml: memory, peak bf16 TFLOP/s, price)."),
         parallel: int = typer.Option(None, help="GPUs running arms at once (default: the study's concurrency)."),
         measure: bool = typer.Option(False, "--measure", help="First time a few LoRA steps of the study's model on "
                                      "this machine, so its estimate is from measured throughput (loads the weights)."),
         as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of text.")):
    """The plan before compute: model size (from its config, no weights), FLOPs and tokens per point, memory per
    GPU, the GPU kinds that fit with wall time and cost, LoRA vs full fine-tune, and this machine's estimate."""
    from tasks.ops import plan as ops
    from tasks.schema.study import load_study

    output.JSON["on"] = as_json
    try:
        study = load_study(study_path)
        if measure:
            rate = ops.measure(study)
            if not as_json:
                console.print(f"measured on {rate['machine']}: {rate['train_tokens_per_s']:.0f} training tokens/s "
                              f"({rate['train_flops_per_s'] / 1e9:.1f} GFLOP/s LoRA, bf16 {rate['bf16']}), "
                              f"scoring {rate['eval_flops_per_s'] / 1e9:.1f} GFLOP/s", highlight=False)
        built = build(study, gpus, parallel)
    except WorkbenchError as err:
        fail(err)
    if as_json:
        output.emit(as_document(built))
    else:
        show(built)


def as_document(p: dict) -> dict:
    """The plan as data (`curate plan --json`): the same numbers the text shows."""
    from dataclasses import asdict

    return {"ok": True, "study": p["study"].name, "model": asdict(p["shape"]), "workload": asdict(p["w"]),
            "totals": p["totals"], "gpus": p["rows"], "cheapest": p["best"], "mfu": p["mfu"],
            "overhead_s_per_point": p["overhead"], "lora_or_full": p["full"], "this_machine": p["local"],
            "this_machine_measured": p["rate"], "from_last_run": p["from_run"], "last_run": p["seen"]}


def confirm(study, yes: bool, inputs=None) -> None:
    """Before compute: the short plan; on a terminal, ask (--yes skips). Never blocks a script or CI."""
    from tasks.backends.models import local_path, resolve_model

    try:
        local = local_path(study.model.source)
        if local is not None and local.suffix == ".gguf":
            resolve_model(study.model)  # converted once into the cache (the run needs it): the plan reads that folder
        show(build(study, inputs=inputs), short=True)
    except Exception as err:  # a plan that cannot be made must not stop a valid study
        console.print(f"plan: not available ({type(err).__name__}: {err})", markup=False)
    if not yes and sys.stdin.isatty() and sys.stdout.isatty():
        typer.confirm("Start the study?", default=True, abort=True)
