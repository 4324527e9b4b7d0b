"""The failure-review interchange format: `sft_candidates.jsonl`, one record per benchmark failure, as benchmark
harnesses write it. `corrected_response: null` means "needs human input" (not missing); statuses move
needs_review -> approved | discarded | model_rejected."""

from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Status = Literal["needs_review", "approved", "discarded", "model_rejected"]
STATUSES = ("needs_review", "approved", "discarded", "model_rejected")
ROLES = ("system", "user")


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user"]
    content: str


class SftCandidate(BaseModel):
    """One record of sft_candidates.jsonl."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$", description="Letters, digits and . _ : @ + = "
                    "- (no slashes or spaces): the id is part of the review page's addresses.")
    source: str
    benchmark_run_id: str
    timestamp: str
    status: Status = "needs_review"
    prompt_messages: list[Message] = Field(min_length=1)
    model_response: str
    corrected_response: str | None = None  # null: needs human input
    quality_score: float = Field(ge=0, le=1)
    failure_reason: str
    task_id: str
    task_type: str
    task_name: str
    model_id: str
    model_name: str
    node_id: str | None = None
    gpu_id: str | None = None
    tokens_per_sec: float | None = None

    @field_validator("prompt_messages")
    @classmethod
    def _has_user(cls, messages: list[Message]) -> list[Message]:
        if not any(m.role == "user" for m in messages):
            raise ValueError("prompt_messages needs a user message")
        return messages


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
