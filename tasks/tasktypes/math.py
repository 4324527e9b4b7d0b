"""Math word problems (GSM8K-style): question -> a worked solution ending in '#### <final answer>'.

Training targets are the solutions with GSM8K's calculator annotations removed, each ending in '#### <answer>' (a
bare answer such as ASDiv's '9 apples' becomes '#### 9'). Scoring: greedy generation, the final answer extracted
(tasks.core.mathanswers: '####', '\\boxed{}', 'the answer is', the last number) and compared as a number
(`accuracy`), plus the gold solution's log-probability (`token_logprob` per token, `gold_logprob` in all) as the
continuous metric. With `fewshot:` in the study, k solved exemplars (drawn once with the seed, never trained on)
precede every benchmark question."""

import numpy as np

from tasks.core import mathanswers
from tasks.errors import DataError
from tasks.tasktypes.base import TaskType, rotate

STOP = "\nQuestion:"  # a generation that starts the next problem is cut there


class Math(TaskType):
    name = "math"
    generates = True
    fields = ("question", "answer")
    optional_fields = ("passage",)  # read when present and prepended to the question (ASDiv: passage + question)
    metrics = ("accuracy", "token_logprob", "gold_logprob", "eval_loss")
    primary = "accuracy"
    continuous = "token_logprob"
    per_example = {"accuracy": "correct", "token_logprob": "token_logprob"}
    prompt_template = "Question: {question}\nAnswer:"
    completion_template = " {answer}"
    long_field = "question"
    fewshot = True

    def read(self, ds, ref, origin, locate):
        rows = super().read(ds, ref, origin, locate)
        missing = [i for i, r in enumerate(rows) if r["final"] is None]
        if missing and ref.drop_unusable:
            return self.dropped([r for r in rows if r["final"] is not None],
                                [f"{locate(i)}: no final answer in {rows[i]['answer'][:80]!r}" for i in missing],
                                len(rows), origin)
        if missing:
            raise DataError(f"{origin}: {len(missing)} of {len(rows)} rows have no final answer in their solution, "
                            f"e.g. {locate(missing[0]).removeprefix(origin + ': ')}: {rows[missing[0]]['answer'][:120]!r}; "
                            f"a solution must end in "
                            f"'#### <number>', contain '\\boxed{{<number>}}' or 'The answer is <number>', or a number "
                            f"(drop_unusable: true drops such rows)")
        return rows

    def normalize(self, row, ref, origin, index):
        question, solution = str(row["question"]).strip(), str(row["answer"])
        if row.get("passage"):
            question = f"{str(row['passage']).strip()} {question}"
        if not question:
            self.fail(origin, index, "empty question")
        final = mathanswers.extract(solution)
        return {"question": question, "answer": mathanswers.solution_text(solution, final) if final else solution,
                "final": final}

    def label_noise(self, rows, share, seed, context):
        """A documented negative control: the solutions of a fixed share of rows shuffled among those rows."""
        return rotate(rows, share, np.random.default_rng([seed, 7]), ("answer", "final"))

    def text(self, row):
        return row["question"]

    def prompt_values(self, row, context):
        return {"question": row["question"]}

    def predict(self, rows, context, scorer):
        shots = "".join(self.prompt_template.format(question=s["question"]) + self.completion(s["answer"]) + "\n\n"
                        for s in context.get("fewshot", []))
        prompts = [shots + p for p in self.prompts(rows, context, scorer.tokenizer, scorer.max_length)]
        scored = scorer.logprobs(prompts, [[self.completion(r["answer"])] for r in rows])
        generated = [t.split(STOP)[0].strip() for t in scorer.generate(prompts, stop=[STOP])]  # ends rows early
        records = []
        for r, (s,), text in zip(rows, scored, generated):
            predicted = mathanswers.extract(text)
            records.append({"gold": r["final"], "prediction": predicted, "generation": text,
                            "correct": mathanswers.same(predicted, r["final"]), "gold_logprob": s[0],
                            "gold_tokens": s[1], "token_logprob": s[0] / s[1]})
        return records

    def review(self, row, record, context):
        pred, gold = record["prediction"], record["gold"]
        why = "right final answer" if record["correct"] else (
            f"final answer {pred} instead of {gold}" if pred is not None else f"no final answer in the generation "
                                                                             f"(expected {gold})")
        return {"prompt_messages": [{"role": "user", "content": row["question"]}],
                "model_response": record["generation"], "quality_score": float(record["correct"]),
                "failure_reason": why}

    def bounds(self, metric):
        return (float("-inf"), 0.0) if metric == "token_logprob" else super().bounds(metric)


TASK = Math()
