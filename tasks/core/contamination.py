"""Benchmark contamination: training rows that are exact or near copies of benchmark items. Plain functions.

Texts are normalized (Unicode NFKC, format characters such as zero-width spaces and joiners removed, case folded,
accents removed, punctuation -> space) and split into words, so invisible characters cannot hide a copy. Two texts
are *near duplicates* when they share a run of N consecutive words (N = 13, the GPT-3 / Llama check),
or when the shorter one, between MIN_WORDS and N words long, appears whole inside the other. Texts
shorter than MIN_WORDS words are only compared exactly: a 4-word phrase occurring inside a review is
common language, not a leak.
"""

import re
import unicodedata
from dataclasses import asdict, dataclass

N = 13
MIN_WORDS = 8
_NON_WORD = re.compile(r"[\W_]+")


def normal(text: str) -> str:
    """The text as compared: NFKC, no format (Cf) characters, case folded, no combining marks."""
    text = "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf").casefold()
    return unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", text)
                                                if unicodedata.category(c) != "Mn"))


def words(text: str) -> tuple[str, ...]:
    return tuple(_NON_WORD.sub(" ", normal(text)).split())


def copies(texts: list[str], of: set[tuple[str, ...]]) -> int:
    """How many of `texts` equal (after normalization) one of the word tuples `of`: a candidate's copies of D0."""
    return sum(words(t) in of for t in texts)


def _grams(ws: tuple, n: int):
    return (ws[i:i + n] for i in range(len(ws) - n + 1))


@dataclass
class Counts:
    checked: int = 0
    exact: int = 0     # identical to a benchmark item after normalization
    near: int = 0      # near duplicate but not exact
    removed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


class BenchmarkIndex:
    """Word n-grams of the benchmark, built once and matched against every training source."""

    def __init__(self, texts: list[str], n: int = N, min_words: int = MIN_WORDS):
        self.n, self.min_words = n, min_words
        items = [words(t) for t in texts]
        self.exact = {w for w in items if w}
        self.grams = {k: set() for k in range(min_words, n + 1)}  # every k-gram of every item, k in [min, n]
        self.whole = {k: set() for k in range(min_words, n)}     # whole items of k words, k in [min, n)
        for w in items:
            for k in range(min_words, min(n, len(w)) + 1):
                self.grams[k].update(_grams(w, k))
            if min_words <= len(w) < n:
                self.whole[len(w)].add(w)

    def match(self, text: str) -> str | None:
        """'exact', 'near' or None."""
        w = words(text)
        if w in self.exact:
            return "exact"
        size = len(w)
        if size >= self.n and any(g in self.grams[self.n] for g in _grams(w, self.n)):
            return "near"  # shares a run of n words
        if self.min_words <= size < self.n and w in self.grams[size]:
            return "near"  # the whole row lies inside a benchmark item
        for k, items in self.whole.items():  # a whole short benchmark item lies inside the row
            if items and k <= size and any(g in items for g in _grams(w, k)):
                return "near"
        return None


def scan(texts: list[str], index: BenchmarkIndex) -> tuple[list[int], Counts, list[str]]:
    """Indices of contaminated texts (one per training row), the counts, and a few examples for messages."""
    hits, counts, examples = [], Counts(checked=len(texts)), []
    for i, text in enumerate(texts):
        kind = index.match(text)
        if kind:
            hits.append(i)
            setattr(counts, kind, getattr(counts, kind) + 1)
            if len(examples) < 2:
                examples.append(text[:80])
    return hits, counts, examples
