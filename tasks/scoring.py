"""Per-example records and aggregate metrics. Pure functions: tests check them against hand-computed values."""

import math

from sklearn.metrics import accuracy_score, f1_score
from torchmetrics.functional.text import squad


def classification_record(row: dict, labels: list[str], scored: list[tuple[float, int]]) -> dict:
    """Prediction = the label whose completion has the highest log-likelihood."""
    logps = [s for s, _ in scored]
    best = max(range(len(labels)), key=logps.__getitem__)
    g = labels.index(row["label"])
    return {"gold": row["label"], "prediction": labels[best], "correct": best == g,
            "gold_logprob": logps[g], "gold_tokens": scored[g][1], "label_logprobs": dict(zip(labels, logps))}


def squad_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(exact match, F1) in [0, 1] with the official SQuAD normalization."""
    out = squad([{"prediction_text": prediction, "id": "0"}],
                [{"answers": {"answer_start": [0] * len(answers), "text": answers}, "id": "0"}])
    return float(out["exact_match"]) / 100, float(out["f1"]) / 100


def qa_record(row: dict, answer: str, scored: tuple[float, int]) -> dict:
    em, f1 = squad_scores(answer, row["answers"])
    return {"gold": row["answers"], "prediction": answer, "exact_match": em, "f1": f1,
            "gold_logprob": scored[0], "gold_tokens": scored[1]}


def aggregate(records: list[dict], task: str, labels: list[str]) -> dict:
    """Benchmark metrics from per-example records. eval_loss = mean NLL per gold answer token."""
    n = len(records)
    tokens = sum(r["gold_tokens"] for r in records)
    out = {"n_examples": n, "gold_logprob": sum(r["gold_logprob"] for r in records) / n,
           "eval_loss": -sum(r["gold_logprob"] for r in records) / tokens}
    if task == "classification":
        gold, pred = [r["gold"] for r in records], [r["prediction"] for r in records]
        out["accuracy"] = float(accuracy_score(gold, pred))
        out["macro_f1"] = float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0))
    else:
        out["exact_match"] = sum(r["exact_match"] for r in records) / n
        out["f1"] = sum(r["f1"] for r in records) / n
    assert all(math.isfinite(v) for v in out.values())
    return out
