"""What every study section shares: strict models (unknown keys and inf/nan refused) and the task-type field,
checked against the registry (tasks.tasktypes)."""

from pydantic import BaseModel, ConfigDict, Field

from tasks import tasktypes


class Strict(BaseModel):
    # inf/nan pass a float field's bounds (learning_rate: .inf > 0) and then fail every point: refuse them here
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _task_choices(schema: dict) -> None:
    schema["enum"] = tasktypes.names()  # the Prefect form shows the registered task types as a choice


def task_field(description: str):
    """A task-type name, checked against the registry (tasks.tasktypes) when a study or entry is validated."""
    return Field(description=description, json_schema_extra=_task_choices)


def check_task(name: str) -> str:
    if name not in tasktypes.names():
        raise ValueError(f"unknown task type '{name}'; task types: {', '.join(tasktypes.names())}")
    return name
