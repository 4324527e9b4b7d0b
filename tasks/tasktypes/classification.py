"""Classification: text -> one label of D0's label set, scored by label log-likelihood (no parsing of generations)."""

import re

import numpy as np

from tasks.tasktypes.base import TaskType


NUMBER = re.compile(r"\s*[+-]?\d+(\.0*)?\s*")
SKEW = 0.8  # a benchmark's majority label share above this (and far above D0's) is reported


class Classification(TaskType):
    name = "classification"
    fields = ("text", "label")
    metrics = ("accuracy", "macro_f1", "gold_logprob", "eval_loss")
    primary = "accuracy"
    per_example = {"accuracy": "correct"}
    prompt_template = "Classify the text. Labels: {labels}.\nText: {text}\nLabel:"
    completion_template = " {answer}"
    long_field = "text"

    def normalize(self, row, ref, origin, index):
        label = row["label"]
        if label is None or (isinstance(label, str) and not label.strip()):
            self.fail(origin, index, "no label")
        if isinstance(label, float):  # CSV and parquet exports often write 0.0/1.0 for integer labels
            if not label.is_integer():
                self.fail(origin, index, f"label {label} is a fraction; labels are names or whole-number ids")
            label = int(label)
        if ref.label_names and isinstance(label, str) and label not in ref.label_names and NUMBER.fullmatch(label):
            label = int(float(label))  # '1' or '1.0' read from a text column: an id, as the label_names say
        if ref.label_names and isinstance(label, int) and not isinstance(label, bool):
            if not 0 <= label < len(ref.label_names):
                self.fail(origin, index, f"label {label} has no name in label_names ({len(ref.label_names)} names: "
                          f"{', '.join(ref.label_names)})")
            label = ref.label_names[label]
        return {"text": str(row["text"]), "label": str(label)}

    def text(self, row):
        return row["text"]

    def context(self, d0, ref):
        return {"labels": list(ref.label_names or sorted({r["label"] for r in d0}))}

    def check(self, rows, context, origin, entry=None, execute=None):
        labels = context["labels"]
        label_map = entry.label_map if entry else {}
        rows = [dict(r, label=label_map.get(r["label"], r["label"])) for r in rows]
        outside = sorted({r["label"] for r in rows} - set(labels))
        if outside:
            return rows, [f"{origin}: labels outside D0's label set: {', '.join(outside)}; D0 labels: "
                          f"{', '.join(labels)} (map them with label_map in the catalog entry, or label_names)"]
        return rows, []

    def audit(self, d0, bench, context, allow_one_class=False):
        """D0 against its own label set; a benchmark of one class is refused, one far more skewed than D0 reported."""
        labels, problems, warnings = context["labels"], [], []
        outside = [(i, r["label"]) for i, r in enumerate(d0) if r["label"] not in labels]
        if outside:
            problems.append(f"D0 (base): {len(outside)} rows have labels outside label_names, e.g. row {outside[0][0]}: "
                            f"'{outside[0][1]}'; label_names: {', '.join(labels)}")
        for what, rows in (("benchmark", bench), ("D0 (base)", d0)):
            counts = self.profile(rows)["labels"]
            top, n = max(counts.items(), key=lambda kv: kv[1])
            if len(counts) == 1 and len(labels) > 1:
                why = (f"{what}: all {n} rows have the label '{top}': accuracy would measure how often a model says "
                       f"'{top}' (its bias), not its skill, and a label-flipped candidate could rank anywhere. A slice "
                       f"of a file sorted by label (train[:300]) is the usual cause; sample the whole split instead "
                       f"(benchmark.sample)")
                if what == "benchmark" and not allow_one_class and n > 1:
                    problems.append(why + ", or set benchmark.allow_one_class: true if one class is what you test")
                else:
                    warnings.append(why)
            elif what == "benchmark" and n / len(rows) > SKEW:
                base = self.profile(d0)["labels"].get(top, 0) / max(len(d0), 1)
                if n / len(rows) > base + 0.25:
                    warnings.append(f"benchmark: {n / len(rows):.0%} of its rows have the label '{top}' (D0: "
                                    f"{base:.0%}): accuracy rewards saying '{top}'; macro_f1 and gold_logprob "
                                    f"depend less on that bias")
        return problems, warnings

    def label_noise(self, rows, share, seed, context):
        return _with_noise(rows, share, seed, context["labels"])

    def profile(self, rows):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        return {"labels": dict(sorted(counts.items()))}

    def answer(self, row):
        return row["label"]

    def reserve_answers(self, rows, context):
        return context["labels"]

    def prompt_values(self, row, context):
        return dict(row, labels=", ".join(context["labels"]))

    def review(self, row, record, context):
        labels = list(record["label_logprobs"])
        logp = np.array([record["label_logprobs"][lab] for lab in labels])
        p = dict(zip(labels, np.exp(logp - logp.max()) / np.exp(logp - logp.max()).sum()))
        gold, pred = record["gold"], record["prediction"]
        why = (f"wrong label '{pred}' (p={p[pred]:.2f}); gold '{gold}' (p={p[gold]:.2f})" if pred != gold
               else f"right label '{gold}' but unsure (p={p[gold]:.2f})")
        prompt = self.prompt_template.format(**self.prompt_values(row, context))
        return {"prompt_messages": [{"role": "user", "content": prompt}], "model_response": pred,
                "quality_score": float(p[gold]), "failure_reason": why}

    def gold_answers(self, rows, context, tokenizer, max_length):
        """Every label as a continuation: agreement is the gold label's share of the label set's probability."""
        labels = context["labels"]
        options = [self.completion(lab) for lab in labels]
        return self.prompts(rows, context, tokenizer, max_length), [options] * len(rows), [labels.index(r["label"])
                                                                                         for r in rows]

    def predict(self, rows, context, scorer):
        labels = context["labels"]
        texts = self.prompts(rows, context, scorer.tokenizer, scorer.max_length)
        scored = scorer.logprobs(texts, [[self.completion(lab) for lab in labels]] * len(rows))
        return [record(r, labels, s) for r, s in zip(rows, scored)]

    def aggregate(self, records, context):
        out = super().aggregate(records, context)
        code = {lab: i for i, lab in enumerate(context["labels"])}
        gold, pred = (np.array([code[r[k]] for r in records], dtype=int) for k in ("gold", "prediction"))
        out["macro_f1"] = macro_f1(gold, pred, len(code))
        return out

    def example_arrays(self, records, context):
        code = {lab: i for i, lab in enumerate(context["labels"])}
        return {**super().example_arrays(records, context), "gold": np.array([code[r["gold"]] for r in records]),
                "pred": np.array([code[r["prediction"]] for r in records])}

    def resample(self, metric, ex, idx):
        if metric != "macro_f1":
            return super().resample(metric, ex, idx)
        n_labels = int(max(ex["gold"].max(), ex["pred"].max())) + 1
        return np.array([macro_f1(ex["gold"][i], ex["pred"][i], n_labels) for i in idx])


