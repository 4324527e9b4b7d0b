"""Extractive QA (SQuAD-style): context + question -> a span; greedy answers scored by SQuAD exact match and F1."""

from tasks.tasktypes.base import TaskType


class ExtractiveQA(TaskType):
    name = "extractive_qa"
    generates = True
    fields = ("context", "question", "answers")
    metrics = ("exact_match", "f1", "gold_logprob", "eval_loss")
    primary = "f1"
    per_example = {"exact_match": "exact_match", "f1": "f1"}
    prompt_template = "Answer with a span copied from the context.\nContext: {context}\nQuestion: {question}\nAnswer:"
    long_field = "context"

    def normalize(self, row, ref, origin, index):
        answers = row["answers"]
        if isinstance(answers, dict):
            answers = answers.get("text", [])
        answers = [str(a) for a in answers] if isinstance(answers, (list, tuple)) else [str(answers)]
        if not answers or not answers[0]:
            self.fail(origin, index, "no answer text")
        return {"context": str(row["context"]), "question": str(row["question"]), "answers": answers}

    def text(self, row):
        return f"{row['question']} {row['context']}"

    def answer(self, row):
        return row["answers"][0]

    def review(self, row, record, context):
        return review_of(row, record)

    def predict(self, rows, context, scorer):
        texts = self.prompts(rows, context, scorer.tokenizer, scorer.max_length)
        scored = scorer.logprobs(texts, [[self.completion(self.answer(r))] for r in rows])
        answers = [t.strip().split("\n")[0].strip() for t in scorer.generate(texts)]
        return [record(r, a, s[0]) for r, a, s in zip(rows, answers, scored)]


def review_of(row: dict, record: dict) -> dict:
    why = f"answer mismatch: predicted {record['prediction']!r}, gold {record['gold'][0]!r} (F1 {record['f1']:.2f})"
    return {"prompt_messages": [{"role": "user", "content": f"{row['context']}\n\nQuestion: {row['question']}"}],
            "model_response": record["prediction"], "quality_score": float(record["f1"]), "failure_reason": why}


def squad_scores(prediction: str, answers: list[str]) -> tuple[float, float]:
    """(exact match, F1) in [0, 1] with the official SQuAD normalization."""
    from torchmetrics.functional.text import squad

    out = squad([{"prediction_text": prediction, "id": "0"}],
                [{"answers": {"answer_start": [0] * len(answers), "text": answers}, "id": "0"}])
    return float(out["exact_match"]) / 100, float(out["f1"]) / 100


def record(row: dict, answer: str, scored: tuple[float, int]) -> dict:
    em, f1 = squad_scores(answer, row["answers"])
    return {"gold": row["answers"], "prediction": answer, "exact_match": em, "f1": f1,
            "gold_logprob": scored[0], "gold_tokens": scored[1]}


TASK = ExtractiveQA()
