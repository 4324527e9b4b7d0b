"""The task-type interface: everything the rest of the workbench asks about one kind of task.

A task type says which fields a row has and how to check them, how a row becomes a prompt and a completion
(training and scoring use the same text), how a fine-tuned model is scored on one benchmark row, and which
metrics come out (which is primary, which is continuous, which are better lower). Nothing else in the code
branches on the task's name: it asks the registry (tasks.tasktypes.get)."""

import logging
import math

import numpy as np

from tasks.errors import DataError

SCORE = (0.0, 1.0)  # fit bounds of a share-of-examples metric
MIN_PROMPT = 16  # tokens of a prompt's end always kept by fit_pair (the generation prompt, the last words / signature)


class TaskType:
    name: str = ""
    fields: tuple[str, ...] = ()  # the normalized row's fields = the keys a column map may name
    optional_fields: tuple[str, ...] = ()  # read when the source has them (or the column map names them)
    method: str = "sft"  # how points train: "sft" (trl SFTTrainer) or "dpo" (trl DPOTrainer, preference pairs)
    needs_reference: bool = False  # scoring compares with the base model (scored once per worker: Scorer.reference)
    generates: bool = False  # scoring generates text (which a judge model can score)
    fewshot: bool = False  # evaluation can prefix k solved exemplars (the study's `fewshot:`)
    runs_code: bool = False  # scoring runs the model's code (needs allow_code_execution; `execution.samples` per item)
    metrics: tuple[str, ...] = ()  # every metric the type can log
    optional: tuple[str, ...] = ()  # metrics computed only when the study's `metrics` names them (e.g. generation)
    primary: str = ""  # the default metric to rank on
    continuous: str = "gold_logprob"  # mean log-probability of the gold answer: ranks reliably at small scale
    lower_is_better: frozenset = frozenset({"eval_loss"})
    per_example: dict[str, str] = {}  # metric -> the per-example record field it is the mean of
    diagnostics: tuple[str, ...] = ()  # counts aggregate() adds beside the metrics, logged on every point (not ranked)
    prompt_template: str = ""  # str.format over the row (and prompt_values)
    completion_template: str = " {answer}"
    long_field: str = ""  # the field shortened (by tokens) when the prompt does not fit max_length

    # ---- data -------------------------------------------------------------------------------------------------
    def read(self, ds, ref, origin: str, locate) -> list[dict]:
        """A loaded split -> normalized rows: the column map renames source columns onto the task's fields, then
        normalize() checks each row. locate(i) names row i (file:line where known) for errors."""
        fields = self.fields
        mapping = {f: ref.columns.get(f, f) for f in fields}
        unknown = sorted(set(ref.columns) - set(fields) - set(self.optional_fields))
        if unknown:
            raise DataError(f"{origin}: columns: unknown task field(s) {unknown}; {self.name} fields: "
                            f"{', '.join(fields + self.optional_fields)}")
        missing = [f"'{col}' (for field '{f}')" for f, col in mapping.items() if col not in ds.column_names]
        missing += [f"'{ref.columns[f]}' (for field '{f}')" for f in self.optional_fields
                    if f in ref.columns and ref.columns[f] not in ds.column_names]
        mapping.update({f: ref.columns.get(f, f) for f in self.optional_fields if ref.columns.get(f, f) in ds.column_names})
        if missing:
            raise DataError(f"{origin}: missing column {', '.join(missing)}; columns present: {', '.join(ds.column_names)}"
                            f"{preference_hint(ds.column_names)}")
        rows, refused = [], []
        for i, raw in enumerate(ds.select_columns(list(set(mapping.values())))):
            try:
                rows.append(self.normalize({f: raw[col] for f, col in mapping.items()}, ref, origin, i))
            except DataError as err:
                if not getattr(ref, "drop_unusable", False):
                    raise
                refused.append(str(err))
        return self.dropped(rows, refused, len(ds), origin)

    @staticmethod
    def dropped(rows: list[dict], refused: list[str], total: int, origin: str) -> list[dict]:
        """The rows kept under drop_unusable, with a warning that counts what was dropped (never silently)."""
        if refused:
            logging.getLogger("curate").warning("%s: dropped %d of %d rows the task cannot use (drop_unusable), "
                                                "e.g. %s", origin, len(refused), total, refused[0].removeprefix(f"{origin}: "))
        if not rows:
            raise DataError(f"{origin}: every row was dropped as unusable, e.g. {refused[0]}")
        return rows

    def normalize(self, row: dict, ref, origin: str, index: int) -> dict:
        """One source row (already renamed to the task's fields) -> the normalized row; DataError names the row."""
        return {f: str(row[f]) for f in self.fields}

    def text(self, row: dict) -> str:
        """What the model reads: matched against the benchmark for contamination, counted for the profile."""
        return " ".join(str(row[f]) for f in self.fields)

    def context(self, d0: list[dict], ref) -> dict:
        """What the whole study shares, derived from D0 (e.g. the label set); small and JSON-writable."""
        return {}

    def settings(self, study) -> dict:
        """What the whole study shares from the study file itself (e.g. which optional metrics to compute)."""
        return {}

    def training_notes(self, tokenizer) -> dict:
        """Params logged on each point run about how it was trained (e.g. which tokens carried the loss)."""
        return {}

    def check(self, rows: list[dict], context: dict, origin: str, entry=None, execute=None) \
            -> tuple[list[dict], list[str]]:
        """A candidate or the benchmark against D0's context: (rows, possibly remapped; problems). execute: the
        sandbox (programs, execution settings) -> outcomes, for task types that run code."""
        return rows, []

    def audit(self, d0: list[dict], bench: list[dict], context: dict, allow_one_class: bool = False) \
            -> tuple[list[str], list[str]]:
        """D0 and the benchmark together, before compute: (problems that refuse the study, warnings shown and
        recorded on the study run), e.g. labels outside the label set, a one-class benchmark."""
        return [], []

    def label_noise(self, rows: list[dict], share: float, seed: int, context: dict) -> list[dict]:
        """Rows with a fixed share of their answers replaced (known-truth studies); only task types with labels."""
        raise NotImplementedError(f"task type '{self.name}' has no labels to add noise to")

    def profile(self, rows: list[dict]) -> dict:
        """Extra data-profile entries of a source (e.g. its label distribution)."""
        return {}

    # ---- prompts ----------------------------------------------------------------------------------------------
    def answer(self, row: dict) -> str:
        """The gold answer text trained on and scored."""
        return str(row["answer"])

    def reserve_answers(self, rows: list[dict], context: dict) -> list[str]:
        """Answers whose length decides the tokens kept free after the prompt."""
        return [self.answer(r) for r in rows]

    def completion(self, answer: str) -> str:
        return self.completion_template.format(answer=answer)

    def prompt_values(self, row: dict, context: dict) -> dict:
        return row

    def prompts(self, rows: list[dict], context: dict, tokenizer, max_length: int) -> list[str]:
        """Each row's prompt, its long field cut so that prompt + the longest answer (+ EOS) fit max_length."""
        reserve = 1 + max(len(tokenizer(self.completion(a), add_special_tokens=False).input_ids)
                          for a in self.reserve_answers(rows, context))
        return [self._fit(self.prompt_values(r, context), tokenizer, max_length, reserve) for r in rows]

    def _fit(self, values: dict, tokenizer, max_length: int, reserve: int) -> str:
        full = self.prompt_template.format(**values)
        n_full = len(tokenizer(full, add_special_tokens=False).input_ids)
        if n_full + reserve <= max_length or not self.long_field:
            return full
        ids = tokenizer(values[self.long_field], add_special_tokens=False).input_ids
        keep = max(1, len(ids) - (n_full + reserve - max_length))
        return self.prompt_template.format(**dict(values, **{self.long_field: tokenizer.decode(ids[:keep])}))

    def pairs(self, rows: list[dict], context: dict, tokenizer, max_length: int) -> list[dict]:
        """prompt/completion records for trl's SFTTrainer (loss on the completion only)."""
        texts = self.prompts(rows, context, tokenizer, max_length)
        return [{"prompt": p, "completion": self.completion(self.answer(r))} for p, r in zip(texts, rows)]

    def gold_answers(self, rows: list[dict], context: dict, tokenizer, max_length: int):
        """What the screen's label agreement scores under the base model: (prompts, each row's continuations, the
        index of the gold one). One continuation: its log-probability per token; several (a label set): the gold
        one's share of their probability. None when rows have no single gold answer (preference pairs, rows
        trained as whole conversations)."""
        if self.method != "sft":
            return None
        pairs = self.pairs(rows, context, tokenizer, max_length)
        if not pairs or "completion" not in pairs[0]:
            return None
        return [p["prompt"] for p in pairs], [[p["completion"]] for p in pairs], [0] * len(pairs)

    # ---- scoring ----------------------------------------------------------------------------------------------
    def predict(self, rows: list[dict], context: dict, scorer) -> list[dict]:
        """Per-example records, each with gold_logprob and gold_tokens (tasks.backends.evaluation.Scorer)."""
        raise NotImplementedError(f"task type '{self.name}' defines no predict(): every task type must score rows")

    def columns(self, context: dict) -> dict[str, str]:
        """metric -> its per-example record field: the task's own, and the judge's metric when the study has one."""
        judged = (context or {}).get("judge")
        return {**self.per_example, **({judged["metric"]: judged["metric"]} if judged else {})}

    def aggregate(self, records: list[dict], context: dict) -> dict:
        """Benchmark metrics from per-example records. eval_loss = mean NLL per gold answer token."""
        n = len(records)
        out = {"n_examples": n, "gold_logprob": sum(r["gold_logprob"] for r in records) / n,
               "eval_loss": -sum(r["gold_logprob"] for r in records) / sum(r["gold_tokens"] for r in records)}
        out.update({m: sum(float(r[col]) for r in records) / n for m, col in self.columns(context).items()
                    if col in records[0]})  # optional metrics: only where computed
        assert all(math.isfinite(v) for v in out.values())
        return out

    def example_arrays(self, records: list[dict], context: dict) -> dict[str, np.ndarray]:
        """Per-example columns of one point's predictions, in benchmark order (for the bootstrap)."""
        cols = {"gold_logprob", "gold_tokens", *(c for c in self.columns(context).values() if c in records[0])}
        return {c: np.array([float(r[c]) for r in records]) for c in cols}

    def resample(self, metric: str, ex: dict[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
        """The metric on each row of example indices idx (B x n) -> (B,)."""
        if metric == "eval_loss":
            return -ex["gold_logprob"][idx].sum(1) / ex["gold_tokens"][idx].sum(1)
        column = "gold_logprob" if metric == "gold_logprob" else self.per_example.get(metric, metric)
        if column not in ex:
            raise KeyError(f"no per-example form for metric '{metric}' of task {self.name}")
        return ex[column][idx].mean(1)

    def bounds(self, metric: str) -> tuple[float, float]:
        """Where a fitted curve of the metric must stay."""
        return {"gold_logprob": (-np.inf, 0.0), "eval_loss": (0.0, np.inf)}.get(metric, SCORE)

    def review(self, row: dict, record: dict, context: dict) -> dict:
        """One scored benchmark example as a failure to review: the prompt as chat messages (system + user), the
        model's response, a quality score in [0, 1] (higher is better) and what went wrong, in words."""
        column = self.per_example.get(self.primary, "")
        score = float(record[column]) if column in record else math.exp(record["gold_logprob"] / record["gold_tokens"])
        return {"prompt_messages": [{"role": "user", "content": self.text(row)}],
                "model_response": str(record.get("generation", record.get("prediction", ""))),
                "quality_score": min(max(score, 0.0), 1.0),
                "failure_reason": f"{self.primary} {score:.2f}; expected {self.answer(row)!r}"}

    @staticmethod
    def fail(origin: str, index: int, what: str) -> None:
        raise DataError(f"{origin}: row {index}: {what}")


def preference_hint(keys) -> str:
    """What to say when an SFT task type is given preference pairs (the method does not fit the data)."""
    return ("; these are preference pairs (prompt/chosen/rejected): train them with task: preference "
            "(training.method: dpo)") if {"chosen", "rejected"} <= set(keys) else ""


def fit_pair(prompt: str, completion: str, tokenizer, max_length: int) -> tuple[str, str]:
    """prompt + completion (+ EOS) cut to max_length tokens for training: the prompt loses its start first (its last
    MIN_PROMPT tokens are kept), then a completion longer than what is left loses its end. Scoring uses whole texts."""
    p_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    c_ids = tokenizer(completion, add_special_tokens=False).input_ids
    keep_c = min(len(c_ids), max_length - 1 - min(len(p_ids), MIN_PROMPT))
    keep_p = min(len(p_ids), max_length - 1 - keep_c)
    if keep_p < len(p_ids):
        prompt = tokenizer.decode(p_ids[len(p_ids) - keep_p:])
    if keep_c < len(c_ids):
        completion = tokenizer.decode(c_ids[:keep_c])
    return prompt, completion


def rotate(rows: list[dict], share: float, rng: np.random.Generator, keys: tuple[str, ...]) -> list[dict]:
    """A documented negative control: the `keys` of a fixed share of rows (drawn with rng) moved one place along a
    random cycle among those rows, so none keeps its own answer. The rows are copied."""
    chosen = rng.choice(len(rows), round(share * len(rows)), replace=False)
    rows = [dict(r) for r in rows]
    moved = [tuple(rows[i][k] for k in keys) for i in chosen]
    for n, i in enumerate(chosen):
        rows[i].update(zip(keys, moved[(n + 1) % len(chosen)]))
    return rows
