"""How often the screen is right: its order of candidates against a trained ranking's, on the candidates both have."""

from scipy.stats import spearmanr


def agreement(screened: list[str], trained: list[str], k: int = 3) -> dict:
    """Both lists best first. Spearman's rho, the share of pairwise decisions (which of two is better) the screen got
    right, how many pairs, and whether the trained winner was in the screen's top k. Empty when fewer than two
    candidates are in both."""
    common = [n for n in trained if n in screened]
    if len(common) < 2:
        return {}
    order = [n for n in screened if n in common]
    at = {n: i for i, n in enumerate(order)}
    pairs = [(a, b) for i, a in enumerate(common) for b in common[i + 1:]]  # a was trained better than b
    right = sum(at[a] < at[b] for a, b in pairs)
    rho = float(spearmanr(range(len(common)), [at[n] for n in common]).statistic)
    return {"spearman": rho, "pairwise": right / len(pairs), "pairs": len(pairs),
            "winner_in_top_k": float(common[0] in order[:k]), "k": k}
