"""A study's plan before any compute: FLOPs and tokens per point, memory per GPU, the GPU kinds that fit, LoRA or
full fine-tune, wall time and cost. Pure arithmetic over a model's shape and the study's numbers; the inputs are
gathered by tasks.ops.plan. Every rule of thumb is written where it is used:

  FLOPs   forward 2N per token; backward 2N (LoRA: activation gradients only, the frozen weights get none) or 4N
          (full fine-tune: weight gradients too); DPO adds the reference model's forward (2N) on both responses.
          Scoring a token: 2N; generating one: 2N (KV cache).
  memory  weights 2 bytes/param (bf16) or ~0.56 (QLoRA NF4 with its block scales; embeddings and LM head stay bf16);
          trainable params 16 bytes each (LoRA: fp32 weight, gradient, two Adam moments; full: bf16 weight and
          gradient, fp32 master copy and two moments); activations 34 bytes per token per layer per hidden unit
          (bf16, no recomputation, fused attention: Korthikanti et al. 2022) plus fp32 logits twice (logits and
          their log-softmax); 1 GiB for the CUDA context and allocator slack. DPO runs chosen and rejected together:
          twice the sequences.
  time    FLOPs / (peak bf16 FLOP/s x MFU) per point plus a fixed per-point overhead (model load, set-up, logging);
          points spread over the GPUs that run arms at once."""

import math
from dataclasses import dataclass, field

GIB = 1024 ** 3
NF4_BYTES = 0.5625  # 4 bits + one fp32 absmax per 64 weights, double-quantized: 4.5 bits per weight
HEADROOM = 0.9  # a plan that needs over 90 % of a GPU's memory does not fit (fragmentation, spikes)


@dataclass
class ModelShape:
    name: str
    params: int
    embedding_params: int  # input embedding + untied LM head: not quantized by QLoRA
    lora_params: int  # trainable parameters of the study's LoRA adapter
    layers: int
    hidden: int
    vocab: int


@dataclass
class Gpu:
    name: str
    memory_gb: float
    bf16_tflops: float
    price_per_hour: float
    bf16: bool = True


@dataclass
class Workload:
    """What the study asks of the hardware, per point and in all."""
    method: str  # sft | dpo
    batch_size: int
    max_length: int
    train_tokens: list[int]  # per point: tokens trained on (epochs included; DPO: prompt + response, both pairs)
    eval_tokens: int  # per point: benchmark tokens scored (DPO: both responses)
    generated_tokens: int  # per point: tokens generated
    reference_tokens: int = 0  # per worker, once: the base model's scores (DPO)
    parallel: int = 1  # arms at once
    notes: list[str] = field(default_factory=list)


def train_flops(shape: ModelShape, tokens: int, method: str, full: bool) -> float:
    per_token = 2 + (4 if full else 2) + (2 if method == "dpo" else 0)
    return per_token * shape.params * tokens


def eval_flops(shape: ModelShape, w: Workload) -> float:
    return 2 * shape.params * (w.eval_tokens + w.generated_tokens)


def memory(shape: ModelShape, w: Workload, full: bool, quant4: bool) -> dict[str, float]:
    """GiB per GPU for training one point, by part."""
    body = shape.params - shape.embedding_params
    weights = (body * (NF4_BYTES if quant4 else 2) + shape.embedding_params * 2)
    trainable = 16 * (shape.params if full else shape.lora_params)
    seqs = w.batch_size * (2 if w.method == "dpo" else 1)
    tokens = seqs * w.max_length
    activations = 34 * tokens * shape.hidden * shape.layers + 2 * 4 * tokens * shape.vocab
    parts = {"weights": weights, "trainable + optimizer": trainable, "activations": activations, "overhead": GIB}
    return {k: v / GIB for k, v in parts.items()}


def fits(need_gib: float, gpu: Gpu) -> bool:
    return need_gib <= gpu.memory_gb * HEADROOM


def point_seconds(shape: ModelShape, w: Workload, tokens: int, flops_per_s: float, overhead_s: float,
                  full: bool = False) -> float:
    return (train_flops(shape, tokens, w.method, full) + eval_flops(shape, w)) / flops_per_s + overhead_s


def study_time(shape: ModelShape, w: Workload, flops_per_s: float, overhead_s: float, full: bool = False) -> dict:
    """Wall time (arms spread over `parallel` devices) and device-seconds (what a cloud bills) of the whole study."""
    per_point = [point_seconds(shape, w, t, flops_per_s, overhead_s, full) for t in w.train_tokens]
    reference = 2 * shape.params * w.reference_tokens / flops_per_s * w.parallel
    busy = sum(per_point) + reference
    return {"points": len(per_point), "device_s": busy, "wall_s": busy / max(1, w.parallel),
            "train_flops": sum(train_flops(shape, t, w.method, full) for t in w.train_tokens),
            "eval_flops": eval_flops(shape, w) * len(per_point) + 2 * shape.params * w.reference_tokens * w.parallel}