def record(row: dict, labels: list[str], scored: list[tuple[float, int]]) -> dict:
    """Prediction = the label whose completion has the highest log-likelihood."""
    logps = [s for s, _ in scored]
    best = max(range(len(labels)), key=logps.__getitem__)
    g = labels.index(row["label"])
    return {"gold": row["label"], "prediction": labels[best], "correct": best == g,
            "gold_logprob": logps[g], "gold_tokens": scored[g][1], "label_logprobs": dict(zip(labels, logps))}


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    """Macro F1 over every label (a label never predicted nor gold scores 0), as sklearn's f1_score(average='macro',
    labels=all, zero_division=0) (tests/test_core.py checks); one implementation for the metric and its bootstrap."""
    tp = np.bincount(gold[gold == pred], minlength=n_labels)
    fp = np.bincount(pred, minlength=n_labels) - tp
    fn = np.bincount(gold, minlength=n_labels) - tp
    den = 2 * tp + fp + fn
    return float(np.mean(np.divide(2 * tp, den, out=np.zeros(n_labels), where=den > 0)))


def _with_noise(rows: list[dict], share: float, seed: int, labels: list[str]) -> list[dict]:
    """Replace the labels of a fixed share of rows by a different label (documented negative controls)."""
    rng = np.random.default_rng([seed, 7])
    noisy = rng.choice(len(rows), round(share * len(rows)), replace=False)
    rows = [dict(r) for r in rows]
    for i in noisy:
        others = [lab for lab in labels if lab != rows[i]["label"]]
        rows[i]["label"] = others[rng.integers(len(others))]
    return rows


TASK = Classification()
