"""A study's pre-registered analysis: frozen when the study is created, exported with its results, and compared
with what the data turned out to be.

    frozen = freeze(pairs, seed="7f3a", per_participant=10, attention_checks=1, planned_participants=60)
    departures(frozen, result)   -> ["planned 60 participants, 41 took part", ...]

What is frozen: the primary comparison (the two conditions most pairs compare, or the ones the owner names), the tie
rule of the headline rate, the interval method, the exclusion rules with their thresholds (gold checks failed,
one-sided, constant, off-crowd), the viewing rule (minimum view time and whether a quicker vote is refused or
flagged), the planned number of participants and the randomisation seed. The analysis reads its thresholds from
here, so a study is analysed the way it said it would be, whatever the code's defaults later become.
"""

from __future__ import annotations

import time
from collections import Counter

from popcorn.study import StudyError

TIE_RULES = ("apart", "half", "share")
VIEW_POLICIES = ("refuse", "flag")
INTERVAL = "two-way (participant x pair) percentile bootstrap"

# the screening thresholds a study freezes unless its owner sets others
DEFAULT_EXCLUSION = {
    "gold_failures": 1,        # a participant who picks the frozen video of this many gold checks is excluded
    "one_sided_alpha": 0.01,   # exact two-sided binomial test of left vs right presses
    "one_sided_min_votes": 6,
    "constant_min_votes": 5,   # the same button on all of this many pairs
    "off_crowd_alpha": 0.01,   # one-sided exact binomial test of agreement with the others' majority
    "off_crowd_min_pairs": 5,
    "repeat_flips": None,      # repeats (swapped re-showings) are reported, never an exclusion unless set here
}
VIEW_TOLERANCE_S = 0.25  # a vote may arrive this much sooner than the shorter video lasts (clock and network slack)


def primary_comparison(pairs: list[dict], x: str | None = None, y: str | None = None) -> tuple[str, str]:
    """The comparison the study is about: the owner's (x, y), else the pair of conditions most pairs compare."""
    if x and y:
        return tuple(sorted((str(x), str(y))))  # type: ignore[return-value]
    counts = Counter(tuple(sorted((str(p["a"]["condition"]), str(p["b"]["condition"])))) for p in pairs)
    return counts.most_common(1)[0][0] if counts else ("", "")


def freeze(pairs: list[dict], *, seed: str, per_participant: int, attention_checks: int, repeats: int = 0,
           planned_participants: int = 0, tie_rule: str = "apart", primary: tuple[str, str] | None = None,
           min_view_seconds: float | None = None, view_policy: str = "refuse", exclusion: dict | None = None,
           bootstrap: int = 2000) -> dict:
    """The analysis plan as it stands at creation (checked, with every default written out)."""
    if tie_rule not in TIE_RULES:
        raise StudyError(f"the tie rule is one of {', '.join(TIE_RULES)}")
    if view_policy not in VIEW_POLICIES:
        raise StudyError(f"a vote sent before the videos could be watched is one of: {', '.join(VIEW_POLICIES)}")
    if min_view_seconds is not None and not 0 <= float(min_view_seconds) <= 3600:
        raise StudyError("--min-view-seconds: 0 (off) to 3600")
    if planned_participants < 0:
        raise StudyError("planned participants: 0 (not planned) or more")
    unknown = set(exclusion or {}) - set(DEFAULT_EXCLUSION)
    if unknown:
        raise StudyError(f"unknown exclusion rule(s): {', '.join(sorted(unknown))}")
    x, y = primary_comparison(pairs, *(primary or (None, None)))
    return {
        "frozen_at": time.time(),
        "primary": {"x": x, "y": y, "measure": f"win rate of {x} over {y}, ties {tie_rule}"},
        "tie_rule": tie_rule,
        "interval": INTERVAL,
        "bootstrap": int(bootstrap),
        "exclusion": {**DEFAULT_EXCLUSION, **(exclusion or {})},
        "viewing": {"min_view_seconds": None if min_view_seconds is None else float(min_view_seconds),
                    "rule": ("the shorter video's length" if min_view_seconds is None else
                             f"{float(min_view_seconds):g} s") + f" after the pair was served, less "
                            f"{VIEW_TOLERANCE_S} s", "policy": view_policy},
        "planned_participants": int(planned_participants),
        "per_participant": int(per_participant),
        "attention_checks": int(attention_checks),
        "repeats": int(repeats),
        "seed": seed,
    }


def departures(frozen: dict, result: dict) -> list[str]:
    """Where the data departed from the plan, in plain words (an empty list when nothing did)."""
    if not frozen:
        return ["this study was created before analyses were pre-registered: no frozen plan to compare with"]
    out = []
    planned, took_part = frozen.get("planned_participants", 0), result.get("participants", 0)
    if planned and took_part != planned:
        out.append(f"planned {planned} participants, {took_part} took part")
    x, y = frozen["primary"]["x"], frozen["primary"]["y"]
    if not any((r["x"], r["y"]) == (x, y) for r in result.get("win_rates", [])):
        out.append(f"the primary comparison {x} vs {y} has no votes")
    excluded = result.get("screened", {}).get("excluded", [])
    if excluded:
        out.append(f"{len(excluded)} participant(s) excluded by the frozen rules: {', '.join(excluded)}")
    fast = result.get("fast_votes", 0)
    if fast:
        out.append(f"{fast} vote(s) came sooner than the minimum view time and were kept, flagged 'fast' "
                   f"(policy: {frozen['viewing']['policy']})")
    return out
