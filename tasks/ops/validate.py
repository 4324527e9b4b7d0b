"""Check a study against its catalog, data and model — every problem at once, before any compute —
and write the normalized data files the flow passes around by path."""

import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from tasks import tasktypes
from tasks.backends import sandbox
from tasks.backends.data import load_split, normalize, write_jsonl
from tasks.backends.models import check_model, quantization_problem
from tasks.common import CONTROL, PLACEBO, fingerprint, is_placebo
from tasks.core import contamination, mixing
from tasks.errors import DataError, StudyInvalid
from tasks.schema.catalog import CatalogEntry, load_catalog, unknown_candidate
from tasks.ops import fewshot, overlap
from tasks.schema.study import Study

PREPARED = "inputs.json"  # in <output_dir>/data: the validated inputs, read by the flow instead of validating again


class Arm(BaseModel):
    """One branch of the study: a candidate (or the control) with its data file and provenance."""
    name: str
    data: str | None  # None for the control
    data_fingerprint: str | None
    license: str
    rows: int
    catalog_version: int | None = None
    entry_fingerprint: str | None = None  # the catalog entry's fingerprint (None for the control)
    contamination: dict = {}  # Counts of the candidate's rows that matched the benchmark (D0's for the control)
    profile: dict = {}        # rows, duplicates, labels, share removed, token lengths (added once the tokenizer is known)


class Inputs(BaseModel):
    """Small references to the prepared data: what the flow hands to its tasks."""
    study_fingerprint: str  # of the study fields that decide the data (data_fingerprint): stale files are not used
    d0: str
    d0_fingerprint: str
    benchmark: str
    benchmark_fingerprint: str
    context: dict  # what the task type derived from D0 (classification: its label set)
    arms: list[Arm]
    d0_contamination: dict = {}
    warnings: list[str] = []  # shown by validate and run, and recorded on the study run (tag curate.warnings)

    def arm(self, name: str) -> Arm:
        found = next((a for a in self.arms if a.name == name), None)
        if found is None:
            raise StudyInvalid([f"arm '{name}' is not in this study (arms: {', '.join(a.name for a in self.arms)})"])
        return found


def data_fingerprint(study: Study) -> str:
    """The study fields that decide the prepared data (not concurrency, work pool or ranking options), the catalog's
    files and the size and time of every local data file: prepared inputs are reused only while none changed."""
    fields = study.model_dump(mode="json", include={"name", "task", "base", "benchmark", "candidates", "catalog_dir",
                                                    "mixture", "seed", "contamination", "output_dir", "noise",
                                                    "fewshot"})
    catalog = Path(study.catalog_dir)
    files = sorted(catalog.glob("*.y*ml")) if catalog.is_dir() else []
    try:
        entries = load_catalog(catalog)
    except StudyInvalid:  # a broken catalog is reported by check_study; its file texts are fingerprinted below
        entries = {}
    sources = [study.base.source, *([study.benchmark.data.source] if study.benchmark.data else []),
               *(e.path for e in entries.values() if e.path)]
    return fingerprint([fields, [f.read_text() for f in files], [_stamp(Path(s)) for s in sources]])


def _stamp(path: Path) -> list:
    """Size and modification time of a local file (every file of a folder); nothing for Hub ids."""
    found = sorted(path.rglob("*")) if path.is_dir() else [path] if path.is_file() else []
    return [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in found if f.is_file()]


def read_prepared(study: Study) -> Inputs | None:
    """The inputs the CLI validated and wrote for this study, or None when missing or written for other settings."""
    path = study.output_path / "data" / PREPARED
    try:
        inputs = Inputs.model_validate_json(path.read_text())
    except (OSError, ValueError):
        return None
    return inputs if inputs.study_fingerprint == data_fingerprint(study) else None


def load_rows(ref, task, origin, problems) -> list[dict] | None:
    """A data reference read and normalized for the task; a problem is added to `problems` (None returned)."""
    try:
        return normalize(load_split(ref), task, ref, origin)
    except DataError as err:
        problems.append(str(err))
        return None


