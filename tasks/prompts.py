"""Rows -> (prompt, completion) pairs: the same text for training and for scoring."""

TEMPLATES = {
    "classification": ("Classify the text. Labels: {labels}.\nText: {text}\nLabel:", " {label}"),
    "extractive_qa": ("Answer with a span copied from the context.\nContext: {context}\nQuestion: {question}\nAnswer:",
                      " {answer}"),
}
LONG_FIELD = {"classification": "text", "extractive_qa": "context"}


def completion(task: str, value: str) -> str:
    return TEMPLATES[task][1].format(label=value, answer=value)


def prompt(row: dict, task: str, labels: list[str], tokenizer, max_length: int, reserve: int) -> str:
    """The prompt for a row; its long field is cut (by tokens) so prompt + `reserve` answer tokens fit max_length."""
    template = TEMPLATES[task][0]
    field = LONG_FIELD[task]
    fields = dict(row, labels=", ".join(labels))
    full = template.format(**fields)
    n_full = len(tokenizer(full, add_special_tokens=False).input_ids)
    if n_full + reserve <= max_length:
        return full
    ids = tokenizer(row[field], add_special_tokens=False).input_ids
    keep = max(1, len(ids) - (n_full + reserve - max_length))
    return template.format(**dict(fields, **{field: tokenizer.decode(ids[:keep])}))


def answer_reserve(task: str, labels: list[str], rows: list[dict], tokenizer) -> int:
    """Tokens to keep free for the answer (+1 for EOS): the longest label, or the longest gold answer."""
    values = labels if task == "classification" else [a for r in rows for a in r["answers"][:1]]
    return 1 + max(len(tokenizer(completion(task, v), add_special_tokens=False).input_ids) for v in values)


def pairs(rows: list[dict], task: str, labels: list[str], tokenizer, max_length: int) -> list[dict]:
    """prompt/completion records for trl's SFTTrainer (loss on the completion only)."""
    reserve = answer_reserve(task, labels, rows, tokenizer)
    gold = (lambda r: r["label"]) if task == "classification" else (lambda r: r["answers"][0])
    return [{"prompt": prompt(r, task, labels, tokenizer, max_length, reserve), "completion": completion(task, gold(r))}
            for r in rows]
