"""The judge metric: a judge model reads each generation (through the study's template) and answers with a verdict
word; the verdict's score is the example's value of the metric (e.g. SAFE -> 1, UNSAFE -> 0: safety_rate). The
judge is loaded once per worker, prompts are batched, every verdict is kept per example, and an answer without a
verdict word is counted (judge_unparsable) and scored with the study's unparsable_score — never dropped."""

import re

from tasks.backends import models
from tasks.backends.scorer import Scorer, load_model
from tasks.schema.sources import ModelRef

_JUDGES: dict[str, tuple] = {}  # resolved model folder -> (model, tokenizer), one per worker


def _load(ref: ModelRef):
    folder = str(models.resolve_model(ref))
    if folder not in _JUDGES:
        loaded = load_model(folder, ref.trust_remote_code)
        _JUDGES.clear()
        _JUDGES[folder] = loaded
    return _JUDGES[folder]


def verdict(answer: str, verdicts: dict[str, float]) -> str | None:
    """The first verdict word in the judge's answer (whole word, any case; longer words first at one position)."""
    words = sorted(verdicts, key=len, reverse=True)
    found = re.search(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, words)) + r")(?![A-Za-z0-9_])", answer, re.I)
    if not found:
        return None
    return next(w for w in words if w.lower() == found.group(1).lower())


def prompt_text(template: str, prompt: str, response: str, tokenizer) -> str:
    text = template.format(prompt=prompt, response=response)
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def judge_records(rows: list[dict], records: list[dict], kind, settings: dict, preset) -> int:
    """Add judge_output, judge_verdict and the metric to every record; return how many answers had no verdict."""
    model, tokenizer = _load(ModelRef(**settings["model"]))
    responses = [str(r.get("generation", r.get("prediction")) or "") for r in records]
    prompts = [prompt_text(settings["template"], kind.text(row), resp, tokenizer) for row, resp in zip(rows, responses)]
    scorer = Scorer(model, tokenizer, preset.model_copy(update={"max_new_tokens": settings["max_new_tokens"]}),
                    models.use_bf16(preset.bf16))
    unparsable = 0
    for rec, answer in zip(records, scorer.generate(prompts)):
        word = verdict(answer, settings["verdicts"])
        unparsable += word is None
        rec.update({"judge_output": answer.strip(), "judge_verdict": word,
                    settings["metric"]: settings["verdicts"][word] if word else settings["unparsable_score"]})
    return unparsable
