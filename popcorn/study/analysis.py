"""What the votes say, with honest uncertainty. Plain functions over the vote dicts of StudyStore.votes().

Each vote names the chosen video in pair terms: choice "a" / "b" / "tie" / "both_bad", the pair's two conditions
(condition_a, condition_b), h of each side (h_a, h_b), prompt_type, category, and which side the participant pressed.
Gold attention checks (gold set) and repeats (check_of set) only score the participant, never count as votes.

- Intervals: votes are clustered twice, by participant and by pair (a finding must hold for other people *and* other
  pairs), so every headline interval (`ci95`, its method in `ci95_method`) is a two-way percentile bootstrap that
  resamples participants and pairs together (popcorn/stats.py: two_way_bootstrap_interval). None when there are fewer
  than two participants or two pairs: nothing to generalise from. Wilson's vote-level interval stays beside it as
  `wilson_ci95` (it treats votes as independent: too narrow for a study).
- win rates per pair of conditions, with ties counted three ways, all reported: `apart` (decisive votes only: ties
  and "both bad" reported beside, not in the rate), `half` (a tie or "both bad" is half a win to each side) and
  `share` (wins over all votes). The study's frozen tie rule (prereg.py) names its primary one.
- Bradley-Terry strengths by maximum likelihood (Hunter's MM iterations; a tie is half a win each way), scaled to a
  geometric mean of 1, only when Ford's condition holds (the comparison graph is strongly connected: every condition
  both beat and lost to the rest, directly or through others), else the result says which conditions break it
  instead of strengths that run off; intervals from the two-way bootstrap (draws breaking Ford's condition are counted
  and left out).
- breakdowns of the win rates by prompt type (abstract / concrete) and by category, with the same intervals;
- agreement between raters on the pairs that two or more people answered: Fleiss' kappa (units of unequal size: ours,
  as statsmodels' assumes equal raters per unit) and Krippendorff's alpha (nominal; the `krippendorff` package, equal
  to our former code to 1e-15 on 200 random tables), over the four answers in pair terms; binomial tests by scipy;
  Wilson's interval ours (it takes the fractional counts of ties-as-half);
- voter screening, each rule and threshold frozen with the study (prereg.py): gold checks failed (the frozen video
  picked; a tie or "both bad" on a gold pair is unsure, not failed); one-sided voting (an exact two-sided binomial test
  that left and right presses are equally likely); a constant button; disagreement with the crowd beyond chance (a
  one-sided exact binomial test of the voter's decisive votes against the other voters' majority; a tie is neither
  agreement nor disagreement); repeats flipped a <-> b (reported; an exclusion only when the plan sets a threshold).
  `screened` repeats the win rates without the excluded.
- h vs people: per pair (the majority of decisive votes vs the higher h), listed pair by pair, with the share of pairs
  (Wilson over pairs: each pair one unit) and per vote (two-way bootstrap).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter, defaultdict

import krippendorff
import numpy as np

from popcorn import stats
from popcorn.study import prereg
from popcorn.text import plural

TWO_WAY = "two-way (participant x pair) percentile bootstrap"
NO_INTERVAL = "none: needs 2+ participants and 2+ pairs with votes"
Z95 = 1.959963984540054
OUTCOMES = ("a", "b", "tie", "both_bad")
BOOTSTRAP = 1000


# ------------------------------------------------------------------------------------------------------------ maths


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for k successes in n trials (k may be fractional); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binom_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial p-value (scipy: the probability of outcomes no more likely than k)."""
    from scipy.stats import binomtest  # heavy (~1 s), and the studio's page must not wait for it (issue 27 pt 6)

    return 1.0 if n == 0 else float(binomtest(k, n, p).pvalue)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    from scipy.stats import binom  # heavy; see binom_two_sided

    return min(1.0, float(binom.cdf(k, n, p)))


