"""`curate screen`: cheap signals for every catalog entry a study could use, before any fine-tune.

Each entry of the study's catalog with the study's task is checked as a candidate would be (label space, format,
sizes, contamination); one that fails is excluded with the reason and never scored. The others get, from the base
model alone (no training):
- closeness: mean-pooled last hidden states of a seeded sample of the entry's rows and of the benchmark items; the
  mean over benchmark items of the mean cosine similarity to their k nearest rows (D0's own score is the reference);
- label agreement: the base model's mean log-probability per token of the rows' gold answers (what the task type
  calls its gold answer), against D0's: flipped or noisy labels score lower;
- quality flags from validation: duplicate share, copies of D0 rows, rows matching the benchmark.
Entries are ranked by label agreement (the signal that catches bad labels, the worst thing a candidate can bring),
then by closeness; a task type without gold answers ranks by closeness alone.
"""

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from tasks import tasktypes
from tasks.backends import models, tracking
from tasks.backends.data import read_jsonl
from tasks.backends.scorer import Scorer, load_model
from tasks.common import CONTROL, is_placebo
from tasks.core import screencheck
from tasks.errors import StudyInvalid
from tasks.ops.validate import Inputs, check_study
from tasks.schema.catalog import load_catalog
from tasks.schema.study import Study

SAMPLE = 200  # rows of each entry (and of D0) the signals read
NEAREST = 5  # k of the closeness score


class Screened(BaseModel):
    """One catalog entry's screen: its signals, or why it was excluded."""
    name: str
    excluded: str | None = None  # the reason; None when scored
    rows: int = 0
    closeness: float | None = None
    label_agreement: float | None = None  # None: the task type has no gold answers to score
    duplicates: float = 0.0  # share of rows whose text repeats an earlier row
    d0_copies: int = 0
    contaminated: int = 0
    score: float | None = None  # label agreement (else closeness): what the rank sorts on
    rank: int | None = None


def entries_to_screen(study: Study) -> tuple[list[str], list[Screened]]:
    """(names of the catalog entries with the study's task, the other entries excluded with the reason)."""
    same, other = [], []
    for name, entry in sorted(load_catalog(study.catalog_dir).items()):
        if entry.task == study.task:
            same.append(name)
        else:
            other.append(Screened(name=name, excluded=f"its task is {entry.task}; the study's task is {study.task}"))
    return same, other


def validated(study: Study, name: str | None):
    """(the study's validated inputs with `name` as its only candidate — none: the study alone — written under
    output_dir/screen/<name>, None) or (None, the problems)."""
    probe = study.model_copy(update={"candidates": [name] if name else [],
                                     "output_dir": str(study.output_path / "screen" / (name or "_study")),
                                     "noise": study.noise.model_copy(update={"placebos": 0})})
    try:
        return check_study(probe, write=True), []
    except StudyInvalid as err:
        return None, err.problems


def _reason(problems: list[str]) -> str:
    return "; ".join(problems[:2]) + (f" (+{len(problems) - 2} more)" if len(problems) > 2 else "")


def sample(rows: list[dict], n: int, seed: int) -> list[dict]:
    """A seeded sample of n rows (all of them when fewer), in their order."""
    if len(rows) <= n:
        return rows
    keep = np.random.default_rng([seed, 61]).choice(len(rows), n, replace=False)
    return [rows[i] for i in sorted(keep)]


@torch.no_grad()
def embed(scorer: Scorer, texts: list[str]) -> np.ndarray:
    """Mean-pooled last hidden states of the texts (each cut to the study's max_length tokens), unit length."""
    out = []
    tok = scorer.tokenizer
    for i in range(0, len(texts), scorer.batch_size):
        enc = tok(texts[i:i + scorer.batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=scorer.max_length, add_special_tokens=False).to(scorer.model.device)
        with scorer.autocast():
            hidden = scorer.model(**enc, output_hidden_states=True, logits_to_keep=1).hidden_states[-1].float()
        mask = enc.attention_mask[..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1))


def closeness(rows: np.ndarray, bench: np.ndarray, k: int = NEAREST) -> float:
    """Mean over benchmark items of the mean cosine similarity to their k most similar rows (unit vectors)."""
    sims = bench @ rows.T
    k = min(k, sims.shape[1])
    return float(np.sort(sims, axis=1)[:, -k:].mean())


def label_agreement(scorer: Scorer, kind, rows: list[dict], context: dict) -> float | None:
    """The base model's agreement with the rows' gold answers (TaskType.gold_answers): the mean log-probability per
    token of a single gold continuation, or the mean log of the gold option's share of a label set's probability.
    None when the task type has no gold answers."""
    gold = kind.gold_answers(rows, context, scorer.tokenizer, scorer.max_length)
    if gold is None:
        return None
    prompts, options, index = gold
    values = [agreement(s, i) for s, i in zip(scorer.logprobs(prompts, options), index)]
    if max(map(len, options), default=1) == 1:
        return float(np.mean(values))
    # a label set: the mean over gold labels of their rows' mean, so a sample's label mix does not weigh the base
    # model's preference for one label
    by_label = {g: [v for v, i in zip(values, index) if i == g] for g in set(index)}
    return float(np.mean([np.mean(v) for v in by_label.values()]))


def agreement(scored: list[tuple[float, int]], gold: int) -> float:
    """One row: log p per token of its only continuation, or log of the gold option's share of the options'."""
    if len(scored) == 1:
        return scored[0][0] / max(scored[0][1], 1)
    logps = np.array([s for s, _ in scored])
    return float(logps[gold] - np.logaddexp.reduce(logps))


