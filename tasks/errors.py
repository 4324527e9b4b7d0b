"""Errors a user can act on. Each message names the file, line, field or value and the valid choices."""


class WorkbenchError(Exception):
    """A problem with the user's input, reported before any compute."""


class DataError(WorkbenchError):
    """A dataset could not be read or does not fit the task."""


class StudyInvalid(WorkbenchError):
    """One or more problems with a study, its catalog, data or model, collected and raised at once."""

    def __init__(self, problems: list[str], source: str = "study"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem(s):\n{lines}")


class SandboxUnavailable(WorkbenchError):
    """The configured code executor cannot run on this machine (tasks.backends.sandbox)."""
