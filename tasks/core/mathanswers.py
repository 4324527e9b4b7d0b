"""Final answers of math word problems (GSM8K-style): extraction from a worked solution and numeric normalization.

Extraction tries, in order: '#### 42' (GSM8K), '\\boxed{42}' (the last one), 'the answer is 42', and the last
number in the text. Normalization removes thousands separators, currency and percent signs, units and other
words around the number, and a trailing '.0': '$1,234.50' -> '1234.5', '9 apples' -> '9', '-3.0' -> '-3'."""

import re

NUMBER = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_HASHES = re.compile(r"####\s*(.+)")
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*\$?\s*(" + NUMBER + ")", re.IGNORECASE)
_NUMBERS = re.compile(NUMBER)
_CLOCK = re.compile(r"\d:\d")
_CALC = re.compile(r"<<[^>]*>>")  # GSM8K's calculator annotations: 48/2 = <<48/2=24>>24


def normalize_number(text: str) -> str | None:
    """The first number in text, as a canonical decimal string; None when there is none."""
    found = _NUMBERS.search(text.replace("−", "-"))  # the Unicode minus sign
    if not found:
        return None
    raw = found.group(0).replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def _boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...}, braces balanced."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def extract(text: str) -> str | None:
    """The final answer of a solution or a generation, normalized; None when none can be found."""
    text = text.replace("−", "-")  # the Unicode minus sign
    hashes = _HASHES.search(text)
    if hashes:
        return normalize_number(hashes.group(1))
    boxed = _boxed(text)
    if boxed is not None:
        return normalize_number(boxed)
    said = _ANSWER_IS.findall(text)
    if said:
        return normalize_number(said[-1])
    if len(text.split()) <= 4 and _CLOCK.search(text):  # a bare '3:30 p.m.' or '3:4' is a time or a ratio,
        return None  # not one number
    numbers = _NUMBERS.findall(_CALC.sub("", text))
    return normalize_number(numbers[-1]) if numbers else None


def same(a: str | None, b: str | None) -> bool:
    """Two normalized answers are equal as numbers (a relative tolerance of 1e-6 for decimals)."""
    if a is None or b is None:
        return False
    x, y = float(a), float(b)
    return x == y or abs(x - y) <= 1e-6 * max(abs(x), abs(y))


def solution_text(solution: str, final: str) -> str:
    """The training target: the worked steps (calculator annotations removed) ending in '#### <final>'; a bare
    answer ('9 apples') becomes '#### 9'."""
    text = _CALC.sub("", solution)
    hashes = _HASHES.search(text)
    steps = (text[:hashes.start()] if hashes else text).strip()
    if not hashes and len(steps.split()) <= 3 and re.match(r"\$?(" + NUMBER + ")", steps) and normalize_number(steps) == final:
        steps = ""
    return f"{steps}\n#### {final}" if steps else f"#### {final}"
