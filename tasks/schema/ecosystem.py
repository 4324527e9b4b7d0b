"""Dataset entries written for axolotl (`datasets:` items) or LLaMA-Factory (`dataset_info.json` entries) read as
ours: their keys are mapped where they mean the same thing, and refused with what to write instead where they do not.

    axolotl        {path: tatsu-lab/alpaca, type: alpaca, split: train, name: CONFIG, field_messages: conversations}
    LLaMA-Factory  {file_name: data.json | hf_hub_url: org/x, formatting: alpaca | sharegpt, subset, split,
                    columns: {prompt: instruction, query: input, response: output, system: system, messages: conversations}}
"""

FORMATS = {"alpaca": "alpaca", "sharegpt": "sharegpt", "chat_template": "messages", "messages": "messages",
           "openai": "messages"}  # their format names -> ours; axolotl's 'alpaca:chatml' style counts by its prefix
LF_COLUMNS = {"prompt": "instruction", "query": "input", "response": "output"}  # LLaMA-Factory's alpaca columns
LF_SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                    "system_tag": "system"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}
UNSUPPORTED = {"data_files": "give the file itself as 'source' (or 'path' in a catalog entry)",
               "history": "put earlier turns in a sharegpt 'conversations' or a 'messages' list",
               "ranking": "preference pairs are a study's task: set `task: preference`",
               "ms_hub_url": "ModelScope is not read; give a Hub id or a local file",
               "ds_type": "the file type is taken from the file's suffix (.json, .jsonl, .csv, .parquet)"}


def _format(value, key: str) -> str:
    name = str(value).split(":")[0]
    if name not in FORMATS:
        raise ValueError(f"{key}: '{value}' has no equivalent here; formats read: {', '.join(sorted(FORMATS))} "
                         f"(as format: alpaca | sharegpt | messages | prompt_completion)")
    return FORMATS[name]


def _move(out: dict, theirs: str, ours: str) -> None:
    if theirs in out:
        if ours in out:
            raise ValueError(f"'{theirs}' and '{ours}' both name the {ours}; give one")
        out[ours] = out.pop(theirs)


def dataset_spellings(data, entry: bool):
    """Map axolotl / LLaMA-Factory keys of one dataset entry onto ours (entry=True: a catalog entry, whose source
    keys are `path` and `hub_id`; else a study's data reference, whose one key is `source`)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for key, hint in UNSUPPORTED.items():
        if key in out:
            raise ValueError(f"{key}: not read here: {hint}")
    llama_factory = "formatting" in out or "file_name" in out or "hf_hub_url" in out
    for key in ("type", "formatting"):
        if key in out:
            mapped = _format(out.pop(key), key)
            if out.setdefault("format", mapped) != mapped:
                raise ValueError(f"'{key}' says {mapped} but 'format' (or 'type'/'formatting') says {out['format']}; give one")
    tags = out.pop("tags", None)
    if tags is not None and not isinstance(tags, dict):
        raise ValueError(f"tags: a mapping of role tags (role_tag, content_tag, ...), not {type(tags).__name__}")
    if isinstance(tags, dict):
        full = {k: tags.get(k, LF_SHAREGPT_TAGS[k]) for k in LF_SHAREGPT_TAGS}
        if full == OPENAI_TAGS:  # sharegpt with role/content and user/assistant: the messages format
            out["format"] = "messages"
        elif full != LF_SHAREGPT_TAGS or set(tags) - set(LF_SHAREGPT_TAGS):
            raise ValueError(f"tags: role tags other than {LF_SHAREGPT_TAGS} or {OPENAI_TAGS} are not read; "
                             f"rename the roles in the data")
    _move(out, "file_name", "path" if entry else "source")
    _move(out, "hf_hub_url", "hub_id" if entry else "source")
    if not entry:
        _move(out, "path", "source")  # axolotl's path: a Hub id or a local file
        _move(out, "name", "subset")  # axolotl's name: the Hub configuration
    if "field_messages" in out:
        out.setdefault("columns", {})
        out["columns"] = {**out["columns"], "messages" if out.get("format") == "messages" else "conversations":
                          out.pop("field_messages")}
    columns = out.get("columns")
    if isinstance(columns, dict) and (llama_factory or {"query", "response"} & set(columns)):
        theirs = {**LF_COLUMNS, "messages": "messages" if out.get("format") == "messages" else "conversations"}
        out["columns"] = {theirs.get(k, k): v for k, v in columns.items()}
    return out
