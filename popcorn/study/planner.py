"""How many participants a study needs: simulate the clustered design and read off the interval it would give.

    plan(pairs=20, effect=0.6, per_participant=10, half_width=0.05)
    -> {"participants": 180, "half_width": 0.049, "power": 0.93, "assumptions": {...}, ...}

The model (stated in every answer): a vote of participant i on pair j picks condition x with probability
logistic(logit(effect) + u_i + v_j), u_i ~ Normal(0, participant_sd), v_j ~ Normal(0, pair_sd) on the logit scale
(defaults 0.5 and 0.5: people and pairs both vary, neither dominates); a share `tie_rate` of votes are ties, left out
of the decisive rate as the analysis does. Each participant sees `per_participant` pairs, exposure balanced (every
pair reaches about as many people). Each simulated study is analysed as a real one is: its 95% two-way (participant x
pair) bootstrap interval (popcorn/stats.py). The answer is the fewest participants whose median half-width is at most
the target, and the power: the share of simulated studies whose interval excludes 0.5.

With few pairs the pair-to-pair variation sets a floor no number of participants removes; then the answer says so
(and how wide the interval stays) instead of a number.
"""

from __future__ import annotations

import math

import numpy as np

from popcorn import stats
from popcorn.study import StudyError

PARTICIPANT_SD, PAIR_SD = 0.5, 0.5
SIMS, BOOTSTRAP = 40, 200
MAX_PARTICIPANTS = 5000
INTERVAL = "95% two-way (participant x pair) percentile bootstrap, as the study's analysis"


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def simulate(participants: int, pairs: int, per_participant: int, effect: float, participant_sd: float = PARTICIPANT_SD,
             pair_sd: float = PAIR_SD, tie_rate: float = 0.0, sims: int = SIMS, bootstrap: int = BOOTSTRAP,
             seed: int = 0) -> dict:
    """`sims` studies of this design: the median interval half-width and the share whose interval excludes 0.5."""
    rng = np.random.default_rng(seed)
    m = min(per_participant, pairs)
    person = np.repeat(np.arange(participants), m)
    pair = (np.arange(participants)[:, None] * m + np.arange(m)[None, :]).ravel() % pairs  # balanced exposure
    widths, excludes = [], 0
    for s in range(sims):
        u = rng.normal(0, participant_sd, participants)
        v = rng.normal(0, pair_sd, pairs)
        p = 1 / (1 + np.exp(-(_logit(effect) + u[person] + v[pair])))
        wins = rng.random(person.size) < p
        decisive = rng.random(person.size) >= tie_rate
        ci = stats.two_way_bootstrap_interval(wins[decisive].astype(float), person[decisive].tolist(),
                                              pair[decisive].tolist(), n_boot=bootstrap, seed=seed + s)
        if ci is None:
            widths.append(0.5)
            continue
        widths.append((ci[1] - ci[0]) / 2)
        excludes += ci[0] > 0.5 or ci[1] < 0.5
    return {"participants": participants, "half_width": round(float(np.median(widths)), 4),
            "power": round(excludes / sims, 3)}


def plan(pairs: int, effect: float, per_participant: int, half_width: float = 0.05,
         participant_sd: float = PARTICIPANT_SD, pair_sd: float = PAIR_SD, tie_rate: float = 0.0, sims: int = SIMS,
         bootstrap: int = BOOTSTRAP, seed: int = 0, max_participants: int = MAX_PARTICIPANTS) -> dict:
    """The fewest participants (searched by doubling, then halving the gap) whose median half-width <= target."""
    if pairs < 2:
        raise StudyError("plan with 2 or more pairs: with one pair no interval can speak for other pairs")
    if not 0 < effect < 1 or effect == 0.5:
        raise StudyError("--effect is the expected win rate of one condition, between 0 and 1 (not 0.5)")
    if per_participant < 1 or not 0 < half_width < 0.5 or not 0 <= tie_rate < 1:
        raise StudyError("--per-participant 1 or more, --half-width between 0 and 0.5, --tie-rate from 0 to below 1")
    if participant_sd < 0 or pair_sd < 0:
        raise StudyError("the standard deviations are 0 or more (logit scale)")
    args = dict(pairs=pairs, per_participant=per_participant, effect=effect, participant_sd=participant_sd,
                pair_sd=pair_sd, tie_rate=tie_rate, sims=sims, bootstrap=bootstrap, seed=seed)
    tried = {}

    def at(n: int) -> dict:
        if n not in tried:
            tried[n] = simulate(n, **args)
        return tried[n]

    low, high = 1, 10
    while at(high)["half_width"] > half_width:
        if high >= max_participants:
            break
        low, high = high, min(2 * high, max_participants)
    reachable = at(high)["half_width"] <= half_width
    while reachable and high - low > max(1, high // 20):  # to within 5%
        mid = (low + high) // 2
        low, high = (low, mid) if at(mid)["half_width"] <= half_width else (mid, high)
    best = at(high)
    return {"participants": high if reachable else None, "reachable": reachable,
            "half_width": best["half_width"], "power": best["power"], "target_half_width": half_width,
            "votes": high * min(per_participant, pairs),
            "assumptions": {"pairs": pairs, "effect": effect, "per_participant": per_participant,
                            "participant_sd": participant_sd, "pair_sd": pair_sd, "tie_rate": tie_rate,
                            "model": "logit P(x wins) = logit(effect) + participant + pair effects (normal)",
                            "interval": INTERVAL, "simulations": sims, "bootstrap": bootstrap, "seed": seed},
            "tried": [tried[n] for n in sorted(tried)],
            "note": "" if reachable else
            f"even {high} participants leave a half-width of {best['half_width']:.3f}: with {pairs} pairs the "
            f"pair-to-pair variation (pair_sd {pair_sd}) sets a floor; add pairs"}


def lines(result: dict) -> list[str]:
    a = result["assumptions"]
    head = (f"{result['participants']} participants ({result['votes']} votes) give a median 95% interval half-width of "
            f"{result['half_width']:.3f} (target {result['target_half_width']}); the interval excludes 0.5 in "
            f"{result['power']:.0%} of simulated studies" if result["reachable"] else result["note"])
    return [head, f"assumed: {a['pairs']} pairs, {a['per_participant']} per participant, true win rate "
                  f"{a['effect']}, participant sd {a['participant_sd']}, pair sd {a['pair_sd']} (logit scale), ties "
                  f"{a['tie_rate']:.0%}; {a['simulations']} simulated studies each, {a['bootstrap']} bootstrap draws"]
