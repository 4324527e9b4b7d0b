"""Few-shot exemplars: k solved rows drawn once (with the study seed) from a named split, shown before every benchmark
question, and never trained on — removed from D0 and from every candidate whatever the contamination mode."""

import numpy as np

from tasks import tasktypes
from tasks.core import contamination
from tasks.schema.study import Study


def draw(study: Study, load, problems: list[str]) -> list[dict]:
    """The study's exemplars ([] when fewshot.k is 0 or a problem was reported); load(ref, origin) reads a split."""
    k, ref = study.fewshot.k, study.fewshot.data
    if not k:
        return []
    kind = tasktypes.get(study.task)
    if not kind.fewshot:
        problems.append(f"fewshot: task type '{study.task}' has no few-shot evaluation; set fewshot.k: 0 "
                        f"(task types with it: {', '.join(n for n in tasktypes.names() if tasktypes.get(n).fewshot)})")
        return []
    rows = load(ref, f"fewshot.data ({ref.source} [{ref.split}])")
    if rows is None:
        return []
    if k > len(rows):
        problems.append(f"fewshot.k: {k} exemplars asked for, but split '{ref.split}' of {ref.source} has "
                        f"{len(rows)} rows; lower k or use a larger split")
        return []
    pick = np.random.default_rng([study.seed, 31]).choice(len(rows), k, replace=False)
    return [rows[int(i)] for i in sorted(pick)]


def index(exemplars: list[dict], task: str, n: int) -> contamination.BenchmarkIndex | None:
    if not exemplars:
        return None
    return contamination.BenchmarkIndex([tasktypes.get(task).text(r) for r in exemplars], n=n)


def drop(rows: list[dict], shots: contamination.BenchmarkIndex | None, task: str) -> tuple[list[dict], int]:
    """Rows without copies (exact or near) of an exemplar, and how many were removed."""
    if shots is None:
        return rows, 0
    hits, _, _ = contamination.scan([tasktypes.get(task).text(r) for r in rows], shots)
    gone = set(hits)
    return [r for i, r in enumerate(rows) if i not in gone], len(gone)


def check(training: dict[str, list[dict]], exemplars: list[dict], task: str) -> None:
    """The guarantee, checked where the training files are written: no exemplar text in any training source."""
    kind = tasktypes.get(task)
    texts = {contamination.words(kind.text(r)) for r in exemplars}
    for name, rows in training.items():
        leaked = [r for r in rows if contamination.words(kind.text(r)) in texts]
        if leaked:
            raise RuntimeError(f"few-shot exemplar found in the training rows of '{name}': {kind.text(leaked[0])[:80]!r}")
