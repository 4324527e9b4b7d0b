"""Check a study against its catalog, data and model — every problem at once, before any compute —
and write the normalized data files the flow passes around by path."""

from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks import mixing
from tasks.catalog import CatalogEntry, load_catalog, unknown_candidate
from tasks.data import DataError, fingerprint, load_split, normalize, row_key, write_jsonl
from tasks.errors import StudyInvalid
from tasks.models import check_model
from tasks.study import Study

CONTROL = "control"


class Arm(BaseModel):
    """One branch of the study: a candidate (or the control) with its data file and provenance."""
    name: str
    data: str | None  # None for the control
    data_fingerprint: str | None
    license: str
    rows: int
    catalog_version: int | None = None


class Inputs(BaseModel):
    """Small references to the prepared data: what the flow hands to its tasks."""
    d0: str
    d0_fingerprint: str
    benchmark: str
    benchmark_fingerprint: str
    labels: list[str]
    arms: list[Arm]


def _load(ref, task, origin, problems) -> list[dict] | None:
    try:
        return normalize(load_split(ref), task, ref, origin)
    except DataError as err:
        problems.append(str(err))
        return None


def _with_noise(rows: list[dict], entry: CatalogEntry, labels: list[str]) -> list[dict]:
    """Replace the labels of a fixed share of rows by a different label (documented negative controls)."""
    rng = np.random.default_rng([entry.version, 7])
    noisy = rng.choice(len(rows), round(entry.label_noise * len(rows)), replace=False)
    rows = [dict(r) for r in rows]
    for i in noisy:
        others = [lab for lab in labels if lab != rows[i]["label"]]
        rows[i]["label"] = others[rng.integers(len(others))]
    return rows


def _check_labels(rows, labels, origin, problems, label_map=None):
    label_map = label_map or {}
    rows[:] = [dict(r, label=label_map.get(r["label"], r["label"])) for r in rows]
    outside = sorted({r["label"] for r in rows} - set(labels))
    if outside:
        problems.append(f"{origin}: labels outside D0's label set: {', '.join(outside)}; D0 labels: "
                        f"{', '.join(labels)} (map them with label_map in the catalog entry, or label_names)")


def _check_overlap(bench, rows, origin, problems):
    keys = {row_key(r) for r in rows}
    hits = [r for r in bench if row_key(r) in keys]
    if hits:
        problems.append(f"benchmark overlaps training data: {len(hits)} of {len(bench)} benchmark examples also appear "
                        f"in {origin} (e.g. '{row_key(hits[0])[:80]}'); remove them or pick another split")


def _check_sizes(n0: int, nk: int | None, study: Study, origin: str, problems):
    if study.mixture.allow_repetition:
        return
    size = max(study.mixture.sizes)
    need0, needk = mixing.split_counts(size, study.mixture.d0_share, nk is None)
    for have, need, what in ((n0, need0, "D0 training rows"), (nk or 0, needk, f"rows of {origin}")):
        if mixing.shortfall(have, need):
            problems.append(f"mixture.sizes: size {size} needs {need} {what} for arm '{origin}' but only {have} "
                            f"exist; lower the size, or set mixture.allow_repetition: true")


def _benchmark(study, d0, problems):
    if study.benchmark.holdout is None:
        return d0, _load(study.benchmark.data, study.task, "benchmark (benchmark.data)", problems)
    if study.benchmark.holdout >= len(d0):
        problems.append(f"benchmark.holdout: {study.benchmark.holdout} rows asked but D0 has only {len(d0)}")
        return d0, None
    order = np.random.default_rng([study.seed, 99]).permutation(len(d0))
    cut = study.benchmark.holdout
    return [d0[i] for i in order[cut:]], [d0[i] for i in order[:cut]]


def check_study(study: Study, write: bool = True) -> Inputs:
    """Validate everything and (write=True) write the normalized data under output_dir/data."""
    problems: list[str] = []
    entries: dict[str, CatalogEntry] = {}
    try:
        entries = load_catalog(study.catalog_dir)
    except StudyInvalid as err:
        problems += err.problems
    chosen = []
    for name in study.candidates:
        if name == CONTROL:
            problems.append(f"candidates: '{CONTROL}' is reserved for the D0-only arm, which always runs")
        elif entries and name not in entries:
            problems.append(f"candidates: {unknown_candidate(name, entries)}")
        elif name in entries and entries[name].task != study.task:
            problems.append(f"candidates: '{name}' is a {entries[name].task} dataset but the study task is {study.task}")
        elif name in entries:
            chosen.append(entries[name])
    d0 = _load(study.base, study.task, f"D0 (base: {study.base.source} [{study.base.split}])", problems)
    bench = None
    if d0 is not None:
        d0, bench = _benchmark(study, d0, problems)
    labels: list[str] = []
    if d0 is not None and study.task == "classification":
        labels = list(study.base.label_names or sorted({r["label"] for r in d0}))
        if bench is not None:
            _check_labels(bench, labels, "benchmark", problems)
    arms = [Arm(name=CONTROL, data=None, data_fingerprint=None, license="(your data)", rows=len(d0 or []))]
    cand_rows = {}
    for entry in chosen:
        origin = f"candidate '{entry.name}' ({entry.path or entry.hub_id} [{entry.split}])"
        rows = _load(entry.data_ref(), study.task, origin, problems)
        if rows is None:
            continue
        if study.task == "classification" and labels:  # no label set when D0 itself failed: reported already
            _check_labels(rows, labels, origin, problems, entry.label_map)
            if entry.label_noise and labels:
                rows = _with_noise(rows, entry, labels)
        cand_rows[entry.name] = rows
        if bench is not None:
            _check_overlap(bench, rows, origin, problems)
        if d0 is not None:
            _check_sizes(len(d0), len(rows), study, entry.name, problems)
    if d0 is not None:
        _check_sizes(len(d0), None, study, CONTROL, problems)
        if bench is not None:
            _check_overlap(bench, d0, "D0 (base)", problems)
    model_problem = check_model(study.model)
    if model_problem:
        problems.append(model_problem)
    if problems:
        raise StudyInvalid(problems, f"study '{study.name}'")
    return _write(study, d0, bench, labels, arms, cand_rows, entries, write)


def _write(study, d0, bench, labels, arms, cand_rows, entries, write) -> Inputs:
    folder = study.output_path / "data"
    paths = {"d0": folder / "d0.jsonl", "benchmark": folder / "benchmark.jsonl"}
    files = [(paths["d0"], d0), (paths["benchmark"], bench)]
    for name, rows in cand_rows.items():
        path = folder / f"candidate-{name}.jsonl"
        files.append((path, rows))
        arms.append(Arm(name=name, data=str(path), data_fingerprint=fingerprint(rows), license=entries[name].license,
                        rows=len(rows), catalog_version=entries[name].version))
    if write:
        for path, rows in files:
            write_jsonl(rows, path)
    return Inputs(d0=str(paths["d0"]), d0_fingerprint=fingerprint(d0), benchmark=str(paths["benchmark"]),
                  benchmark_fingerprint=fingerprint(bench), labels=labels, arms=arms)
