"""A toy task type, defined outside the package the way a user would add one: this file plus its name in
$CURATE_TASK_TYPES. Parity: a number written out -> 'even' or 'odd', scored by the two answers' log-likelihoods."""

import numpy as np

from tasks.tasktypes.base import TaskType


class Parity(TaskType):
    name = "toy_parity"
    fields = ("number", "answer")
    metrics = ("accuracy", "gold_logprob", "eval_loss")
    primary = "accuracy"
    per_example = {"accuracy": "correct"}
    prompt_template = "Is the number even or odd?\nNumber: {number}\nAnswer:"

    def normalize(self, row, ref, origin, index):
        if str(row["answer"]) not in ("even", "odd"):
            self.fail(origin, index, f"answer '{row['answer']}' is not one of: even, odd")
        return {"number": str(row["number"]), "answer": str(row["answer"])}

    def text(self, row):
        return row["number"]

    def reserve_answers(self, rows, context):
        return ["even", "odd"]

    def predict(self, rows, context, scorer):
        texts = self.prompts(rows, context, scorer.tokenizer, scorer.max_length)
        scored = scorer.logprobs(texts, [[self.completion("even"), self.completion("odd")]] * len(rows))
        out = []
        for row, options in zip(rows, scored):
            gold = ("even", "odd").index(row["answer"])
            best = int(np.argmax([s for s, _ in options]))
            out.append({"gold": row["answer"], "prediction": ("even", "odd")[best], "correct": best == gold,
                        "gold_logprob": options[gold][0], "gold_tokens": options[gold][1]})
        return out


TASK = Parity()
