"""Classification: text -> one label of D0's label set, scored by label log-likelihood (no parsing of generations)."""

import numpy as np

from tasks.tasktypes.base import TaskType


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

    def check(self, rows, context, origin, entry=None):
        labels = context["labels"]
        label_map = entry.label_map if entry else {}
        rows = [dict(r, label=label_map.get(r["label"], r["label"])) for r in rows]
        outside = sorted({r["label"] for r in rows} - set(labels))
        if outside:
            return rows, [f"{origin}: labels outside D0's label set: {', '.join(outside)}; D0 labels: "
                          f"{', '.join(labels)} (map them with label_map in the catalog entry, or label_names)"]
        return rows, []

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

    def predict(self, rows, context, scorer):
        labels = context["labels"]
        texts = self.prompts(rows, context, scorer.tokenizer, scorer.max_length)
        scored = scorer.logprobs(texts, [[self.completion(lab) for lab in labels]] * len(rows))
        return [record(r, labels, s) for r, s in zip(rows, scored)]

    def aggregate(self, records, context):
        from sklearn.metrics import f1_score

        out = super().aggregate(records, context)
        gold, pred = [r["gold"] for r in records], [r["prediction"] for r in records]
        out["macro_f1"] = float(f1_score(gold, pred, labels=context["labels"], average="macro", zero_division=0))
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
    """sklearn's f1_score(average='macro', labels=all, zero_division=0), without its per-call overhead."""
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
