"""Build the D0 ⊕ Dk mixture for one size: deterministic for a seed, nested across sizes."""

import numpy as np


def _take(n_rows: int, n: int, rng: np.random.Generator) -> list[int]:
    """The first n indices of a seeded permutation, cycling through fresh permutations when n > n_rows."""
    out: list[int] = []
    while len(out) < n:
        out += rng.permutation(n_rows).tolist()
    return out[:n]


def split_counts(size: int, d0_share: float, is_control: bool) -> tuple[int, int]:
    """(rows from D0, rows from the candidate) for one mixture size."""
    n0 = size if is_control else round(size * d0_share)
    return n0, size - n0


def mixture(d0: list[dict], dk: list[dict] | None, size: int, d0_share: float, seed: int,
            d0_seed: int | None = None) -> list[dict]:
    """Rows of one mixture, shuffled. The same seed gives prefixes of the same permutations, so the
    size-128 mixture contains the size-64 one (less noise between sizes). dk=None is the control arm.
    `seed` (one per point seed) draws the candidate rows and the order; `d0_seed` (the study seed) draws the
    D0 rows, so every arm and seed trains on the same D0 rows at a size."""
    n0, nk = split_counts(size, d0_share, dk is None)
    rng0 = np.random.default_rng([seed if d0_seed is None else d0_seed, 0])
    rows = [dict(r, origin="d0") for r in (d0[i] for i in _take(len(d0), n0, rng0))]
    if nk:
        rows += [dict(r, origin="candidate") for r in (dk[i] for i in _take(len(dk), nk, np.random.default_rng([seed, 1])))]
    order = np.random.default_rng([seed, 2, size]).permutation(len(rows))
    return [rows[i] for i in order]


def unused_d0(n_d0: int, size: int, d0_share: float, d0_seed: int) -> list[int]:
    """Indices of the D0 rows that no candidate arm's mixture uses as D0, at any size up to `size`: the pool a
    placebo arm draws its 'candidate' rows from, so it is D0's distribution without repeating D0's rows."""
    n0, _ = split_counts(size, d0_share, False)
    used = set(_take(n_d0, n0, np.random.default_rng([d0_seed, 0])))
    return [i for i in range(n_d0) if i not in used]


def shortfall(n_available: int, n_needed: int) -> int:
    """How many rows a size needs beyond what a source has (0 when it fits)."""
    return max(0, n_needed - n_available)
