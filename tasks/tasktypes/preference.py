"""Preference data: a prompt, a chosen and a rejected response — trained with DPO (trl's DPOTrainer + LoRA).

Rows come in trl's preference forms, detected per row:
  standard        {"prompt": str, "chosen": str, "rejected": str}
  conversational  {"prompt": [turns], "chosen": [assistant turn], "rejected": [assistant turn]}
  implicit prompt {"chosen": [turns ... assistant], "rejected": [turns ... assistant]}: the prompt is the turns both
                  share, which must be identical ("prompt mismatch" otherwise)
Each is checked with its file:line: a missing or empty chosen/rejected, identical chosen and rejected, a prompt
mismatch. SFT data given to a preference study (or preference data to an SFT study) is refused naming the format found.

Scoring is the implicit DPO reward against the base model (the reference; scored once per worker):
r(y) = beta * (log p_adapter(y | x) - log p_base(y | x)). `reward_margin` (the primary metric: continuous, it ranks
at small scale) is r(chosen) - r(rejected) averaged over the benchmark's pairs; `reward_accuracy` is the share of
pairs whose chosen response gets the higher reward (ties count half); gold_logprob / eval_loss are those of the
chosen response. Naming exact_match, token_f1 or rouge_l in the study's `metrics` also generates a greedy answer to
each benchmark prompt and scores it against the chosen response: the task metric beside the preference reward."""

import numpy as np

from tasks.core import chatformats
from tasks.errors import DataError
from tasks.tasktypes.base import TaskType, fit_pair
from tasks.tasktypes.instruction import GENERATED, generated_scores
from tasks.tasktypes.instruction import TASK as INSTRUCTION

PAIR = ("prompt", "chosen", "rejected")


class Preference(TaskType):
    name = "preference"
    method = "dpo"
    needs_reference = True
    fields = PAIR
    generates = True  # when the study names a generated-answer metric
    metrics = ("reward_margin", "reward_accuracy", "gold_logprob", "eval_loss", *GENERATED)
    optional = GENERATED
    primary = "reward_margin"
    continuous = "reward_margin"
    per_example = {"reward_margin": "reward_margin", "reward_accuracy": "reward_accuracy",
                   **{m: m for m in GENERATED}}

    # ---- data -------------------------------------------------------------------------------------------------
    def read(self, ds, ref, origin, locate):
        renamed = {source: key for key, source in ref.columns.items()}  # columns: {pair field: source column}
        unknown = sorted(set(ref.columns) - set(PAIR))
        if unknown:
            raise DataError(f"{origin}: columns: unknown field(s) {unknown}; preference fields: {', '.join(PAIR)}")
        rows = []
        for i, raw in enumerate(ds):
            row = {renamed.get(k, k): v for k, v in raw.items()}
            try:
                rows.append(to_pair(row))
            except chatformats.FormatError as err:
                raise DataError(f"{locate(i)}: {err}") from None
        return rows

    def text(self, row):
        return " ".join([*(m["content"] for m in row["prompt"] if m["role"] != "system"), row["chosen"]])

    def answer(self, row):
        return row["chosen"]

    def settings(self, study):
        """beta, and whether to generate: the study's `metrics` naming exact_match, token_f1 or rouge_l scores a
        greedy answer to each benchmark prompt against its chosen response (the task metric beside the reward)."""
        return {"beta": study.training.dpo_beta, "generate": [m for m in study.metric_names if m in GENERATED]}

    # ---- prompts ----------------------------------------------------------------------------------------------
    def fitted(self, rows: list[dict], tokenizer, max_length: int) -> list[tuple[str, str, str]]:
        """(prompt, chosen, rejected) rendered with the chat template; the prompt is cut to fit its longer response,
        then each response to what is left (base.fit_pair)."""
        out = []
        for row in rows:
            prompt, chosen = INSTRUCTION.render(as_chat(row, "chosen"), tokenizer)
            rejected = INSTRUCTION.render(as_chat(row, "rejected"), tokenizer)[1]
            longer = max(chosen, rejected, key=lambda t: len(tokenizer(t, add_special_tokens=False).input_ids))
            prompt = fit_pair(prompt, longer, tokenizer, max_length)[0]
            out.append((prompt, fit_pair(prompt, chosen, tokenizer, max_length)[1],
                        fit_pair(prompt, rejected, tokenizer, max_length)[1]))
        return out

    def pairs(self, rows, context, tokenizer, max_length):
        """trl's standard preference records (prompt already rendered with the chat template)."""
        return [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in self.fitted(rows, tokenizer, max_length)]

    # ---- scoring ----------------------------------------------------------------------------------------------
    def predict(self, rows, context, scorer):
        fitted = self.fitted(rows, scorer.tokenizer, scorer.max_length)
        scored = scorer.logprobs([p for p, _, _ in fitted], [[c, r] for _, c, r in fitted])
        reference = scorer.reference or [None] * len(rows)  # None: this is the reference model itself
        beta, records = context.get("beta", 0.1), []
        for (prompt, chosen, rejected), ((lc, nc), (lr, nr)), ref in zip(fitted, scored, reference):
            rc, rr = (lc, lr) if ref is None else (ref["chosen_logprob"], ref["rejected_logprob"])
            margin = beta * ((lc - rc) - (lr - rr))
            records.append({"gold": chosen, "gold_logprob": lc, "gold_tokens": nc, "chosen_logprob": lc,
                            "rejected_logprob": lr, "rejected_tokens": nr, "reward_chosen": beta * (lc - rc),
                            "reward_rejected": beta * (lr - rr), "reward_margin": margin,
                            "reward_accuracy": 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0})
        if context.get("generate") and scorer.reference is not None:  # the reference model's own answers: not needed
            for rec, text in zip(records, scorer.generate([p for p, _, _ in fitted])):
                rec.update(generated_scores(text.strip(), rec["gold"]), prediction=text.strip())
        return records

    def review(self, row, record, context):
        margin = record["reward_margin"]
        return {"prompt_messages": row["prompt"], "model_response": row["rejected"],
                "quality_score": float(1 / (1 + np.exp(-margin))),
                "failure_reason": (f"prefers the rejected response shown over the chosen {row['chosen'][:200]!r}: "
                                   f"reward margin {margin:+.3f} (implicit DPO reward, beta {context.get('beta', 0.1)})")}

    def bounds(self, metric):
        return (-np.inf, np.inf) if metric == "reward_margin" else super().bounds(metric)