def gpu_options(shape: ModelShape, w: Workload, gpus: list[Gpu], mfu: float, overhead_s: float,
                load_gib_per_s: float, qlora_slowdown: float) -> list[dict]:
    """One row per GPU kind: the cheapest set-up that fits (LoRA in bf16, else QLoRA 4-bit, whose compute is
    qlora_slowdown times slower), its time and cost. A point's overhead is the fixed part plus loading the weights
    for training (bf16 size at load_gib_per_s)."""
    rows = []
    overhead_s += memory(shape, w, False, False)["weights"] / load_gib_per_s
    for gpu in gpus:
        lora, qlora = (sum(memory(shape, w, False, q).values()) for q in (False, True))
        setup = "LoRA bf16" if fits(lora, gpu) else "QLoRA 4-bit" if fits(qlora, gpu) else None
        row = {"gpu": gpu.name, "memory_gb": gpu.memory_gb, "need_gb": round(lora if setup != "QLoRA 4-bit" else qlora, 1),
               "setup": setup or "does not fit", "price_per_hour": gpu.price_per_hour}
        if setup:
            rate = gpu.bf16_tflops * 1e12 * mfu * (1 if gpu.bf16 else 0.5) / (qlora_slowdown if setup[0] == "Q" else 1)
            t = study_time(shape, w, rate, overhead_s)
            row.update(wall_h=t["wall_s"] / 3600, gpu_h=t["device_s"] / 3600,
                       cost=t["device_s"] / 3600 * gpu.price_per_hour)
        rows.append(row)
    return rows


def cheapest(rows: list[dict]) -> dict | None:
    fitting = [r for r in rows if "cost" in r]
    return min(fitting, key=lambda r: (r["cost"], r["wall_h"])) if fitting else None


def full_vs_lora(shape: ModelShape, w: Workload, gpus: list[Gpu]) -> dict:
    """The full fine-tune's memory, which GPUs it fits, its FLOPs against LoRA's, and the recommendation."""
    need_full = sum(memory(shape, w, True, False).values())
    fit_full = [g.name for g in gpus if fits(need_full, g)]
    ratio = train_flops(shape, 1, w.method, True) / train_flops(shape, 1, w.method, False)
    why = (f"LoRA: a study compares candidate data at small sizes; every point trains {shape.lora_params / 1e6:.2f} M "
           f"adapter parameters ({100 * shape.lora_params / shape.params:.2f} % of the model), while a full fine-tune "
           f"needs {need_full:.1f} GiB per GPU (fits: {', '.join(fit_full) or 'no single GPU in the table'}) and "
           f"{ratio:.2f}x the training FLOPs")
    return {"need_full_gb": need_full, "fits_full": fit_full, "flops_ratio": ratio, "recommend": "LoRA", "why": why}


def human_flops(x: float) -> str:
    if x <= 0:
        return "0"
    exp = min(int(math.log10(x) // 3), 6)
    return f"{x / 10 ** (3 * exp):.3g} {['', 'k', 'M', 'G', 'T', 'P', 'E'][exp]}FLOP"


def time_left(remaining: list[int], seconds: dict[int, list[float]], workers: int) -> float | None:
    """Seconds until the last of the `remaining` points (their sizes) ends on `workers` workers, from the seconds
    finished points took at each size (a size not measured yet: the nearest measured size, scaled by rows when it is
    larger). The points are placed largest first on the worker that frees up first, as the flow runs them, so the
    estimate ends with the last, possibly lone point, not with an average rate. None before any point finished."""
    measured = {s: sum(v) / len(v) for s, v in seconds.items() if v}
    if not measured:
        return None
    if not remaining:
        return 0.0

    def cost(size: int) -> float:
        if size in measured:
            return measured[size]
        near = min(measured, key=lambda m: (abs(m - size), -m))
        return measured[near] * max(1.0, size / near)

    free = [0.0] * max(1, workers)
    for size in sorted(remaining, reverse=True):
        i = free.index(min(free))
        free[i] += cost(size)
    return max(free)


def busy_share(spans: list[tuple[float, float]], workers: int) -> dict | None:
    """How busy the workers were while points ran: spans are the (start, end) seconds of the points trained; the
    share is their summed time over workers x (first start to last end). None without a point."""
    spans = [(a, b) for a, b in spans if b >= a]
    if not spans:
        return None
    wall = max(b for _, b in spans) - min(a for a, _ in spans)
    busy = sum(b - a for a, b in spans)
    return {"busy_s": busy, "wall_s": wall, "workers": workers,
            "share": busy / (workers * wall) if wall > 0 else 1.0}
