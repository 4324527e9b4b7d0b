"""Gather what a plan needs without loading weights: the model's shape from its config (instantiated on the meta
device), token counts of the study's data with its tokenizer, the GPU table (infra/gpus.yaml), and this machine's
measured throughput (`curate plan --measure`, kept in the cache). The arithmetic is tasks.core.plan."""

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

from tasks import tasktypes
from tasks.common import cache_dir
from tasks.core import plan as P
from tasks.errors import WorkbenchError
from tasks.schema.study import Study

ROOT = Path(__file__).resolve().parents[2]
GPUS = ROOT / "infra" / "gpus.yaml"
KNOWN = ROOT / "infra" / "model-configs"  # configs of common Hub models, for planning offline
SAMPLE = 500  # rows per source tokenized for the token counts


def _local_model(study: Study) -> Path | None:
    """The model's local file or folder; a GGUF file is converted now into the cache, where the study reads it from
    (reading the GGUF itself parses its whole vocabulary, ~12 s for a 135M model, and the plan read it twice)."""
    from tasks.backends.models import local_path, resolve_model

    path = local_path(study.model.source)
    if path is not None and path.suffix == ".gguf":
        return resolve_model(study.model)
    return path


def _config(study: Study):
    from transformers import AutoConfig

    ref, trust = study.model, study.model.trust_remote_code
    path = _local_model(study)
    if path is not None:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust)
    try:
        return AutoConfig.from_pretrained(ref.source, revision=ref.revision, trust_remote_code=trust)
    except Exception as err:  # offline, gated, private: a shipped copy of the config still plans
        known = KNOWN / f"{ref.source.replace('/', '--')}.json"
        if known.exists():
            data = json.loads(known.read_text())
            return AutoConfig.for_model(data.pop("model_type"), **data)
        raise WorkbenchError(f"model.source: cannot read the config of '{ref.source}' ({type(err).__name__}); "
                             f"download it, or add its config.json as {known}") from None


def model_shape(study: Study) -> P.ModelShape:
    """Parameters counted on the meta device (no memory, no weights): total, embeddings, the study's LoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _config(study)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=study.model.trust_remote_code)
    params = sum(p.numel() for p in model.parameters())  # tied weights count once
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    embedding = emb.numel() + (head.weight.numel() if head is not None and head.weight is not emb else 0)
    lora = study.training.lora
    every = lora.target_modules == "all-linear"  # peft: every linear layer but the output head
    adapter = sum(lora.r * (m.in_features + m.out_features) for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and m is not head
                  and (every or n.rsplit(".", 1)[-1] in set(lora.target_modules)))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return P.ModelShape(name=study.model.source, params=params, embedding_params=embedding, lora_params=adapter,
                        layers=text.num_hidden_layers, hidden=text.hidden_size, vocab=text.vocab_size)


def _tokenizer(study: Study):
    from transformers import AutoTokenizer

    path = _local_model(study)
    try:
        return AutoTokenizer.from_pretrained(path or study.model.source, trust_remote_code=study.model.trust_remote_code)
    except Exception:
        return None  # counted as characters / 4 (said in the plan)


def _rows(study: Study) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """D0, the benchmark and each candidate's rows, read and checked as the study would (errors: StudyInvalid)."""
    from tasks.errors import StudyInvalid
    from tasks.schema.catalog import load_catalog
    from tasks.ops.validate import load_rows, split_benchmark

    problems: list[str] = []
    entries = load_catalog(study.catalog_dir)
    d0 = load_rows(study.base, study.task, "D0 (base)", problems)
    bench = split_benchmark(study, d0, problems)[1] if d0 is not None else None
    cands = {}
    for name in study.candidates:
        if name not in entries:
            problems.append(f"candidates: no catalog entry '{name}' in {study.catalog_dir}")
            continue
        cands[name] = load_rows(entries[name].data_ref(), study.task, f"candidate '{name}'", problems)
    if problems:
        raise StudyInvalid(problems, f"study '{study.name}'")
    return d0, bench, cands


def _prepared(inputs) -> tuple[list[dict], list[dict], dict[str, list[dict]]]:
    """The same rows from the files the CLI's validation just wrote (no second read of the sources)."""
    from tasks.backends.data import read_jsonl
    from tasks.common import CONTROL

    return (read_jsonl(Path(inputs.d0)), read_jsonl(Path(inputs.benchmark)),
            {a.name: read_jsonl(Path(a.data)) for a in inputs.arms if a.name != CONTROL and a.data})