def as_chat(row: dict, which: str) -> dict:
    return {"messages": [*row["prompt"], {"role": "assistant", "content": row[which]}]}


def to_pair(row: dict) -> dict:
    """One row in any preference form -> {"prompt": [turns], "chosen": str, "rejected": str}; FormatError says what
    is wrong, and names the SFT format when the row is one."""
    present = {k for k, v in row.items() if v is not None}
    if not {"chosen", "rejected"} & present:
        sft = chatformats.detect(row)
        found = f"{sft} rows (an SFT format)" if sft else f"keys {sorted(present)}"
        raise chatformats.FormatError(f"found {found}, not preference pairs: a preference study (training.method: "
                                      "dpo) needs 'prompt', 'chosen' and 'rejected' (or chosen/rejected conversations)")
    for key in ("chosen", "rejected"):
        value = row.get(key)
        if value is not None and not isinstance(value, (str, list)):
            raise chatformats.FormatError(f"'{key}' must be a string or a list of turns, got {type(value).__name__}")
        if not (value.strip() if isinstance(value, str) else value):
            raise chatformats.FormatError(f"missing or empty '{key}'")
    prompt, chosen, rejected = row.get("prompt"), row["chosen"], row["rejected"]
    if isinstance(prompt, list):
        head = chatformats.turns(prompt, "prompt")
    elif isinstance(prompt, str) and prompt.strip():
        head = [{"role": "user", "content": prompt}]
    else:
        head = []
    if isinstance(chosen, list) or isinstance(rejected, list):  # conversational: the responses are turns
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise chatformats.FormatError("'chosen' and 'rejected' must both be strings or both conversations")
        c_turns, r_turns = chatformats.turns(chosen, "chosen"), chatformats.turns(rejected, "rejected")
        for key, turns in (("chosen", c_turns), ("rejected", r_turns)):
            if turns[-1]["role"] != "assistant" or not turns[-1]["content"].strip():
                raise chatformats.FormatError(f"'{key}' must end in a non-empty assistant turn")
        if c_turns[:-1] != r_turns[:-1]:
            k = next(i for i, (a, b) in enumerate(zip(c_turns[:-1] + [None], r_turns[:-1] + [None])) if a != b)
            raise chatformats.FormatError(f"prompt mismatch: 'chosen' and 'rejected' differ at turn {k}, before their "
                                          "last turn; both must continue the same prompt")
        head, chosen, rejected = head + c_turns[:-1], c_turns[-1]["content"], r_turns[-1]["content"]
    elif not head:
        raise chatformats.FormatError("missing or empty 'prompt' (string chosen/rejected need an explicit prompt)")
    if not any(m["role"] == "user" for m in head):
        raise chatformats.FormatError("the prompt has no user turn")
    if chosen.strip() == rejected.strip():
        raise chatformats.FormatError("'chosen' and 'rejected' are identical: a pair must prefer one response")
    return {"prompt": head, "chosen": chosen, "rejected": rejected}


TASK = Preference()