def _check_sizes(n0: int, nk: int | None, study: Study, origin: str, problems):
    if study.mixture.allow_repetition:
        return
    size = max(study.mixture.sizes)
    need0, needk = mixing.split_counts(size, study.mixture.d0_share, nk is None)
    for have, need, what in ((n0, need0, "D0 training rows"), (nk or 0, needk, f"rows of {origin}")):
        if mixing.shortfall(have, need):
            problems.append(f"mixture.sizes: size {size} needs {need} {what} for arm '{origin}' but only {have} "
                            f"exist; lower the size, or set mixture.allow_repetition: true")


def split_benchmark(study, d0, problems):
    """(D0 without the benchmark rows, the benchmark): its own split, or a seeded hold-out of D0."""
    if study.benchmark.holdout is None:
        return d0, _sample(study, load_rows(study.benchmark.data, study.task, "benchmark (benchmark.data)", problems))
    if study.benchmark.holdout >= len(d0):
        problems.append(f"benchmark.holdout: {study.benchmark.holdout} rows asked but D0 has only {len(d0)}")
        return d0, None
    order = np.random.default_rng([study.seed, 99]).permutation(len(d0))
    cut = study.benchmark.holdout
    return [d0[i] for i in order[cut:]], _sample(study, [d0[i] for i in order[:cut]])


def _sample(study, bench):
    """benchmark.sample: a fixed sample (study seed), in the benchmark's order; all rows when it has fewer."""
    n = study.benchmark.sample
    if bench is None or not n or n >= len(bench):
        return bench
    keep = np.random.default_rng([study.seed, 98]).choice(len(bench), n, replace=False)
    return [bench[i] for i in sorted(keep)]


def check_study(study: Study, write: bool = True) -> Inputs:
    """Validate everything and (write=True) write the normalized data under output_dir/data."""
    problems: list[str] = []
    entries, chosen = _candidates(study, problems)
    kind = tasktypes.get(study.task)
    d0, bench, context = _d0_and_benchmark(study, kind, problems)
    warnings = _warnings(study, problems)
    if bench is not None and context is not None:
        bench, found = kind.check(bench, context, "benchmark", execute=sandbox.run_problems)
        problems += found
        found, warned = kind.audit(d0, bench, context, study.benchmark.allow_one_class)
        problems, warnings = problems + found, warnings + warned
    exemplars = fewshot.draw(study, lambda ref, origin: load_rows(ref, study.task, origin, problems), problems)
    shots = fewshot.index(exemplars, study.task, study.contamination.ngram)
    if exemplars and context is not None:
        context["fewshot"] = exemplars
    index, d0_words = None, {contamination.words(kind.text(r)) for r in d0 or []}
    if bench is not None and len(bench) == 1 and study.seeds == 1 and study.ranking.intervals:
        problems.append("ranking.intervals: one seed and one benchmark example leave nothing to resample; "
                        "add benchmark examples or seeds (seeds: 3), or set ranking.intervals: false")
    contam: dict[str, dict] = {}
    if bench is not None:
        # the few-shot exemplars count as benchmark items here too (and are removed below whatever the mode)
        index = contamination.BenchmarkIndex([kind.text(r) for r in bench + exemplars], n=study.contamination.ngram)
        if d0 is not None:
            d0, contam[CONTROL] = overlap.decontaminate(d0, index, study, "D0 (base)", problems, shots)
    cand_rows = {}
    for entry in chosen:
        rows = _candidate_rows(study, kind, entry, context, problems)
        if rows is None:
            continue
        if index is not None:
            origin = f"candidate '{entry.name}' ({entry.path or entry.hub_id} [{entry.split}])"
            rows, contam[entry.name] = overlap.decontaminate(rows, index, study, origin, problems, shots)
            contam[entry.name]["d0_copies"] = copied = contamination.copies([kind.text(r) for r in rows], d0_words)
            if copied:
                warnings.append(f"candidate '{entry.name}': {copied} of {len(rows)} rows are copies of D0 rows"
                                f"{' (all of them: it is D0 again)' if copied == len(rows) else ''}; it adds "
                                f"{len(rows) - copied} new rows (the ranking shows d0_copies)")
        cand_rows[entry.name] = rows
        if d0 is not None:
            _check_sizes(len(d0), len(rows), study, entry.name, problems)
    placebos = {}
    if d0 is not None:
        _check_sizes(len(d0), None, study, CONTROL, problems)
        placebos = _placebos(d0, study, problems)
    for what, ref in (("model", study.model), ("judge.model", study.judge.model if study.judge else None)):
        problem = check_model(ref) if ref else None
        if problem:
            problems.append(problem if what == "model" else problem.replace("model.source", "judge.model.source", 1))
    if problems:
        raise StudyInvalid(problems, f"study '{study.name}'")
    fewshot.check({CONTROL: d0, **cand_rows, **placebos}, exemplars, study.task)
    return _write(study, d0, bench, context, contam, cand_rows, entries, write, placebos, warnings)


