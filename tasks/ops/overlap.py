"""Training rows against the benchmark and D0: contamination (removed, flagged or refused as the study says), and
the data profile of a source (rows, duplicates, labels, copies of D0, share removed)."""

from tasks import tasktypes
from tasks.core import contamination
from tasks.ops import fewshot


def decontaminate(rows, index, study, origin, problems, shots=None) -> tuple[list[dict], dict]:
    """Find training rows that copy benchmark items; remove, flag or fail as the study says. Copies of few-shot
    exemplars (shots) are removed in every mode."""
    kind = tasktypes.get(study.task)
    rows, dropped = fewshot.drop(rows, shots, study.task)
    hits, counts, examples = contamination.scan([kind.text(r) for r in rows], index)
    if not hits:
        return rows, {**counts.as_dict(), **({"fewshot_removed": dropped} if shots else {})}
    found = (f"{len(hits)} of {len(rows)} rows of {origin} match benchmark items ({counts.exact} exact, "
             f"{counts.near} near-duplicate; e.g. '{examples[0]}')")
    if len(hits) > len(rows) / 2:
        problems.append(f"contamination: {found}: more than half; is the benchmark the same split as this data?")
    elif study.contamination.mode == "fail":
        problems.append(f"contamination: {found}; contamination.mode is 'fail' (use 'remove' to drop them, "
                        f"'flag' to keep them, or pick another split)")
    elif study.contamination.mode == "remove":
        drop = set(hits)
        rows = [r for i, r in enumerate(rows) if i not in drop]
        counts.removed = len(hits)
    return rows, {**counts.as_dict(), **({"fewshot_removed": dropped} if shots else {})}


def profile(rows: list[dict], task: str, counts: dict, license: str) -> dict:
    """What a candidate holds: rows, duplicate texts, what the task type adds (labels), share removed as contamination."""
    kind = tasktypes.get(task)
    seen, dups = set(), 0
    for r in rows:
        w = contamination.words(kind.text(r))
        dups += w in seen
        seen.add(w)
    checked = counts.get("checked") or len(rows)
    return {"rows": len(rows), "duplicates": dups, **kind.profile(rows), "license": license,
            "contaminated": counts.get("exact", 0) + counts.get("near", 0), "removed": counts.get("removed", 0),
            **({"d0_copies": counts["d0_copies"]} if "d0_copies" in counts else {}),
            "removed_share": round(counts.get("removed", 0) / max(checked, 1), 4)}
