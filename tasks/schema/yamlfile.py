"""Read YAML with line numbers, and turn pydantic errors into 'file:line: field: message'."""

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tasks.errors import StudyInvalid


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Walk the composed YAML node tree along a pydantic error location; return the 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(key)]
            if not match:  # a required field that is missing: the line of the mapping that lacks it
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        line = node.start_mark.line + 1
    return line


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    """Parse a YAML file; a syntax error is reported with its line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyInvalid([f"{path}: no such file"], str(path)) from None
    except IsADirectoryError:
        raise StudyInvalid([f"{path}: a folder, not a YAML file"], str(path)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise StudyInvalid([f"{path}: cannot be read as UTF-8 text ({type(err).__name__})"], str(path)) from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise StudyInvalid([f"{where}: not valid YAML: {getattr(err, 'problem', err)}"], str(path)) from None


def _keys_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names valid where an unknown key sits (loc without the key), for a 'did you mean'."""
    for key in loc:
        fields = getattr(model, "model_fields", {})
        if key not in fields:
            if isinstance(key, int) or key in ("list", "dict"):
                continue
            return []
        hint = fields[key].annotation
        model = next((t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return list(getattr(model, "model_fields", {}))


def _unknown(model, loc: tuple) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _keys_at(model, loc[:-1]), n=1, cutoff=0.6)
    return f"unknown key; did you mean '{close[0]}'?" if close else "unknown key"


def describe_errors(err: ValidationError, path: Path, node: yaml.Node | None, prefix: tuple = (),
                    model: type[BaseModel] | None = None, given: dict[str, str] | None = None) -> list[str]:
    """One line per pydantic error: file:line: field.path: message (an unknown key with the closest valid one).
    given: dotted field -> the command-line option that set it, named instead of the file's line."""
    out = []
    for e in err.errors():
        loc = prefix + tuple(x for x in e["loc"] if not str(x).startswith("function-"))
        field = ".".join(str(x) for x in loc) or "(top level)"
        option = next((o for f, o in (given or {}).items() if field == f or field.startswith(f + ".")), None)
        if option:
            out.append(f"{path} ({option}): {field}: {e['msg'].removeprefix('Value error, ')}")
            continue
        line = _line_of(node, loc)
        msg = e["msg"].removeprefix("Value error, ")  # our validators' messages stand on their own
        if e["type"] == "extra_forbidden":
            msg = _unknown(model, loc)
        if given and not loc:  # a check across fields: the options may be why it fails
            msg += f" (with {', '.join(sorted(set(given.values())))})"
        out.append(f"{path}:{line}: {field}: {msg}")
    return out


def load_model_file(model: type[BaseModel], path: Path,
                    overrides: dict[str, tuple[Any, str]] | None = None) -> BaseModel:
    """Load one YAML file into a pydantic model, or raise StudyInvalid listing every problem. overrides: dotted
    field -> (value, the option that gave it), set in the file's data before it is validated, so they are checked
    like the file's own values."""
    from tasks.schema.presets import override

    data, node = read_yaml(path)
    if not isinstance(data, dict):
        raise StudyInvalid([f"{path}:1: expected a mapping of keys to values"], str(path))
    overrides = overrides or {}
    try:
        return model.model_validate(override(data, {k: v for k, (v, _) in overrides.items()}))
    except ValidationError as err:
        given = {k: o for k, (_, o) in overrides.items()}
        raise StudyInvalid(describe_errors(err, path, node, model=model, given=given), str(path)) from None
