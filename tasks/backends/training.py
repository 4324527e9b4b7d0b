"""Train one LoRA adapter on one mixture: trl's SFTTrainer (prompt/completion, loss on the completion) or, for
preference pairs, trl's DPOTrainer (the reference model is the base: the adapter switched off)."""

import time
from pathlib import Path

import torch

from tasks import tasktypes
from tasks.backends import models
from tasks.backends.data import read_jsonl
from tasks.schema.training import Training


def labelled_positions_only() -> bool:
    """trl's fused LM head (SFT and DPO) projects only the positions that have a label on CUDA, but every position
    elsewhere (a fixed tile shape for compilers such as Neuron's). On a CPU, in eager mode, that spent 39 % of a
    classification point's training on the vocabulary projection of prompt tokens whose loss is zero (profiled:
    docs/performance.md). The positions with a label are the only ones the loss reads, so projecting just those
    gives the same loss and gradients. Returns whether trl still makes that choice where we expect it (a test pins
    it, so a trl upgrade cannot drop the speed-up silently)."""
    import trl.trainer.utils as trl_utils

    if not callable(getattr(trl_utils, "_use_triton", None)):
        return False
    trl_utils._use_triton = _labelled_only
    return True


def _labelled_only(device) -> bool:
    return True


def lora_config(preset: Training):
    from peft import LoraConfig

    return LoraConfig(r=preset.lora.r, lora_alpha=preset.lora.alpha, lora_dropout=preset.lora.dropout,
                      target_modules=preset.lora.target_modules, task_type="CAUSAL_LM")


def _common(preset: Training, seed: int, out_dir: Path, bf16: bool) -> dict:
    """The trainer arguments SFT and DPO share."""
    return dict(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=preset.batch_size,
        gradient_accumulation_steps=preset.gradient_accumulation_steps, num_train_epochs=preset.epochs,
        max_steps=preset.max_steps or -1, learning_rate=preset.learning_rate, lr_scheduler_type=preset.lr_scheduler_type,
        warmup_steps=preset.warmup_steps, seed=seed, data_seed=seed, bf16=bf16, use_cpu=not torch.cuda.is_available(),
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        dataset_num_proc=None, gradient_checkpointing=preset.gradient_checkpointing,
        # the reentrant variant needs an input that requires grad, which a frozen base with LoRA does not have
        gradient_checkpointing_kwargs={"use_reentrant": False} if preset.gradient_checkpointing else None)


def dpo_config(preset: Training, seed: int, out_dir: Path, bf16: bool):
    from trl import DPOConfig

    # the task type already fitted every prompt + response into max_length (tasks.tasktypes.preference)
    return DPOConfig(**_common(preset, seed, out_dir, bf16), beta=preset.dpo_beta, max_length=None)


def sft_config(preset: Training, seed: int, out_dir: Path, bf16: bool, assistant_only: bool = False):
    from trl import SFTConfig

    return SFTConfig(
        **_common(preset, seed, out_dir, bf16),
        # loss on the answer only: the completion of prompt/completion rows, or the assistant turns of conversations
        # whose chat template marks them (tasks.tasktypes.instruction)
        completion_only_loss=not assistant_only, assistant_only_loss=assistant_only,
        # the rows of a batch run as one sequence, no padding (1.45x the tokens/s of padded batches on a CPU, the
        # same loss: tests/benchmarks); the task type already fitted every prompt + answer into max_length.
        # Conversations are cut by trl at max_length, which padding-free batches do not enforce: padded there
        padding_free=not assistant_only, max_length=preset.max_length if assistant_only else None)


def train_adapter(mixture_path: str, model_dir: str, preset: Training, task: str, context: dict,
                  seed: int, out_dir: str, trust_remote_code: bool = False) -> dict:
    """Fine-tune a LoRA adapter; save it under out_dir/adapter and return the training numbers."""
    from datasets import Dataset
    from peft import prepare_model_for_kbit_training
    from transformers import PrinterCallback
    from trl import DPOTrainer, SFTTrainer

    out = Path(out_dir)
    labelled_positions_only()
    quantize, bf16 = models.use_4bit(preset.quantization), models.use_bf16(preset.bf16)
    torch.manual_seed(seed)  # adapter init
    model, tokenizer = models.load_for_training(Path(model_dir), quantize, trust_remote_code)
    if quantize:
        model = prepare_model_for_kbit_training(model)
    kind = tasktypes.get(task)
    records = kind.pairs(read_jsonl(Path(mixture_path)), context, tokenizer, preset.max_length)
    if kind.method == "dpo":
        trainer = DPOTrainer(model=model, ref_model=None, args=dpo_config(preset, seed, out, bf16),
                             train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                             peft_config=lora_config(preset))
        data = trainer.train_dataset
        tokens_per_epoch = sum(2 * len(p) + len(c) + len(r) for p, c, r in
                               zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"]))
    else:
        trainer = SFTTrainer(model=model, args=sft_config(preset, seed, out, bf16, assistant_only="messages" in records[0]),
                             train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                             peft_config=lora_config(preset))
        tokens_per_epoch = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    trainer.remove_callback(PrinterCallback)  # it prints the final metrics dict; the flow reports each point itself
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    adapter = out / "adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    epochs = result.metrics.get("epoch", preset.epochs)
    tokens = tokens_per_epoch * epochs
    return {"adapter_dir": str(adapter), "train_loss": float(result.training_loss), "train_steps": int(result.global_step),
            "train_seconds": seconds, "train_tokens": int(tokens), "train_tokens_per_s": tokens / seconds,
            "quantized_4bit": quantize, "bf16": bf16, "notes": kind.training_notes(tokenizer)}