def _candidates(study: Study, problems: list[str]) -> tuple[dict[str, CatalogEntry], list[CatalogEntry]]:
    """(the catalog, the entries the study names); a reserved, unknown or other-task name is a problem."""
    entries: dict[str, CatalogEntry] = {}
    try:
        entries = load_catalog(study.catalog_dir)
    except StudyInvalid as err:
        problems += err.problems
    chosen = []
    for name in study.candidates:
        if name == CONTROL:
            problems.append(f"candidates: '{CONTROL}' is reserved for the D0-only arm, which always runs")
        elif is_placebo(name):
            problems.append(f"candidates: names starting with '{PLACEBO}' are reserved for placebo arms (noise.placebos)")
        elif entries and name not in entries:
            problems.append(f"candidates: {unknown_candidate(name, entries)}")
        elif name in entries and entries[name].task != study.task:
            problems.append(f"candidates: '{name}' is a {entries[name].task} dataset but the study task is {study.task}")
        elif name in entries:
            chosen.append(entries[name])
    return entries, chosen


def _d0_and_benchmark(study: Study, kind, problems: list[str]) -> tuple:
    """(D0, the benchmark, the task's context) read and checked; None where D0 could not be read."""
    d0 = load_rows(study.base, study.task, f"D0 (base: {study.base.source} [{study.base.split}])", problems)
    if d0 is None:
        return None, None, None
    d0, bench = split_benchmark(study, d0, problems)
    context = {**kind.context(d0, study.base), **kind.settings(study),
               **({"judge": study.judge.model_dump(mode="json")} if study.judge else {})}
    if study.base.label_noise:
        try:  # after the hold-out: a benchmark taken from D0 keeps its true labels
            d0 = kind.label_noise(d0, study.base.label_noise, study.seed, context)
        except NotImplementedError as err:
            problems.append(f"base.label_noise: {err}")
    return d0, bench, context


def _candidate_rows(study: Study, kind, entry: CatalogEntry, context: dict | None, problems: list[str]):
    """A candidate's rows read and checked against D0's context (None when they could not be read)."""
    origin = f"candidate '{entry.name}' ({entry.path or entry.hub_id} [{entry.split}])"
    rows = load_rows(entry.data_ref(), study.task, origin, problems)
    if rows is None or context is None:  # no context when D0 itself failed: reported already
        return rows
    rows, found = kind.check(rows, context, origin, entry, execute=sandbox.run_problems)
    problems += found
    if entry.label_noise and not found:
        try:  # a documented negative control: answers replaced with the entry's version as the seed
            rows = kind.label_noise(rows, entry.label_noise, entry.version, context)
        except NotImplementedError as err:
            problems.append(f"{origin}: label_noise: {err} (use it on classification or math entries)")
    return rows


