"""Instruction/chat data in the common formats, each normalized to one chat form: a list of
{"role": "system"|"user"|"assistant", "content": str} ending in an assistant turn.

  messages           {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}  (OpenAI)
  prompt_completion  {"prompt": str, "completion": str}   (or trl's conversational form: lists of messages)
  alpaca             {"instruction": str, "input": str (optional), "output": str}
  sharegpt           {"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}

A format is detected per row from its keys; a file whose rows are in different formats is refused."""

FORMATS = {  # format -> (keys that identify it, keys it may also have)
    "messages": ({"messages"}, set()),
    "prompt_completion": ({"prompt", "completion"}, set()),
    "alpaca": ({"instruction", "output"}, {"input", "system"}),
    "sharegpt": ({"conversations"}, {"system"}),
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "model": "assistant"}


class FormatError(ValueError):
    """A row that is not valid in its format; the message says why (the caller adds where)."""


def detect(row: dict) -> str | None:
    """The format whose identifying keys the row has (non-empty values), or None."""
    present = {k for k, v in row.items() if v is not None}
    found = [name for name, (keys, _) in FORMATS.items() if keys <= present]
    return found[0] if len(found) == 1 else None


def tried() -> str:
    return "; ".join(f"{name} (keys: {', '.join(sorted(keys))})" for name, (keys, _) in FORMATS.items())


def to_messages(row: dict, fmt: str) -> list[dict]:
    """One row of the given format -> chat messages, validated; FormatError says what is wrong."""
    if fmt == "messages":
        messages = _messages(row.get("messages"), "messages", "role", "content", {r: r for r in ROLES})
    elif fmt == "sharegpt":
        messages = _messages(row.get("conversations"), "conversations", "from", "value", SHAREGPT_ROLES)
        messages = _with_system(row, messages)
    elif fmt == "alpaca":
        instruction, extra, output = (_text(row, k) for k in ("instruction", "input", "output"))
        if not instruction.strip():
            raise FormatError("empty 'instruction'")
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = _with_system(row, [{"role": "user", "content": user}, {"role": "assistant", "content": output}])
    elif fmt == "prompt_completion":
        prompt, completion = row.get("prompt"), row.get("completion")
        if isinstance(prompt, list) or isinstance(completion, list):  # trl's conversational prompt/completion
            messages = (_messages(prompt, "prompt", "role", "content", {r: r for r in ROLES}, end=False)
                        + _messages(completion, "completion", "role", "content", {r: r for r in ROLES}, end=False))
        else:
            messages = [{"role": "user", "content": _text(row, "prompt")},
                        {"role": "assistant", "content": _text(row, "completion")}]
    else:
        raise FormatError(f"unknown format '{fmt}'; formats: {', '.join(FORMATS)}")
    check(messages)
    return messages


def check(messages: list[dict]) -> None:
    """The rules every normalized conversation keeps."""
    if not any(m["role"] == "user" for m in messages):
        raise FormatError("no user turn")
    if messages[-1]["role"] != "assistant":
        raise FormatError(f"the conversation ends in a '{messages[-1]['role']}' turn, not an assistant turn")
    if any(m["role"] == "system" for m in messages[1:]):
        raise FormatError("a system turn after the first turn")
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise FormatError(f"turn {i}: empty assistant turn")


def turns(value, key: str) -> list[dict]:
    """A list of {role, content} turns (OpenAI roles), checked turn by turn; it may end in any role."""
    return _messages(value, key, "role", "content", {r: r for r in ROLES}, end=False)


def _messages(turns, key: str, role_key: str, content_key: str, roles: dict, end: bool = True) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise FormatError(f"'{key}' must be a non-empty list of turns, got {type(turns).__name__}")
    out = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise FormatError(f"{key}[{i}]: a turn must be an object with '{role_key}' and '{content_key}', "
                              f"got {type(turn).__name__}")
        role, content = turn.get(role_key), turn.get(content_key)
        if role not in roles:
            raise FormatError(f"{key}[{i}]: unknown {role_key} {role!r}; valid: {', '.join(roles)}")
        if not isinstance(content, str):
            raise FormatError(f"{key}[{i}]: '{content_key}' must be a string, got {type(content).__name__}")
        out.append({"role": roles[role], "content": content})
    return out


def _with_system(row: dict, messages: list[dict]) -> list[dict]:
    system = row.get("system")
    if system is None or system == "":
        return messages
    if not isinstance(system, str):
        raise FormatError(f"'system' must be a string, got {type(system).__name__}")
    return [{"role": "system", "content": system}, *messages]


def _text(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise FormatError(f"'{key}' must be a string, got {type(value).__name__}")
    return value
