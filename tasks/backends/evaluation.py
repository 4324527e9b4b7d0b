"""Score one adapter on the benchmark, in a worker process. The task type decides what is asked (tasks.tasktypes)
and the Scorer answers (tasks.backends.scorer); the base model is loaded once per worker and each point's adapter is
merged into it and taken out again."""

import time
from pathlib import Path

import torch

from tasks import tasktypes
from tasks.backends import judge, models
from tasks.backends.data import read_jsonl, write_jsonl
from tasks.backends.scorer import Scorer, load_model
from tasks.schema.training import Training

_BASE: dict[tuple, dict] = {}  # (model folder, trust_remote_code) -> the worker's base model, tokenizer, saved weights
_REFERENCE: dict[tuple, list] = {}  # (model, benchmark file and its mtime, task, preset) -> the base model's records


def _base(model_dir: str, trust_remote_code: bool) -> dict:
    key = (str(model_dir), trust_remote_code)
    if key not in _BASE:
        model, tokenizer = load_model(model_dir, trust_remote_code)
        _BASE.clear()  # one base model per worker
        _BASE[key] = {"model": model, "tokenizer": tokenizer, "saved": {}}
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