def bradley_terry(comparisons: list[tuple[str, str, float]], players: list[str] | None = None,
                  iterations: int = 10_000, tol: float = 1e-10) -> dict[str, float]:
    """Maximum-likelihood Bradley-Terry strengths from (i, j, w) = "i beat j with weight w" (0.5 each way for a tie).

    Hunter's MM update p_i <- W_i / sum_j n_ij / (p_i + p_j), scaled to a geometric mean of 1. When a player never
    wins or never loses the MLE does not exist (its strength runs to 0 or infinity); we then add one half win and one
    half loss of every player against every other (a weak symmetric prior) and say so in the result's `prior`.
    """
    players = sorted(players or {p for i, j, _ in comparisons for p in (i, j)})
    wins = defaultdict(float)
    games = defaultdict(float)
    for i, j, w in comparisons:
        wins[i] += w
        games[frozenset((i, j))] += w
    losses = defaultdict(float)
    for i, j, w in comparisons:
        losses[j] += w
    prior = 0.0
    if any(wins[p] <= 0 or losses[p] <= 0 for p in players):
        prior = 0.5
    for x in players:
        for y in players:
            if x < y and prior:
                wins[x] += prior
                wins[y] += prior
                games[frozenset((x, y))] += 2 * prior
    strength = {p: 1.0 for p in players}
    for _ in range(iterations):
        new = {}
        for p in players:
            denom = sum(games[frozenset((p, q))] / (strength[p] + strength[q]) for q in players if q != p)
            new[p] = wins[p] / denom if denom > 0 else strength[p]
        scale = math.exp(sum(math.log(max(v, 1e-300)) for v in new.values()) / len(new))
        new = {p: v / scale for p, v in new.items()}
        delta = max(abs(math.log(new[p]) - math.log(strength[p])) for p in players)
        strength = new
        if delta < tol:
            break
    strength["__prior__"] = prior
    return strength


