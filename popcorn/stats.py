"""The statistics of the report, as plain functions on plain values (tested against cases worked by hand).

    compare(a, b)             -> +1 / 0 / -1 per pair (a ties b when they differ by at most TIE_EPS)
    win_rate(outcomes, groups) -> n, wins, ties, losses, their shares, and a bootstrap 95% interval of the win share
    prompt_means(outcomes, groups) -> each prompt's mean outcome (the unit of the bootstrap and of the test)
    sign_flip_p(outcomes, groups) -> two-sided p of "A and B win equally often", sign flips over prompts
    holm(pvalues)              -> Holm's step-down adjustment across one table's comparisons

The interval resamples whole groups (the prompts) with replacement: pairs made from one prompt (several seeds or
video models) are not independent, so the prompt is the unit that is drawn.
"""

from __future__ import annotations

import numpy as np

TIE_EPS = 1e-6  # predicted labels are rounded to 4 decimals: closer than this is the same score
BOOTSTRAP = 2000
SEED = 0


def compare(a: float, b: float, eps: float = TIE_EPS) -> int:
    """+1 when a beats b, -1 when b beats a, 0 for a tie."""
    if abs(a - b) <= eps:
        return 0
    return 1 if a > b else -1


def bootstrap_interval(outcomes: list[int], groups: list | None = None, n_boot: int = BOOTSTRAP,
                       seed: int = SEED, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the share of wins (+1) among all pairs, resampling groups."""
    outcomes = np.asarray(outcomes)
    if outcomes.size == 0:
        return (float("nan"), float("nan"))
    groups = list(range(outcomes.size)) if groups is None else list(groups)
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    index = np.array([keys[g] for g in groups])
    wins = np.bincount(index, weights=(outcomes == 1).astype(float), minlength=len(keys))
    sizes = np.bincount(index, minlength=len(keys)).astype(float)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(keys), np.full(len(keys), 1.0 / len(keys)), size=n_boot)  # draws per group
    shares = (counts @ wins) / (counts @ sizes)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(shares, [tail, 100.0 - tail])
    return (round(float(low), 4), round(float(high), 4))


def win_rate(outcomes: list[int], groups: list | None = None, n_boot: int = BOOTSTRAP, seed: int = SEED) -> dict:
    """Wins, ties and losses apart; win share with its bootstrap 95% interval; n pairs and n groups."""
    n = len(outcomes)
    wins, ties = sum(o == 1 for o in outcomes), sum(o == 0 for o in outcomes)
    losses = n - wins - ties
    low, high = bootstrap_interval(outcomes, groups, n_boot, seed)
    share = (lambda k: round(k / n, 4) if n else None)
    return {"n": n, "groups": len(set(groups)) if groups is not None else n, "wins": wins, "ties": ties,
            "losses": losses, "win_rate": share(wins), "tie_rate": share(ties), "loss_rate": share(losses),
            "win_rate_ci95": [low, high] if n else None,
            "win_rate_without_ties": round(wins / (wins + losses), 4) if wins + losses else None}


def median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if len(values) else None


def two_way_bootstrap_interval(values: list[float], rows: list, cols: list, n_boot: int = BOOTSTRAP,
                               seed: int = SEED, level: float = 0.95) -> tuple[float, float] | None:
    """Percentile interval of the mean of `values` (each in [0, 1]) when they are crossed by two clustering factors
    (for a study: the participant who voted and the pair voted on), by the two-way "pigeonhole" bootstrap (Owen
    2007): each draw resamples the rows with replacement and, independently, the columns; a value counts as often as
    its row was drawn times its column was drawn. None when either factor has fewer than two levels (no variance to
    draw from it). Draws whose chosen rows and columns share no value are left out (they say nothing)."""
    y = np.asarray(values, dtype=float)
    if y.size == 0:
        return None
    row_keys = {r: i for i, r in enumerate(dict.fromkeys(rows))}
    col_keys = {c: i for i, c in enumerate(dict.fromkeys(cols))}
    if len(row_keys) < 2 or len(col_keys) < 2:
        return None
    ri = np.array([row_keys[r] for r in rows])
    ci = np.array([col_keys[c] for c in cols])
    rng = np.random.default_rng(seed)
    shares = []
    for start in range(0, n_boot, 250):  # in blocks: draws x values stays small in memory
        k = min(250, n_boot - start)
        wr = rng.multinomial(len(row_keys), np.full(len(row_keys), 1.0 / len(row_keys)), size=k)
        wc = rng.multinomial(len(col_keys), np.full(len(col_keys), 1.0 / len(col_keys)), size=k)
        w = wr[:, ri] * wc[:, ci]
        total = w.sum(axis=1)
        keep = total > 0
        shares.append((w[keep] @ y) / total[keep])
    shares = np.concatenate(shares)
    if shares.size == 0:
        return None
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(shares, [tail, 100.0 - tail])
    return (round(float(low), 4), round(float(high), 4))


# ---------------------------------------------------------------------------------------------------- tests


SIGN_FLIP_DRAWS = 20000
EXACT_UP_TO = 16  # prompts with a non-zero mean outcome: up to this many, every sign pattern is enumerated


def prompt_means(outcomes: list[int], groups: list | None = None) -> np.ndarray:
    """The mean outcome (+1 / 0 / -1 averaged) of each group (prompt): the unit the tests and the bootstrap draw."""
    outcomes = np.asarray(outcomes, dtype=float)
    groups = list(range(outcomes.size)) if groups is None else list(groups)
    keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    index = np.array([keys[g] for g in groups], dtype=int)
    sums = np.bincount(index, weights=outcomes, minlength=len(keys))
    return sums / np.bincount(index, minlength=len(keys))


def sign_flip_p(outcomes: list[int], groups: list | None = None, draws: int = SIGN_FLIP_DRAWS,
                seed: int = SEED) -> float | None:
    """Two-sided p-value of "A and B win equally often", by flipping the sign of each prompt's mean outcome (prompts
    are exchangeable under the null; ties contribute 0). With one pair per prompt this is the exact sign test with
    ties left out. Exact enumeration up to EXACT_UP_TO prompts, else `draws` seeded random flips."""
    means = prompt_means(outcomes, groups)
    means = means[np.abs(means) > 1e-12]
    if means.size == 0:
        return None if len(outcomes) == 0 else 1.0
    observed = abs(means.sum())
    if means.size <= EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2 ** means.size)[:, None] >> np.arange(means.size)) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(draws, means.size))
    totals = np.abs(signs @ means)
    p = float(np.mean(totals >= observed - 1e-9))
    return round(p, 4)


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values of one table's comparisons (None stays None)."""
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = round(running, 4)
    return adjusted
