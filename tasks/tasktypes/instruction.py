"""Instruction / chat SFT: a conversation whose last assistant turn is the answer.

Data in any common format (tasks.core.chatformats) becomes one chat form. Training renders the conversation with
the model's chat template and puts the loss on assistant tokens only: with trl's assistant-only loss where the
template marks assistant tokens ({% generation %}), else as prompt (everything before the last assistant turn,
with the generation prompt) / completion (that turn) with completion-only loss — each point run says which
(param `loss_on`). A tokenizer without a chat template gets plain 'User: … / Assistant: …' turns.

Scoring: the mean log-probability per token of the reference answer (`token_logprob`, the primary metric: it ranks
reliably at small scale, where generations are mostly wrong), and, when the study's `metrics` name them, greedy
generations scored by exact match and token F1 (SQuAD normalization) and ROUGE-L (torchmetrics)."""

import re

import numpy as np

from tasks.core import chatformats
from tasks.errors import DataError
from tasks.tasktypes.base import TaskType, fit_pair, preference_hint
from tasks.tasktypes.extractive_qa import squad_scores

GENERATED = ("exact_match", "token_f1", "rouge_l")


class Instruction(TaskType):
    name = "instruction"
    generates = True
    fields = ("messages",)
    metrics = ("token_logprob", "gold_logprob", "eval_loss", *GENERATED)
    optional = GENERATED
    primary = "token_logprob"
    continuous = "token_logprob"
    per_example = {"token_logprob": "token_logprob", "exact_match": "exact_match", "token_f1": "token_f1",
                   "rouge_l": "rouge_l"}

    # ---- data -------------------------------------------------------------------------------------------------
    def read(self, ds, ref, origin, locate):
        renamed = {source: key for key, source in ref.columns.items()}  # columns: {format key: source column}
        known = {k for keys, extra in chatformats.FORMATS.values() for k in keys | extra}
        unknown = sorted(set(ref.columns) - known)
        if unknown:
            raise DataError(f"{origin}: columns: unknown key(s) {unknown}; keys of the chat formats: {', '.join(sorted(known))}")
        declared = None if ref.format == "auto" else ref.format
        first: tuple[str, int] | None = None
        rows = []
        for i, raw in enumerate(ds):
            row = {renamed.get(k, k): v for k, v in raw.items()}
            fmt = declared or chatformats.detect(row)
            if fmt is None:
                raise DataError(f"{locate(i)}: cannot tell the data format from the keys "
                                f"{sorted(k for k, v in row.items() if v is not None)}; formats tried: "
                                f"{chatformats.tried()} (or set format: in the catalog entry / data ref)"
                                f"{preference_hint(row)}")
            if first is None:
                first = (fmt, i)
            elif fmt != first[0]:
                where = [locate(k).removeprefix(f"{origin}: ") for k in (first[1], i)]
                raise DataError(f"{origin}: mixed formats in one source: {where[0]} is {first[0]}, {where[1]} is "
                                f"{fmt}; split the file by format")
            try:
                rows.append({"messages": chatformats.to_messages(row, fmt), "format": fmt})
            except chatformats.FormatError as err:
                raise DataError(f"{locate(i)}: {fmt} row: {err}") from None
        return rows

    def text(self, row):
        return " ".join(m["content"] for m in row["messages"] if m["role"] != "system")

    def profile(self, rows):
        turns = [len(r["messages"]) for r in rows]
        return {"format": rows[0].get("format", "messages") if rows else None, "turns_mean": float(np.mean(turns)),
                "multi_turn_share": float(np.mean([t > 3 for t in turns]))}

    def answer(self, row):
        return row["messages"][-1]["content"]

    def settings(self, study):
        chosen = [m for m in study.metric_names if m in GENERATED]
        return {"generate": chosen or (["judge"] if study.judge else [])}  # a judge needs generations to read

    # ---- prompts ----------------------------------------------------------------------------------------------
    def training_notes(self, tokenizer):
        if assistant_masks(tokenizer):
            return {"loss_on": "assistant turns (trl assistant_only_loss: the chat template marks them)"}
        how = "chat template" if tokenizer.chat_template else "plain 'User:/Assistant:' turns (no chat template)"
        return {"loss_on": f"last assistant turn (prompt/completion, completion-only loss; {how})"}

    def render(self, row: dict, tokenizer) -> tuple[str, str]:
        """(prompt: the conversation up to the answer with the generation prompt, completion: the answer)."""
        history, answer = row["messages"][:-1], row["messages"][-1]["content"]
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=True), answer
        turns = "".join(f"{m['role'].title()}: {m['content']}\n" for m in history)
        return f"{turns}Assistant:", f" {answer}"

    def fitted(self, rows: list[dict], tokenizer, max_length: int) -> list[tuple[str, str]]:
        """render() per row, cut to fit max_length (base.fit_pair: the prompt's start, then the answer's end)."""
        return [fit_pair(*self.render(row, tokenizer), tokenizer, max_length) for row in rows]

    def pairs(self, rows, context, tokenizer, max_length):
        if assistant_masks(tokenizer):
            return [{"messages": r["messages"]} for r in rows]
        return [{"prompt": p, "completion": c} for p, c in self.fitted(rows, tokenizer, max_length)]

    # ---- scoring ----------------------------------------------------------------------------------------------
    def predict(self, rows, context, scorer):
        prompts = [p for p, _ in self.fitted(rows, scorer.tokenizer, scorer.max_length)]
        answers = [self.render(r, scorer.tokenizer)[1] for r in rows]
        scored = scorer.logprobs(prompts, [[a] for a in answers])
        records = [{"gold": self.answer(r), "gold_logprob": s[0][0], "gold_tokens": s[0][1],
                    "token_logprob": s[0][0] / s[0][1]} for r, s in zip(rows, scored)]
        if context.get("generate"):
            for rec, text in zip(records, scorer.generate(prompts)):
                rec.update(generated_scores(text.strip(), rec["gold"]), prediction=text.strip())
        return records

    def review(self, row, record, context):
        system = [m for m in row["messages"][:1] if m["role"] == "system"]
        user = [m for m in row["messages"][:-1] if m["role"] == "user"][-1:]
        per_token = float(np.exp(record["token_logprob"]))
        reference = row["messages"][-1]["content"]
        reference = repr(reference if len(reference) <= 200 else reference[:200] + "...")
        if "token_f1" in record:
            score, why = record["token_f1"], f"answer mismatch: token F1 {record['token_f1']:.2f} against the reference {reference}"
        else:
            score, why = per_token, (f"reference answer {reference} unlikely: {per_token:.2f} probability per token "
                                     "(no generation)")
        return {"prompt_messages": [*system, *user], "model_response": record.get("prediction", ""),
                "quality_score": float(score), "failure_reason": why}

    def bounds(self, metric):
        return (-np.inf, 0.0) if metric == "token_logprob" else super().bounds(metric)


def assistant_masks(tokenizer) -> bool:
    """The chat template marks assistant tokens ({% generation %}), so trl can compute the loss on them alone."""
    return bool(tokenizer.chat_template) and re.search(r"\{%-?\s*generation\s*-?%\}", tokenizer.chat_template) is not None


def generated_scores(prediction: str, reference: str) -> dict:
    """Exact match and token F1 after SQuAD normalization, and ROUGE-L F-measure."""
    from torchmetrics.functional.text.rouge import rouge_score

    em, f1 = squad_scores(prediction, [reference])
    rouge = float(rouge_score(prediction, reference, rouge_keys="rougeL")["rougeL_fmeasure"]) if prediction else 0.0
    return {"exact_match": em, "token_f1": f1, "rouge_l": rouge}


TASK = Instruction()
