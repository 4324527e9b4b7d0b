"""Failure mining and import for the review loop: a finished study's per-example predictions (read from MLflow) ->
sft_candidates.jsonl records of the failed or low-scoring examples; files written by other harnesses validated per
line. The review store (tasks.backends.reviewstore) keeps them."""

import json
import socket
from pathlib import Path

from pydantic import ValidationError

from tasks import tasktypes
from tasks.backends import tracking
from tasks.core.sftrecords import SftCandidate, now
from tasks.errors import WorkbenchError

FILE = "sft_candidates.jsonl"


def _point(uri: str, study_run_id: str, arm: str | None, size: int | None, seed: int | None):
    """The chosen point run: of `arm` (default: the ranking's best arm, else the control), at `size` (default: the
    largest measured) and `seed` (default: the first)."""
    study = tracking.get_run(uri, study_run_id)
    arms = {a.data.tags.get(tracking.ARM, a.info.run_name): a for a in tracking.children(uri, study_run_id)}
    name = arm or study.data.tags.get(tracking.BEST_ARM) or "control"
    if name not in arms:
        raise WorkbenchError(f"study run {study_run_id} has no arm '{name}'; arms: {', '.join(sorted(arms))}")
    points = tracking.children(uri, arms[name].info.run_id, finished_only=True)
    if not points:
        raise WorkbenchError(f"arm '{name}' of study run {study_run_id} has no finished point")
    sizes = sorted({int(p.data.params["size"]) for p in points})
    size = size or sizes[-1]
    chosen = sorted((p for p in points if int(p.data.params["size"]) == size), key=lambda p: int(p.data.params["seed"]))
    chosen = [p for p in chosen if seed is None or int(p.data.params["seed"]) == seed]
    if not chosen:
        raise WorkbenchError(f"arm '{name}' has no finished point at size {size}{f' seed {seed}' if seed is not None else ''}; "
                             f"sizes: {sizes}")
    return study, name, chosen[0]


def mine(uri: str, study_run_id: str, arm: str | None = None, below: float = 0.5, size: int | None = None,
         seed: int | None = None) -> tuple[list[SftCandidate], int]:
    """Records for every benchmark example of the chosen point whose quality score is below `below`, and how many
    examples were scored."""
    study_run, name, point = _point(uri, study_run_id, arm, size, seed)
    spec = tracking.study_from_params(dict(study_run.data.params))
    context = tracking.task_context(uri, study_run_id, study_run.data.params.get(tracking.CONTEXT, "{}"))
    kind = tasktypes.get(spec.task)
    records = tracking.read_predictions(uri, point.info.run_id)
    rows = tracking.read_predictions(uri, study_run_id, "benchmark.jsonl")
    if records is None or rows is None:
        raise WorkbenchError(f"study run {study_run_id}: {'predictions' if records is None else 'benchmark.jsonl'} "
                             f"missing (studies run before failure mining logged their benchmark: run it again)")
    if len(rows) != len(records):
        raise WorkbenchError(f"point {point.info.run_id}: {len(records)} predictions for {len(rows)} benchmark rows")
    out, at, host = [], now(), socket.gethostname()
    where = f"{name}, size {point.data.params['size']}, seed {point.data.params['seed']}"
    for i, (row, rec) in enumerate(zip(rows, records)):
        seen = kind.review(row, rec, context)
        if seen["quality_score"] >= below:
            continue
        task_id = str(row.get("id", f"example-{i}"))
        reason = seen["failure_reason"] + (f"; judge: {rec['judge_verdict'] or 'no verdict'}" if "judge_verdict" in rec else "")
        out.append(SftCandidate(
            id=f"{study_run_id[:12]}-{name}-n{point.data.params['size']}-s{point.data.params['seed']}-{task_id}",
            source=f"curation-workbench failure mining ({where})", benchmark_run_id=study_run_id, timestamp=at,
            prompt_messages=seen["prompt_messages"], model_response=seen["model_response"],
            quality_score=seen["quality_score"], failure_reason=reason, task_id=task_id, task_type=spec.task,
            task_name=spec.name, model_id=spec.model.source, model_name=Path(spec.model.source).name.removesuffix(".gguf"),
            node_id=host))
    return out, len(rows)


def write(records: list[SftCandidate], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r.model_dump_json() + "\n" for r in records))
    tmp.replace(path)


def read(path: Path) -> list[SftCandidate]:
    """A sft_candidates.jsonl file, or a folder holding one (searched recursively), every line validated; all bad
    lines are reported at once (file:line, field, what is wrong) and nothing is returned then."""
    files = sorted(path.rglob(FILE)) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise WorkbenchError(f"{path}: no {FILE} {'under this folder' if path.is_dir() else 'file'}")
    records, problems = [], []
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = SftCandidate.model_validate_json(line)
                if record.status != "needs_review":  # a file cannot approve its own corrections
                    problems.append(f"{f}:{n}: status: '{record.status}': imported records enter as needs_review "
                                    f"and are approved on the review page; drop the field or set needs_review")
                records.append(record)
            except ValidationError as err:
                for e in err.errors():
                    field = ".".join(map(str, e["loc"])) or "(record)"
                    problems.append(f"{f}:{n}: {field}: {e['msg']}")
    if problems:
        raise WorkbenchError(f"{len(problems)} problem(s), nothing imported:\n  - " + "\n  - ".join(problems[:20]))
    return records


def export(records: list[dict], out: Path, name: str, catalog_dir: Path, license_: str) -> dict:
    """Approved records with a non-null correction -> {"messages": [system?, user, assistant]} rows and a catalog
    entry (task instruction, format messages). The entry's version goes up when the exported content changed and
    stays when it did not; its description says where the rows came from."""
    import yaml

    from tasks.common import fingerprint
    from tasks.schema.catalog import CatalogEntry

    chosen = [r for r in sorted(records, key=lambda r: r["id"]) if r["status"] == "approved" and r["corrected_response"]]
    rows = [{"messages": [*r["prompt_messages"], {"role": "assistant", "content": r["corrected_response"]}]}
            for r in chosen]
    if not rows:
        raise WorkbenchError("no approved record with a correction to export (approve some in `curate review serve`)")
    out = out.resolve()
    entry_path = Path(catalog_dir) / f"{name}.yaml"
    old = yaml.safe_load(entry_path.read_text()) if entry_path.exists() else None
    old_rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else None
    same = old is not None and old_rows is not None and fingerprint(old_rows) == fingerprint(rows)
    version = (old or {}).get("version", 0) + (0 if same else 1)
    runs = sorted({r["benchmark_run_id"] for r in records})
    entry = CatalogEntry(name=name, version=version, task="instruction", format="messages", license=license_,
                         path=str(out), size_hint=len(rows),
                         description=f"{len(rows)} benchmark failures corrected by reviewers (failure-review export; "
                                     f"mined from benchmark run(s) {', '.join(runs)})")
    if not same:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        tmp.replace(out)
        entry_path.parent.mkdir(parents=True, exist_ok=True)
        entry_path.write_text(yaml.safe_dump(entry.model_dump(mode="json", exclude_defaults=True) | {"version": version},
                                             sort_keys=False))
    return {"rows": len(rows), "entry": str(entry_path), "version": version,
            "benchmarks": sorted({r["task_name"] for r in chosen}),
            "change": "unchanged" if same else "new" if old is None else "content changed"}