def prepare(study: Study) -> tuple[list[str], list[Screened], Inputs]:
    """Before any model loads: (the entries with the study's task, the others excluded, the study's own validated
    inputs); the study's own problems (D0, benchmark, model, output_dir, catalog folder) raise StudyInvalid."""
    names, excluded = entries_to_screen(study)
    base, problems = validated(study, None)
    if base is None:
        raise StudyInvalid(problems, f"study '{study.name}'")
    return names, excluded, base


def screen(study: Study, names: list[str], excluded: list[Screened], base: Inputs,
           progress=lambda line: None) -> tuple[Screened, list[Screened]]:
    """(D0's own signals as the reference, every entry screened: ranked ones first, then the excluded)."""
    excluded = list(excluded)
    kind = tasktypes.get(study.task)
    scorer = Scorer(*load_model(str(models.resolve_model(study.model)), study.model.trust_remote_code),
                    study.training, models.use_bf16(study.training.bf16))
    bench_vectors = embed(scorer, [kind.text(r) for r in read_jsonl(Path(base.benchmark))])
    reference, scored = signals(scorer, kind, base, CONTROL, bench_vectors, study.seed), []
    for name in names:
        inputs, problems = validated(study, name)
        if inputs is None:  # the study itself is valid: these are the entry's problems
            excluded.append(Screened(name=name, excluded=_reason(problems)))
            progress(f"{name}: excluded ({_reason(problems)})")
            continue
        scored.append(signals(scorer, kind, inputs, name, bench_vectors, study.seed))
        agree = scored[-1].label_agreement
        progress(f"{name}: closeness {scored[-1].closeness:.3f}, label agreement "
                 f"{'-' if agree is None else f'{agree:.3f}'} ({len(scored)} of {len(names)})")
    for s in scored:
        s.score = s.label_agreement if s.label_agreement is not None else s.closeness
    scored.sort(key=lambda s: (-s.score, -s.closeness, s.name))
    for i, s in enumerate(scored, start=1):
        s.rank = i
    return reference, scored + excluded


def signals(scorer: Scorer, kind, inputs, name: str, bench_vectors: np.ndarray, seed: int) -> Screened:
    """One arm's signals on a seeded sample of its rows (the control arm's: D0's)."""
    arm = inputs.arm(name)
    rows = read_jsonl(Path(arm.data or inputs.d0))
    picked = sample(rows, SAMPLE, seed)
    profile = arm.profile
    return Screened(name=name, rows=len(rows),
                    closeness=closeness(embed(scorer, [kind.text(r) for r in picked]), bench_vectors),
                    label_agreement=label_agreement(scorer, kind, picked, inputs.context),
                    duplicates=round(profile.get("duplicates", 0) / max(len(rows), 1), 4),
                    d0_copies=profile.get("d0_copies", 0), contaminated=profile.get("contaminated", 0))


def trained_order(uri: str, study: str) -> tuple[str | None, list[str]]:
    """(the newest ranked study run of the study in the store, its candidates best first: no control, no placebos)."""
    run = tracking.latest_study_run(uri, study)
    if run is None:
        return None, []
    arms = tracking.children(uri, run.info.run_id)
    ranked = [(r.data.metrics["rank"], r.data.tags.get(tracking.ARM, "")) for r in arms if "rank" in r.data.metrics]
    return run.info.run_id, [arm for _, arm in sorted(ranked) if arm != CONTROL and not is_placebo(arm)]


def log_screen(study: Study, reference: Screened, rows: list[Screened], k: int = 3) -> dict:
    """The screen as MLflow runs in the study's store: a `screen` run with D0's values, one child per entry (signals
    as metrics, the reason as a tag when excluded) and, when the store holds a ranked study, the screen's agreement
    with that trained ranking (tasks.core.screencheck) as metrics. Returns that agreement ({} without a ranking)."""
    uri = tracking.tracking_uri(study.output_path)
    experiment = tracking.open_experiment(uri, study.name, study.output_path)
    ranked_run, trained = trained_order(uri, study.name)
    checked = screencheck.agreement([r.name for r in rows if r.excluded is None], trained, k)
    tags = {tracking.SCREEN: study.name, **({"curate.screen.checked_against": ranked_run} if checked else {})}
    run = tracking.start_run(uri, experiment, "screen", tags=tags)
    tracking.log_metrics(uri, run, {**_metrics(reference), **{f"agreement_{k}": v for k, v in checked.items()}})
    for r in rows:
        tags = {tracking.ARM: r.name, **({tracking.EXCLUDED: r.excluded} if r.excluded else {})}
        child = tracking.start_run(uri, experiment, r.name, parent=run, tags=tags)
        tracking.log_metrics(uri, child, _metrics(r))
        tracking.end_run(uri, child)
    tracking.end_run(uri, run)
    return checked


def _metrics(r: Screened) -> dict:
    return {k: float(v) for k, v in r.model_dump(include={"rows", "closeness", "label_agreement", "duplicates",
                                                          "d0_copies", "contaminated", "score", "rank"}).items()
            if v is not None}


def calibration(study: Study) -> list[dict]:
    """Every screen in the study's store that was checked against a trained ranking: its agreement metrics."""
    uri = tracking.tracking_uri(study.output_path)
    return [{"study": r.data.tags.get(tracking.SCREEN), "run": r.info.run_id, "start_ms": r.info.start_time,
             **{k.removeprefix("agreement_"): v for k, v in r.data.metrics.items() if k.startswith("agreement_")}}
            for r in tracking.tagged_runs(uri, tracking.SCREEN) if "agreement_pairwise" in r.data.metrics]
