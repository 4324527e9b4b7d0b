"""How every point is trained: the LoRA shape and the trainer settings, with trl's / peft's names. The spellings
of axolotl and trl (`lora_r`, `micro_batch_size`, `num_train_epochs`, `warmup_ratio`, ...) are read as the same
fields; giving one field under two names is an error."""

from typing import Literal

from pydantic import Field, model_validator

from tasks.schema.base import Strict

SCHEDULERS = Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                     "inverse_sqrt"]
LORA_ALIASES = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_target_modules": "target_modules"}
TRAINING_ALIASES = {"per_device_train_batch_size": "batch_size", "micro_batch_size": "batch_size",
                    "num_train_epochs": "epochs", "num_epochs": "epochs", "sequence_len": "max_length",
                    "lr_scheduler": "lr_scheduler_type", "warmup_ratio": "warmup_steps",
                    "per_device_eval_batch_size": "eval_batch_size"}


def renamed(data, aliases: dict[str, str], where: str):
    """Other tools' spellings -> ours; both spellings of one field is an error naming them."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for alias, field in aliases.items():
        if alias in out:
            if field in out:
                raise ValueError(f"{where}: '{alias}' and '{field}' are the same setting; give one")
            out[field] = out.pop(alias)
    return out


class Lora(Strict):
    """LoRA adapter shape (peft.LoraConfig). Also read: lora_r, lora_alpha, lora_dropout, lora_target_modules."""

    r: int = Field(8, gt=0, le=4096, description="Adapter rank (lora_r).")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input (lora_dropout).")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], description="Module names to adapt, e.g. [q_proj, v_proj], or "
        "'all-linear' (peft: every linear layer but the output head).")

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data):
        return renamed(data, LORA_ALIASES, "training.lora")


class Training(Strict):
    """The training preset: the same for every point of the study."""

    method: Literal["auto", "sft", "dpo"] = Field("auto", description="'sft': supervised fine-tuning on the answer; "
                                                  "'dpo': direct preference optimization on prompt/chosen/rejected "
                                                  "pairs (task: preference); 'auto': the task type's method.")
    dpo_beta: float = Field(0.1, gt=0, description="DPO only: the KL strength beta, also the scale of the implicit "
                            "reward the benchmark reports.")

    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over each mixture (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Fixed number of optimizer steps per point.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: SCHEDULERS = Field("linear", description="How the learning rate moves after warm-up "
                                          "(transformers' schedulers; axolotl: lr_scheduler).")
    warmup_steps: float = Field(0, ge=0, description="Steps of linear warm-up from 0 to learning_rate: a whole "
                                "number of steps, or a share of all steps when below 1 (warmup_ratio).")
    batch_size: int = Field(8, gt=0, le=65536, description="Examples per forward pass (per_device_train_batch_size, "
                            "micro_batch_size); an optimizer step sees batch_size x gradient_accumulation_steps.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=4096, description="Forward passes per optimizer step.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                         "memory for longer sequences or larger models, about a third more compute.")
    max_length: int = Field(128, ge=16, le=131072, description="Tokens per example; the input text is shortened to fit, "
                            "the answer is never cut.")
    lora: Lora = Field(default_factory=Lora, description="LoRA adapter settings.")
    quantization: Literal["auto", "none", "4bit"] = Field("auto", description="'auto': QLoRA 4-bit when CUDA "
                                                          "and bitsandbytes (the [gpu] extra) are available, full "
                                                          "precision otherwise; '4bit' without them is refused.")
    bf16: Literal["auto", "true", "false"] = Field("auto", description="bf16 autocast: 'auto' uses it on CUDA "
                                                   "and on CPUs with native bf16 (avx512_bf16/AMX).")
    threads: int = Field(1, gt=0, le=1024, description="CPU threads per worker (torch.set_num_threads).")
    eval_batch_size: int = Field(16, gt=0, le=65536, description="Benchmark examples per forward pass.")
    max_new_tokens: int = Field(32, gt=0, le=32768, description="Generation budget (extractive QA answers, generated-answer "
                                "metrics of instruction studies).")

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data):
        data = renamed(data, TRAINING_ALIASES, "training")
        lora = {k: data.pop(k) for k in list(LORA_ALIASES) if isinstance(data, dict) and k in data}
        if lora:  # axolotl puts lora_r & co. beside the trainer settings
            inner = dict(data.get("lora") or {})
            for alias, value in lora.items():
                if alias in inner or LORA_ALIASES[alias] in inner:
                    raise ValueError(f"training: '{alias}' and lora.{LORA_ALIASES[alias]} are the same setting; give one")
                inner[alias] = value
            data["lora"] = inner
        return data

    @model_validator(mode="after")
    def _warmup(self):
        if self.warmup_steps >= 1 and self.warmup_steps != int(self.warmup_steps):
            raise ValueError(f"training.warmup_steps: {self.warmup_steps} is neither a whole number of steps nor a "
                             "share of the steps below 1")
        return self

    @property
    def step_batch(self) -> int:
        """Examples per optimizer step."""
        return self.batch_size * self.gradient_accumulation_steps
