"""Frames and values of the sandbox channel (used by sandbox_runner.py on both sides, inside the sandbox; standard
library only). Frames: 4-byte big-endian length + JSON. Values cross as tagged JSON: only builtin data, builtin
types, and instances of classes the receiving side defines itself, are ever rebuilt — never code."""

import collections
import json
import struct

MAX_FRAME = 32 << 20
TYPES = {t.__name__: t for t in (int, float, str, bool, bytes, bytearray, complex, list, tuple, dict, set, frozenset,
                                 type(None), object)}


def send(stream, message: dict) -> None:
    data = json.dumps(message).encode()
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def receive(stream) -> dict:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError("the other side closed the channel")
    size = struct.unpack(">I", head)[0]
    if size > MAX_FRAME:
        raise ValueError(f"a frame of {size} bytes (at most {MAX_FRAME})")
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the channel mid-frame")
    message = json.loads(data)
    if not isinstance(message, dict):
        raise ValueError("a frame that is not an object")
    return message


def encode(x, depth: int = 0):
    """A value as tagged JSON; TypeError for what cannot cross (functions, modules, open files...)."""
    if depth > 200:
        raise ValueError("a value nested more than 200 levels deep")
    if x is None or type(x) in (bool, int, float, str):
        return x
    d = depth + 1
    for kind, types in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(x, types):  # subclasses (enums, named ints) cross as their base type
            return {"$": kind, "v": types(x)}
    if isinstance(x, list):
        return [encode(v, d) for v in x]
    if isinstance(x, tuple):
        return {"$": "tuple", "v": [encode(v, d) for v in x]}
    if isinstance(x, (set, frozenset)):
        return {"$": type(x).__name__ if type(x) in (set, frozenset) else "set", "v": [encode(v, d) for v in x]}
    if isinstance(x, collections.deque):
        return {"$": "deque", "v": [encode(v, d) for v in x]}
    if isinstance(x, dict):
        return {"$": "dict", "v": [[encode(k, d), encode(v, d)] for k, v in x.items()]}
    if isinstance(x, (bytes, bytearray)):
        return {"$": type(x).__name__ if type(x) in (bytes, bytearray) else "bytes", "v": x.hex()}
    if isinstance(x, complex):
        return {"$": "complex", "v": [x.real, x.imag]}
    if isinstance(x, range):
        return {"$": "range", "v": [x.start, x.stop, x.step]}
    if any(x is t for t in TYPES.values()):
        return {"$": "type", "v": x.__name__}
    if hasattr(type(x), "__next__") and hasattr(type(x), "__iter__"):  # a generator, map, zip...: its items
        return {"$": "iter", "v": [encode(v, d) for v, _ in zip(x, range(1_000_000))]}
    if hasattr(x, "__dict__") and isinstance(getattr(x, "__dict__", None), dict) and not callable(x):
        return {"$": "obj", "cls": type(x).__name__, "v": encode(dict(vars(x)), d)}
    raise TypeError(f"a {type(x).__name__} cannot cross the sandbox (only data does)")


def decode(x, classes: dict):
    """Tagged JSON -> a value built from builtins, or an instance of a class of this side's own `classes`."""
    if isinstance(x, list):
        return [decode(v, classes) for v in x]
    if not isinstance(x, dict):
        return x
    tag, v = x.get("$"), x.get("v")
    simple = {"bool": bool, "int": int, "float": float, "str": str}
    if tag in simple:
        return simple[tag](v)
    if tag in ("tuple", "set", "frozenset", "deque", "iter"):
        items = [decode(i, classes) for i in v]
        return {"tuple": tuple, "set": set, "frozenset": frozenset, "deque": collections.deque, "iter": iter}[tag](items)
    if tag == "dict":
        return {decode(k, classes): decode(val, classes) for k, val in v}
    if tag in ("bytes", "bytearray"):
        return (bytes if tag == "bytes" else bytearray)(bytes.fromhex(v))
    if tag == "complex":
        return complex(float(v[0]), float(v[1]))
    if tag == "range":
        return range(int(v[0]), int(v[1]), int(v[2]))
    if tag == "type" and v in TYPES:
        return TYPES[v]
    if tag == "obj" and isinstance(classes.get(x.get("cls")), type):
        obj = object.__new__(classes[x["cls"]])
        obj.__dict__.update(decode(v, classes))
        return obj
    raise ValueError(f"not a value this side can rebuild: {str(x)[:80]}")