def workload(study: Study, parallel: int | None = None, inputs=None) -> P.Workload:
    """inputs: the validated inputs when the study was just checked (`curate run`), else the sources are read."""
    kind, preset = tasktypes.get(study.task), study.training
    d0, bench, cands = _prepared(inputs) if inputs is not None else _rows(study)
    tok = _tokenizer(study)
    dpo = kind.method == "dpo"

    context = {**kind.context(d0, study.base), **kind.settings(study)}

    def count(texts: list[str]) -> np.ndarray:
        counts = [len(ids) + 1 for ids in tok(texts, add_special_tokens=False).input_ids]  # + EOS
        return np.minimum(counts, preset.max_length)

    def mean_tokens(rows: list[dict]) -> float:
        """Tokens of one row as the trainer sees it: the task type's own records, rendered with the chat template
        where it uses one (DPO: prompt + chosen and prompt + rejected, two sequences)."""
        rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))[:SAMPLE]]
        if tok is None:
            return float(np.mean([min(len(kind.text(r)) / 4, preset.max_length) for r in rows])) * (2 if dpo else 1)
        recs = kind.pairs(rows, context, tok, preset.max_length)
        if "chosen" in recs[0]:
            return float(np.mean(count([r["prompt"] + r["chosen"] for r in recs])
                                 + count([r["prompt"] + r["rejected"] for r in recs])))
        if "messages" in recs[0]:
            return float(np.mean(count([tok.apply_chat_template(r["messages"], tokenize=False) for r in recs])))
        return float(np.mean(count([r["prompt"] + r["completion"] for r in recs])))

    d0_mean = mean_tokens(d0)
    cand_mean = {name: mean_tokens(rows) for name, rows in cands.items()}
    share = study.mixture.d0_share
    train = []
    for arm in ["control", *cands]:
        per_row = d0_mean if arm == "control" else share * d0_mean + (1 - share) * cand_mean[arm]
        for size, _ in study.arm_points(arm):
            rows = preset.max_steps * preset.step_batch if preset.max_steps else size * preset.epochs
            train.append(int(rows * per_row))
    bench_mean = mean_tokens(bench)
    settings = kind.settings(study)
    generates = kind.generates and (settings.get("generate", True) or study.judge)
    gen = len(bench) * preset.max_new_tokens * (study.execution.samples if kind.runs_code else 1) if generates else 0
    notes = [] if tok else ["tokens estimated as characters / 4 (the model's tokenizer could not be loaded)"]
    return P.Workload(method=kind.method, batch_size=preset.batch_size, max_length=preset.max_length,
                      train_tokens=train, eval_tokens=int(len(bench) * bench_mean), generated_tokens=int(gen),
                      reference_tokens=int(len(bench) * bench_mean) if kind.needs_reference else 0,
                      parallel=parallel or study.concurrency, notes=notes)


def gpu_table(path: Path = GPUS) -> tuple[list[P.Gpu], dict]:
    """(GPU kinds, {mfu, point_overhead_s, local_point_overhead_s}) from the editable YAML table."""
    data = yaml.safe_load(path.read_text())
    try:
        gpus = [P.Gpu(**g) for g in data["gpus"]]
        return gpus, {"mfu": float(data.get("mfu", 0.35)), "overhead": float(data.get("point_overhead_s", 20)),
                      "load_gib_per_s": float(data.get("model_load_gib_per_s", 2.0)),
                      "qlora_slowdown": float(data.get("qlora_slowdown", 1.5)),
                      "local_overhead": float(data.get("local_point_overhead_s", 5))}
    except (KeyError, TypeError) as err:
        raise WorkbenchError(f"{path}: every GPU needs name, memory_gb, bf16_tflops, price_per_hour ({err})") from None


# ---- this machine's measured throughput -------------------------------------------------------------------------
def _machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} CPUs)"


def _store() -> Path:
    return cache_dir() / "throughput.json"


def _key(study: Study) -> str:
    t = study.training
    return (f"{_machine()}|{study.model.source}|{tasktypes.get(study.task).method}|threads={t.threads}|"
            f"batch={t.batch_size}|length={t.max_length}")


def measured(study: Study) -> dict | None:
    path = _store()
    return json.loads(path.read_text()).get(_key(study)) if path.exists() else None