def _warnings(study: Study, problems: list[str]) -> list[str]:
    """The study's own settings: an output_dir that cannot be a writable folder is a problem; remote code a warning."""
    out = study.output_path
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        problems.append(f"output_dir: '{existing}' is a file, not a folder (output_dir: {study.output_dir})")
    elif not os.access(existing, os.W_OK | os.X_OK):
        problems.append(f"output_dir: '{existing}' is not writable by this user (output_dir: {study.output_dir})")
    problems += [p for p in [quantization_problem(study.training.quantization)] if p]
    return ([f"model.trust_remote_code: true: Python code shipped with '{study.model.source}' runs in this process "
             f"and on every worker, unsandboxed; recorded on the study run"] if study.model.trust_remote_code else [])


def _placebos(d0: list[dict], study: Study, problems: list[str]) -> dict[str, list[dict]]:
    """noise.placebos arms: each one's 'candidate' rows are D0 rows that no mixture uses as D0, in its own order."""
    if not study.noise.placebos:
        return {}
    size, share = max(study.mixture.sizes), study.mixture.d0_share
    pool = mixing.unused_d0(len(d0), size, share, study.seed)
    need = mixing.split_counts(size, share, False)[1]
    if mixing.shortfall(len(pool), need) and not study.mixture.allow_repetition:
        problems.append(f"noise.placebos: a placebo arm needs {need} D0 rows beyond the "
                        f"{len(d0) - len(pool)} its mixtures use as D0 at size {size}, but D0 has {len(d0)} rows; "
                        f"lower the sizes, use more D0 rows, or set noise.placebos: 0")
        return {}
    return {f"{PLACEBO}{k}": [d0[i] for i in np.random.default_rng([study.seed, 77, k]).permutation(pool)]
            for k in range(1, study.noise.placebos + 1)}


def _write(study, d0, bench, context, contam, cand_rows, entries, write, placebos, warnings) -> Inputs:
    folder = study.output_path / "data"
    paths = {"d0": folder / "d0.jsonl", "benchmark": folder / "benchmark.jsonl"}
    files = [(paths["d0"], d0), (paths["benchmark"], bench)]
    d0_counts = contam.get(CONTROL, {})
    arms = [Arm(name=CONTROL, data=None, data_fingerprint=None, license="(your data)", rows=len(d0),
                contamination=d0_counts, profile=overlap.profile(d0, study.task, d0_counts, "(your data)"))]
    for name, rows in cand_rows.items():
        path = folder / f"candidate-{name}.jsonl"
        files.append((path, rows))
        counts = contam.get(name, {})
        arms.append(Arm(name=name, data=str(path), data_fingerprint=fingerprint(rows), license=entries[name].license,
                        rows=len(rows), catalog_version=entries[name].version, contamination=counts,
                        entry_fingerprint=entries[name].fingerprint(),
                        profile=overlap.profile(rows, study.task, counts, entries[name].license)))
    for name, rows in placebos.items():
        path = folder / f"{name}.jsonl"
        files.append((path, rows))
        arms.append(Arm(name=name, data=str(path), data_fingerprint=fingerprint(rows), license="(your data: placebo)",
                        rows=len(rows), contamination=d0_counts, entry_fingerprint=fingerprint(["placebo", name]),
                        profile=overlap.profile(rows, study.task, d0_counts, "(your data: placebo)")))
    inputs = Inputs(study_fingerprint=data_fingerprint(study), d0=str(paths["d0"]), d0_fingerprint=fingerprint(d0),
                    benchmark=str(paths["benchmark"]), benchmark_fingerprint=fingerprint(bench), context=context,
                    arms=arms, d0_contamination=d0_counts, warnings=warnings)
    if write:
        for path, rows in files:
            write_jsonl(rows, path)
        tmp = folder / (PREPARED + ".tmp")
        tmp.write_text(inputs.model_dump_json(indent=2))
        tmp.replace(folder / PREPARED)
    return inputs
