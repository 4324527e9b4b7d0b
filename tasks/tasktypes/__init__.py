"""The task-type registry: task name -> TaskType. The only place that knows which task types exist.

Adding a task type: one module defining a TaskType subclass as `TASK`, named in the tuple at the bottom (or, outside
this package, in $CURATE_TASK_TYPES: comma-separated module names, imported by every process, workers included),
its tests, and a catalog/study example.
"""

import importlib
import os

from tasks.errors import WorkbenchError
from tasks.tasktypes.base import TaskType

_TYPES: dict[str, TaskType] = {}


def register(task: TaskType) -> TaskType:
    """Make a task type available to studies and catalog entries by its name."""
    if not task.name or task.primary not in task.metrics:
        raise ValueError(f"task type {task!r}: needs a name and a primary metric among its metrics")
    _TYPES[task.name] = task
    return task


def get(name: str) -> TaskType:
    try:
        return _TYPES[name]
    except KeyError:
        raise WorkbenchError(f"unknown task type '{name}'; task types: {', '.join(names())}") from None


def names() -> list[str]:
    return sorted(_TYPES)


from tasks.tasktypes import classification, code, extractive_qa, instruction, math, preference  # noqa: E402  (they import the base class above)

for _module in (classification, code, extractive_qa, instruction, math, preference):
    register(_module.TASK)
for _name in filter(None, (n.strip() for n in os.environ.get("CURATE_TASK_TYPES", "").split(","))):
    register(importlib.import_module(_name).TASK)