def fleiss_kappa(counts: list[list[int]]) -> float | None:
    """Fleiss' kappa over units with n_i >= 2 ratings each (rows: units, columns: categories); unequal n_i allowed."""
    rows = [r for r in counts if sum(r) >= 2]
    if not rows:
        return None
    total = sum(sum(r) for r in rows)
    p_j = [sum(r[j] for r in rows) / total for j in range(len(rows[0]))]
    p_bar = sum((sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows) / len(rows)
    p_e = sum(p * p for p in p_j)
    if p_e >= 1:
        return None  # everyone gave the same answer everywhere: agreement is not measurable
    return (p_bar - p_e) / (1 - p_e)


def krippendorff_alpha_nominal(counts: list[list[int]]) -> float | None:
    """Krippendorff's alpha for nominal data from per-unit category counts (units with one rating are dropped), by the
    `krippendorff` package; None when it is not defined (no units, or every rating in one category)."""
    rows = [r for r in counts if sum(r) >= 2]
    if not rows or sum(1 for total in np.sum(rows, axis=0) if total) < 2:
        return None
    alpha = krippendorff.alpha(value_counts=np.asarray(rows, dtype=float), level_of_measurement="nominal")
    return None if math.isnan(alpha) else float(alpha)


# ------------------------------------------------------------------------------------------------------------ votes


def first_showings(votes: list[dict]) -> list[dict]:
    """The votes that count: no gold check, no repeat."""
    return [v for v in votes if v.get("check_of") is None and not v.get("gold")]


def _pair_key(v: dict) -> tuple[str, str]:
    return tuple(sorted((str(v["condition_a"]), str(v["condition_b"]))))  # type: ignore[return-value]


def _winner(v: dict) -> str | None:
    return v["condition_a"] if v["choice"] == "a" else v["condition_b"] if v["choice"] == "b" else None


def _rate(values: list[float], votes: list[dict], bootstrap: int, seed: int) -> dict:
    """The mean of `values` (one per vote of `votes`, each in [0, 1]) with its two-way interval and Wilson's."""
    k, n = float(sum(values)), len(values)
    lo, hi = wilson(k, n)
    ci = (stats.two_way_bootstrap_interval(values, [v["participant"] for v in votes], [v["item"] for v in votes],
                                           n_boot=bootstrap, seed=seed) if bootstrap and n else None)
    return {"rate": round(k / n, 4) if n else None, "ci95": list(ci) if ci else None,
            "ci95_method": TWO_WAY if ci else NO_INTERVAL, "wilson_ci95": [round(lo, 4), round(hi, 4)],
            "k": k if k % 1 else int(k), "n": n}


def win_rates(votes: list[dict], bootstrap: int = BOOTSTRAP, seed: int = 0) -> list[dict]:
    """One row per pair of conditions (x < y by name): x's win rate three ways (see the module's docstring)."""
    groups = defaultdict(list)
    for v in first_showings(votes):
        groups[_pair_key(v)].append(v)
    rows = []
    for (x, y), vs in sorted(groups.items()):
        counts = Counter(_winner(v) if _winner(v) is not None else v["choice"] for v in vs)
        x_wins, y_wins, ties, bad = counts[x], counts[y], counts["tie"], counts["both_bad"]
        decisive = [v for v in vs if _winner(v) is not None]
        score = {x: 1.0, y: 0.0, None: 0.5}
        rows.append({"x": x, "y": y, "votes": len(vs), "x_wins": x_wins, "y_wins": y_wins, "ties": ties,
                     "both_bad": bad, "pairs": len({v["item"] for v in vs}),
                     "participants": len({v["participant"] for v in vs}),
                     "apart": _rate([float(_winner(v) == x) for v in decisive], decisive, bootstrap, seed),
                     "half": _rate([score[_winner(v)] for v in vs], vs, bootstrap, seed),
                     "share": _rate([float(_winner(v) == x) for v in vs], vs, bootstrap, seed),
                     "tie_rate": _rate([float(v["choice"] == "tie") for v in vs], vs, bootstrap, seed),
                     "both_bad_rate": _rate([float(v["choice"] == "both_bad") for v in vs], vs, bootstrap, seed)})
    return rows


def _comparisons(votes: list[dict], weights=None) -> Counter:
    """(winner, loser) -> weight: a decisive vote is one win, a tie or "both bad" half a win each way."""
    out: Counter = Counter()
    for n, v in enumerate(votes):
        w = 1.0 if weights is None else float(weights[n])
        if not w:
            continue
        a, b = str(v["condition_a"]), str(v["condition_b"])
        if v["choice"] == "a":
            out[(a, b)] += w
        elif v["choice"] == "b":
            out[(b, a)] += w
        else:
            out[(a, b)] += 0.5 * w
            out[(b, a)] += 0.5 * w
    return out


def ford_groups(comparisons: Counter, players: list[str]) -> list[list[str]]:
    """The strongly connected groups of the "beat" graph (an edge i -> j when i beat j at least once, a tie being
    half a win each way). Ford's condition, under which the Bradley-Terry likelihood has a finite maximum, holds
    when there is one group."""
    beats = defaultdict(set)
    for (i, j), w in comparisons.items():
        if w > 0:
            beats[i].add(j)

    def reach(start: str) -> set[str]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in beats[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    reached = {p: reach(p) for p in players}
    groups: list[list[str]] = []
    for p in players:
        if not any(p in g for g in groups):
            groups.append(sorted(q for q in players if q in reached[p] and p in reached[q]))
    return groups


def strengths(votes: list[dict], bootstrap: int = 200, seed: int = 0) -> dict:
    """Bradley-Terry strengths of the conditions with 95% two-way bootstrap intervals (participants x pairs), when
    Ford's condition holds; otherwise the groups that break it and no strengths."""
    votes = first_showings(votes)
    players = sorted({str(v[k]) for v in votes for k in ("condition_a", "condition_b")})
    if len(players) < 2:
        return {"players": players, "strengths": {}, "ford": None, "note": "fewer than two conditions"}
    comparisons = _comparisons(votes)
    groups = ford_groups(comparisons, players)
    ford = {"holds": len(groups) == 1, "groups": groups}
    if len(groups) > 1:
        return {"players": players, "strengths": {}, "ford": ford, "bootstrap": 0,
                "note": "Ford's condition fails: the comparison graph is not strongly connected (groups: "
                        + "; ".join(", ".join(g) for g in groups) + "). Some conditions never lost (or never won) "
                        "against the others, so their strengths are not identified; more votes or pairs linking "
                        "the groups are needed. No strengths are shown."}
    fit = bradley_terry([(i, j, w) for (i, j), w in comparisons.items()], players)
    fit.pop("__prior__")
    people = {p: n for n, p in enumerate(dict.fromkeys(v["participant"] for v in votes))}
    items = {p: n for n, p in enumerate(dict.fromkeys(v["item"] for v in votes))}
    samples = defaultdict(list)
    skipped = 0
    if bootstrap and len(people) >= 2 and len(items) >= 2:
        pi = np.array([people[v["participant"]] for v in votes])
        ii = np.array([items[v["item"]] for v in votes])
        rng = np.random.default_rng(seed)
        for _ in range(bootstrap):
            wr = rng.multinomial(len(people), np.full(len(people), 1 / len(people)))
            wc = rng.multinomial(len(items), np.full(len(items), 1 / len(items)))
            drawn = _comparisons(votes, wr[pi] * wc[ii])
            if len(ford_groups(drawn, players)) > 1:
                skipped += 1
                continue
            boot = bradley_terry([(i, j, w) for (i, j), w in drawn.items()], players)
            boot.pop("__prior__")
            for p, value in boot.items():
                samples[p].append(value)
    out = {}
    for p in players:
        ordered = np.array(samples[p])
        ci = [round(float(q), 4) for q in np.percentile(ordered, [2.5, 97.5])] if ordered.size else None
        out[p] = {"strength": round(fit[p], 4), "ci95": ci}
    note = "" if len(players) > 2 else "two conditions: the strength ratio is the odds of the win rate with ties half"
    if skipped:
        note += f" {skipped} of {bootstrap} bootstrap draws broke Ford's condition and were left out."
    return {"players": players, "strengths": out, "ford": ford, "bootstrap": bootstrap, "ci95_method": TWO_WAY,
            "bootstrap_draws_left_out": skipped, "note": note.strip()}


def _item_counts(votes: list[dict]) -> dict[str, list[int]]:
    counts: dict[str, list[int]] = {}
    for v in first_showings(votes):
        counts.setdefault(v["item"], [0] * len(OUTCOMES))[OUTCOMES.index(v["choice"])] += 1
    return counts


def agreement(votes: list[dict]) -> dict:
    counts = list(_item_counts(votes).values())
    rated = [c for c in counts if sum(c) >= 2]
    kappa, alpha = fleiss_kappa(rated), krippendorff_alpha_nominal(rated)
    return {"pairs_with_2plus_ratings": len(rated), "fleiss_kappa": None if kappa is None else round(kappa, 4),
            "krippendorff_alpha": None if alpha is None else round(alpha, 4), "categories": list(OUTCOMES)}


def attention(votes: list[dict]) -> dict[str, dict]:
    """Per participant: gold checks answered, failed (the frozen side picked) and unsure (tie / both bad), and
    repeats answered and flipped (a <-> b; a tie on either showing is not a flip)."""
    first = {(v["participant"], v["task"]): v for v in votes}
    out: dict[str, dict] = defaultdict(lambda: {"checks": 0, "failed": 0, "unsure": 0, "repeats": 0, "flips": 0})
    for v in votes:
        if v.get("gold"):
            row = out[v["participant"]]
            row["checks"] += 1
            row["failed"] += v["choice"] == v["gold"]
            row["unsure"] += v["choice"] in ("tie", "both_bad")
        elif v.get("check_of") is not None:
            original = first.get((v["participant"], v["check_of"]))
            if original is None:
                continue
            out[v["participant"]]["repeats"] += 1
            out[v["participant"]]["flips"] += {original["choice"], v["choice"]} == {"a", "b"}
    return dict(out)


def screen(votes: list[dict], exclusion: dict | None = None) -> list[dict]:
    """Every participant with their checks, side balance and crowd agreement; `flags` lists the frozen rules they
    broke (prereg.DEFAULT_EXCLUSION unless the study froze others).

    One pass over the votes: the decisive tallies per pair are counted once, and each voter's "others' majority" is
    that tally minus their own vote."""
    rule = {**prereg.DEFAULT_EXCLUSION, **(exclusion or {})}
    checks = attention(votes)
    firsts = first_showings(votes)
    tally = defaultdict(Counter)
    by_person = defaultdict(list)
    for v in firsts:
        by_person[v["participant"]].append(v)
        if v["choice"] in ("a", "b"):
            tally[v["item"]][v["choice"]] += 1
    crowd = {}
    for person, mine in by_person.items():
        agree = pairs = 0
        for v in mine:
            if v["choice"] not in ("a", "b"):
                continue  # a tie is a tie: neither agreeing nor disagreeing with the majority
            others = Counter(tally[v["item"]])
            others[v["choice"]] -= 1
            if others["a"] != others["b"]:
                pairs += 1
                agree += v["choice"] == ("a" if others["a"] > others["b"] else "b")
        crowd[person] = (agree, pairs)
    all_agree, all_pairs = sum(k for k, _ in crowd.values()), sum(n for _, n in crowd.values())
    rows = []
    for person in sorted({v["participant"] for v in votes}):
        mine = by_person.get(person, [])
        left = sum(v["side"] == "left" for v in mine)
        right = sum(v["side"] == "right" for v in mine)
        side_p = binom_two_sided(left, left + right)
        agree, m = crowd.get(person, (0, 0))
        pooled_n = all_pairs - m
        p0 = (all_agree - agree) / pooled_n if pooled_n else None  # the agreement rate of everyone else
        crowd_p = binom_cdf(agree, m, p0) if p0 is not None and m else None
        c = checks.get(person, {"checks": 0, "failed": 0, "unsure": 0, "repeats": 0, "flips": 0})
        flags = []
        if rule["gold_failures"] and c["failed"] >= rule["gold_failures"]:
            flags.append("attention")
        if rule["repeat_flips"] and c["flips"] >= rule["repeat_flips"]:
            flags.append("repeat-flips")
        if left + right >= rule["one_sided_min_votes"] and side_p < rule["one_sided_alpha"]:
            flags.append("one-sided")
        if len(mine) >= rule["constant_min_votes"] and len({v["side"] for v in mine}) == 1:
            flags.append("constant")
        if crowd_p is not None and m >= rule["off_crowd_min_pairs"] and crowd_p < rule["off_crowd_alpha"]:
            flags.append("off-crowd")
        rows.append({"participant": person, "votes": len(mine), "left": left, "right": right,
                     "side_p": round(side_p, 5), "crowd_agree": agree, "crowd_pairs": m,
                     "crowd_rate_others": None if p0 is None else round(p0, 4),
                     "crowd_p": None if crowd_p is None else round(crowd_p, 5), **c, "flags": flags})
    return rows


def h_agreement(votes: list[dict], bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict:
    """How often the video h scores higher is the one people chose: pair by pair (the majority of decisive votes),
    as a share of pairs, and per vote."""
    tally = defaultdict(Counter)
    h = {}
    firsts = first_showings(votes)
    for v in firsts:
        if v["choice"] in ("a", "b"):
            tally[v["item"]][v["choice"]] += 1
        h[v["item"]] = (v.get("h_a"), v.get("h_b"))
    per_pair, skipped = [], 0
    scored = []  # decisive votes on pairs where h prefers one side: 1 when the vote agrees with h
    scored_votes = []
    for item in sorted(tally):
        c = tally[item]
        h_a, h_b = h[item]
        if h_a is None or h_b is None or h_a == h_b:
            skipped += 1
            continue
        favoured = "a" if h_a > h_b else "b"
        majority = None if c["a"] == c["b"] else ("a" if c["a"] > c["b"] else "b")
        per_pair.append({"item": item, "h_a": h_a, "h_b": h_b, "h_prefers": favoured, "votes_a": c["a"],
                         "votes_b": c["b"], "people_prefer": majority,
                         "agrees": None if majority is None else majority == favoured})
        for v in firsts:
            if v["item"] == item and v["choice"] in ("a", "b"):
                scored.append(float(v["choice"] == favoured))
                scored_votes.append(v)
    decided = [p for p in per_pair if p["agrees"] is not None]
    pairs_agree = sum(p["agrees"] for p in decided)
    lo, hi = wilson(pairs_agree, len(decided))
    pairs = {"rate": round(pairs_agree / len(decided), 4) if decided else None,
             "ci95": [round(lo, 4), round(hi, 4)] if decided else None,
             "ci95_method": "Wilson over pairs (each pair one unit)", "k": pairs_agree, "n": len(decided)}
    return {"pairs": pairs, "votes": _rate(scored, scored_votes, bootstrap, seed), "per_pair": per_pair,
            "pairs_skipped_no_h": skipped,
            "note": "per pair: the majority of decisive votes vs the higher h; pairs without a majority are left out"}


def breakdown(votes: list[dict], key: str, bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for v in first_showings(votes):
        groups[str(v.get(key) or "unknown")].append(v)
    return {name: win_rates(vs, bootstrap=bootstrap, seed=seed) for name, vs in sorted(groups.items())}


def rules_text(exclusion: dict) -> dict[str, str]:
    r = {**prereg.DEFAULT_EXCLUSION, **exclusion}
    return {"attention": f"picked the frozen video on {r['gold_failures']}+ gold checks" if r["gold_failures"]
            else "gold checks reported, never an exclusion",
            "repeat-flips": f"{r['repeat_flips']}+ repeats answered a <-> b the other way" if r["repeat_flips"]
            else "repeats reported, never an exclusion",
            "one-sided": f"exact two-sided binomial test of left vs right presses, p < {r['one_sided_alpha']}, "
                         f"{r['one_sided_min_votes']}+ decisive votes",
            "constant": f"the same button (left, right, tie or both bad) on all of {r['constant_min_votes']}+ pairs",
            "off-crowd": f"one-sided exact binomial test of decisive votes' agreement with the other voters' majority "
                         f"against the other voters' agreement rate, p < {r['off_crowd_alpha']}, "
                         f"{r['off_crowd_min_pairs']}+ pairs (ties are neither)"}


def analyse(votes: list[dict], bootstrap: int = BOOTSTRAP, seed: int = 0, plan: dict | None = None) -> dict:
    """Everything above for one study's votes, under its frozen plan (prereg.py; {} for a study made before)."""
    plan = plan or {}
    exclusion = plan.get("exclusion", prereg.DEFAULT_EXCLUSION)
    screening = screen(votes, exclusion)
    flagged = {r["participant"] for r in screening if r["flags"]}
    kept = [v for v in votes if v["participant"] not in flagged]
    result = {
        "votes": len(votes), "first_showings": len(first_showings(votes)),
        "participants": len({v["participant"] for v in votes}),
        "interval_method": TWO_WAY,
        "win_rates": win_rates(votes, bootstrap, seed),
        "bradley_terry": strengths(votes, bootstrap=min(bootstrap, 200), seed=seed),
        "by_prompt_type": breakdown(votes, "prompt_type", bootstrap, seed),
        "by_category": breakdown(votes, "category", bootstrap, seed),
        "agreement": agreement(votes),
        "attention_checks": {"answered": sum(r["checks"] for r in screening),
                             "failed": sum(r["failed"] for r in screening),
                             "unsure": sum(r["unsure"] for r in screening),
                             "repeats": sum(r["repeats"] for r in screening),
                             "flips": sum(r["flips"] for r in screening)},
        "voters": screening,
        "flagged": sorted(flagged),
        "screened": {"excluded": sorted(flagged), "win_rates": win_rates(kept, bootstrap, seed)},
        "h_vs_people": h_agreement(votes, bootstrap, seed),
        "fast_votes": sum("fast" in str(v.get("flags") or "") for v in votes),
        "rules": rules_text(exclusion),
    }
    if plan:
        x, y, rule = plan["primary"]["x"], plan["primary"]["y"], plan["tie_rule"]
        row = next((r for r in result["screened"]["win_rates"] if (r["x"], r["y"]) == (x, y)), None)
        result["primary"] = {"comparison": f"{x} vs {y}", "tie_rule": rule, "after_exclusions": True,
                             **({k: row[rule][k] for k in ("rate", "ci95", "ci95_method", "n")} if row else
                                {"rate": None, "ci95": None, "ci95_method": NO_INTERVAL, "n": 0})}
    result["preregistration"] = plan
    result["departures"] = prereg.departures(plan, result)
    return result


# ------------------------------------------------------------------------------------------------------------ exports

VOTE_COLUMNS = ["vote", "participant", "task", "item", "check_of", "side", "a_on_left", "choice", "condition_a",
                "condition_b", "run_a", "run_b", "h_a", "h_b", "query", "factor", "prompt_type", "category", "reason",
                "created", "gold", "view_seconds", "flags"]
PARTICIPANT_COLUMNS = ["participant", "joined", "finished", "consented", "PROLIFIC_PID", "STUDY_ID", "SESSION_ID",
                       "workerId", "assignmentId", "hitId", "invite", "tasks", "answered", "flags", "times"]


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value):
    """A text cell a spreadsheet would run as a formula (a participant's typed reason is a stranger's text) gets a
    leading apostrophe, so the owner's spreadsheet shows it as text."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def votes_csv(votes: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=VOTE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for v in votes:
        writer.writerow({k: _cell(v.get(k)) for k in VOTE_COLUMNS})
    return out.getvalue()


def participants_csv(participants: list[dict], voters: list[dict] = ()) -> str:
    """The participant table (StudyStore.participants) with each one's screening flags; `times` holds, per task,
    when it was served and answered in seconds after joining (JSON)."""
    flags = {v["participant"]: v["flags"] for v in voters}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=PARTICIPANT_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for p in participants:
        row = {**p, **p.get("platform", {}), "flags": " ".join(flags.get(p["participant"], [])),
               "times": json.dumps(p["times"], separators=(",", ":"))}
        writer.writerow({k: _cell(row.get(k)) for k in PARTICIPANT_COLUMNS})
    return out.getvalue()


def _ci(rate: dict) -> str:
    return (f"[{rate['ci95'][0]:.1%}, {rate['ci95'][1]:.1%}]" if rate.get("ci95")
            else "(no interval yet: needs 2+ participants and 2+ pairs)")


def summary_lines(result: dict) -> list[str]:
    """A short plain-text summary (the CLI's and the tab's)."""
    lines = [f"{plural(result['votes'], 'vote')} from {plural(result['participants'], 'participant')} "
             f"({result['first_showings']} counted; gold checks and repeats only screen participants)",
             f"intervals: 95%, {result.get('interval_method', TWO_WAY)}"]
    primary = result.get("primary")
    if primary:
        lines.append(f"primary (pre-registered): {primary['comparison']}, ties {primary['tie_rule']}, after "
                     f"exclusions: " + (f"{primary['rate']:.1%} {_ci(primary)}" if primary["rate"] is not None
                                        else "no votes yet"))
    for r in result["win_rates"]:
        a = r["apart"]
        if a["rate"] is not None:
            lines.append(f"{r['x']} vs {r['y']}: {r['x']} wins {a['rate']:.1%} of decisive votes {_ci(a)} "
                         f"(n={a['n']}, {plural(r['pairs'], 'pair')}, {r['participants']} "
                         f"{'person' if r['participants'] == 1 else 'people'}"
                         f"); ties half: {r['half']['rate']:.1%}; ties {r['ties']}, both bad {r['both_bad']}")
        else:
            lines.append(f"{r['x']} vs {r['y']}: no decisive votes yet ({plural(r['votes'], 'vote')})")
    h = result["h_vs_people"]["pairs"]
    if h["n"]:
        lines.append(f"h agrees with people on {h['rate']:.1%} of pairs {_ci(h)} (n={h['n']}, Wilson over pairs)")
    ag = result["agreement"]
    if ag["fleiss_kappa"] is None:
        lines.append("agreement: no measure yet (needs 2+ raters per pair)")
    else:
        lines.append(f"agreement: Fleiss' kappa {ag['fleiss_kappa']}, Krippendorff's alpha {ag['krippendorff_alpha']} "
                     f"over {plural(ag['pairs_with_2plus_ratings'], 'pair')}")
    bt = result["bradley_terry"]
    if bt.get("ford") and not bt["ford"]["holds"]:
        lines.append("Bradley-Terry: " + bt["note"])
    checks = result["attention_checks"]
    lines.append(f"gold checks failed: {checks['failed']} of {checks['answered']} ({checks.get('unsure', 0)} unsure); "
                 f"excluded participants: {len(result['flagged'])}")
    for d in result.get("departures", []):
        lines.append(f"departure from the plan: {d}")
    return lines


def chart_png(result: dict, path) -> str:
    """A win-rate chart: each comparison's decisive win rate with its 95% interval, ties-half as a dot, and h vs
    people; written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{r['x']} vs {r['y']}", r["apart"], r["half"]["rate"]) for r in result["win_rates"]
            if r["apart"]["rate"] is not None]
    h = result["h_vs_people"]["pairs"]
    if h["n"]:
        rows.append(("h agrees with people", h, None))
    fig, ax = plt.subplots(figsize=(7, 0.7 * max(len(rows), 1) + 1.4), dpi=110)
    for i, (label, rate, half) in enumerate(rows):
        ax.barh(i, rate["rate"], color="#4C72B0" if half is not None else "#55A868", height=0.55)
        if rate.get("ci95"):
            lo, hi = rate["ci95"]
            ax.errorbar(rate["rate"], i, xerr=[[max(0.0, rate["rate"] - lo)], [max(0.0, hi - rate["rate"])]],
                        fmt="none", ecolor="black", capsize=4)
        if half is not None:
            ax.plot(half, i, "o", color="#C44E52", label="ties as half" if i == 0 else None)
        ax.text(1.01, i, f"{rate['rate']:.0%} (n={rate['n']:g})", va="center", fontsize=8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("win rate of the first condition (decisive votes); 95% two-way bootstrap interval\n"
                  "(participants x pairs; h vs people: Wilson over pairs)", fontsize=8)
    if any(r[2] is not None for r in rows):
        ax.legend(loc="lower right", fontsize=8)
    if not rows:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return str(path)