def measure(study: Study, steps: int = 3) -> dict:
    """Time LoRA training steps (DPO-shaped for a DPO study) and scoring passes of the study's model at its batch
    and length on this machine's CPU: effective FLOP/s for the plan's time estimate. Weights are loaded for this (it
    is a measurement); padded, so real batches of shorter rows run at about this rate or a little below."""
    import torch
    from peft import get_peft_model

    from tasks.backends.models import load_for_training, resolve_model, use_bf16
    from tasks.backends.training import lora_config

    preset = study.training
    torch.set_num_threads(preset.threads)
    shape = model_shape(study)
    model, _ = load_for_training(resolve_model(study.model), False, study.model.trust_remote_code)
    model = get_peft_model(model, lora_config(preset))
    ids = torch.randint(0, shape.vocab, (preset.batch_size, preset.max_length), generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16(preset.bf16))

    dpo = tasktypes.get(study.task).method == "dpo"
    if dpo:  # a DPO step: the policy on chosen and rejected (twice the sequences) and the reference forward
        ids = torch.cat([ids, ids])

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
            if dpo:
                with torch.no_grad(), model.disable_adapter():
                    model(input_ids=ids)
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    train_s = (time.perf_counter() - start) / steps
    with torch.no_grad(), autocast:
        model(input_ids=ids)
        start = time.perf_counter()
        for _ in range(steps):
            model(input_ids=ids)
        eval_s = (time.perf_counter() - start) / steps
    tokens = ids.shape[0] * preset.max_length
    result = {"machine": _machine(), "model": study.model.source, "threads": preset.threads,
              "method": "dpo" if dpo else "sft",
              "train_flops_per_s": P.train_flops(shape, tokens, "dpo" if dpo else "sft", False) / train_s,
              "eval_flops_per_s": 2 * shape.params * tokens / eval_s, "train_tokens_per_s": tokens / train_s,
              "bf16": use_bf16(preset.bf16), "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    path = _store()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.exists() else {}
    data[_key(study)] = result
    path.write_text(json.dumps(data, indent=2))
    return result


def observed(study: Study, shape: P.ModelShape, w: P.Workload) -> dict | None:
    """This machine's rates from the study's own latest run in MLflow, the truest calibration (the trainer's own
    overheads, the real rows, workers sharing the machine): training FLOP/s from each point's tokens and seconds,
    scoring FLOP/s from its evaluation seconds; with the run's wall time, to compare the estimate with."""
    from tasks.backends import tracking

    uri = tracking.tracking_uri(study.output_path)
    if uri.startswith("sqlite:") and not (study.output_path / "mlflow.db").exists():
        return None
    latest = tracking.latest_study_run(uri, study.name, trained=True)
    if latest is None or latest.info.end_time is None:
        return None
    points = [p for p in tracking.read_study(uri, latest.info.run_id, examples=False)["points"] if not p["reused"]]
    points = [p["metrics"] for p in points if {"train_seconds", "eval_seconds", "train_tokens_per_s"} <= set(p["metrics"])]
    if not points:
        return None
    tokens = sum(m["train_tokens_per_s"] * m["train_seconds"] for m in points)
    wall = (latest.info.end_time - latest.info.start_time) / 1000
    busy = sum(m["train_seconds"] + m["eval_seconds"] for m in points)
    return {"machine": f"study run {latest.info.run_id[:8]}, {len(points)} points",
            # what the points' own seconds do not hold: loading, trainer set-up, logging, waiting for a worker
            "overhead_s": max(0.0, wall * min(w.parallel, os.cpu_count() or 1) - busy) / len(points),
            "measured_at": time.strftime("%Y-%m-%d %H:%M", time.localtime(latest.info.start_time / 1000)),
            "train_flops_per_s": P.train_flops(shape, int(tokens), w.method, False) / sum(m["train_seconds"] for m in points),
            "eval_flops_per_s": P.eval_flops(shape, w) * len(points) / sum(m["eval_seconds"] for m in points),
            "actual_wall_s": wall}


def local_time(study: Study, shape: P.ModelShape, w: P.Workload, rate: dict, overhead_s: float) -> dict:
    """The study on this machine with the measured rates: training and scoring at their own FLOP/s; arms at once
    limited by the cores (threads per worker)."""
    cores = max(1, (os.cpu_count() or 1) // study.training.threads)
    parallel = min(w.parallel, cores)
    per_point = [P.train_flops(shape, t, w.method, False) / rate["train_flops_per_s"]
                 + P.eval_flops(shape, w) / rate["eval_flops_per_s"] + overhead_s for t in w.train_tokens]
    busy = sum(per_point) + 2 * shape.params * w.reference_tokens / rate["eval_flops_per_s"] * parallel
    return {"wall_s": busy / parallel, "device_s": busy, "parallel": parallel}
