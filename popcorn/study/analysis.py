"""What the votes say, with honest uncertainty. Plain functions over the vote dicts of StudyStore.votes().

Each vote names the chosen video in pair terms: choice "a" / "b" / "tie" / "both_bad", the pair's two conditions
(condition_a, condition_b), h of each side (h_a, h_b), prompt_type, category, and which side the participant pressed.
Attention-check repeats (check_of set) are used only to score the participant, never counted twice.

- win rates per pair of conditions, with ties counted three ways, all reported: `apart` (decisive votes only: ties
  and "both bad" reported beside, not in the rate), `half` (a tie or "both bad" is half a win to each side) and
  `share` (wins over all votes). We could not read the paper's own tie rule from the sources we had; `half` is the
  usual convention. 95% intervals: Wilson's score interval, and a bootstrap over participants (their votes are not
  independent) for the `apart` rate.
- Bradley-Terry strengths by maximum likelihood (Hunter's MM iterations; a tie is half a win each way), scaled to a
  geometric mean of 1, with percentile intervals from a bootstrap over participants.
- breakdowns of the win rates by prompt type (abstract / concrete) and by category;
- agreement between raters on the pairs that two or more people answered: Fleiss' kappa (units of unequal size) and
  Krippendorff's alpha (nominal), over the four answers in pair terms;
- voter screening, each rule stated in the result: attention checks failed (half or more of them); one-sided voting
  (an exact two-sided binomial test that left and right presses are equally likely, p < 0.01, on 6+ decisive votes);
  a constant button (the same button, e.g. always "tie", on all of 5+ pairs); disagreement with the crowd beyond
  chance (a one-sided exact binomial test of the voter's agreement with the other voters' majority against the
  agreement rate of all other voters, p < 0.01, on 5+ pairs that have such a majority). `screened` repeats the win
  rates without them.
- h vs people: on each pair with a majority of decisive votes, did the video with the higher h win? The rate with its
  Wilson interval (and per vote, for reference).
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections import Counter, defaultdict

from popcorn import stats

Z95 = 1.959963984540054
OUTCOMES = ("a", "b", "tie", "both_bad")
SIDE_ALPHA, CROWD_ALPHA = 0.01, 0.01
MIN_SIDE_VOTES, MIN_CONSTANT, MIN_CROWD = 6, 5, 5
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


def _binom_pmf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0 if k == 0 else 0.0
    if p >= 1:
        return 1.0 if k == n else 0.0
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    + k * math.log(p) + (n - k) * math.log1p(-p))


def binom_two_sided(k: int, n: int, p: float = 0.5) -> float:
    """Exact two-sided binomial p-value: the probability of outcomes no more likely than k."""
    if n == 0:
        return 1.0
    observed = _binom_pmf(k, n, p)
    return min(1.0, sum(q for q in (_binom_pmf(i, n, p) for i in range(n + 1)) if q <= observed * (1 + 1e-9)))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    return min(1.0, sum(_binom_pmf(i, n, p) for i in range(0, k + 1)))


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
    """Krippendorff's alpha for nominal data from per-unit category counts (units with one rating are dropped)."""
    rows = [r for r in counts if sum(r) >= 2]
    if not rows:
        return None
    k = len(rows[0])
    o = [[0.0] * k for _ in range(k)]  # the coincidence matrix
    for r in rows:
        m = sum(r)
        for c in range(k):
            for d in range(k):
                pairs = r[c] * (r[d] - 1) if c == d else r[c] * r[d]
                o[c][d] += pairs / (m - 1)
    n_c = [sum(o[c]) for c in range(k)]
    n = sum(n_c)
    d_o = sum(o[c][d] for c in range(k) for d in range(k) if c != d)
    d_e = sum(n_c[c] * n_c[d] for c in range(k) for d in range(k) if c != d)
    if d_e == 0:
        return None
    return 1 - (n - 1) * d_o / d_e


# ------------------------------------------------------------------------------------------------------------ votes


def first_showings(votes: list[dict]) -> list[dict]:
    return [v for v in votes if v.get("check_of") is None]


def _pair_key(v: dict) -> tuple[str, str]:
    return tuple(sorted((str(v["condition_a"]), str(v["condition_b"]))))  # type: ignore[return-value]


def _winner(v: dict) -> str | None:
    return v["condition_a"] if v["choice"] == "a" else v["condition_b"] if v["choice"] == "b" else None


def _rate(k: float, n: float) -> dict:
    lo, hi = wilson(k, n)
    return {"rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)], "k": k, "n": n}


def _bootstrap_rate(votes: list[dict], x: str, draws: int, seed: int) -> list[float] | None:
    """95% percentile interval of x's decisive win rate, resampling participants (their votes are not independent):
    the report's group bootstrap (popcorn/stats.py) over decisive votes, grouped by participant."""
    decisive = [(1 if w == x else -1, v["participant"]) for v in votes if (w := _winner(v)) is not None]
    if len({person for _, person in decisive}) < 2:
        return None  # one participant (or none) with a decisive vote: nothing to resample between
    outcomes, people = zip(*decisive)
    return list(stats.bootstrap_interval(list(outcomes), list(people), n_boot=draws, seed=seed))


def win_rates(votes: list[dict], bootstrap: int = BOOTSTRAP, seed: int = 0) -> list[dict]:
    """One row per pair of conditions (x < y by name): x's win rate three ways (see the module's docstring)."""
    groups = defaultdict(list)
    for v in first_showings(votes):
        groups[_pair_key(v)].append(v)
    rows = []
    for (x, y), vs in sorted(groups.items()):
        counts = Counter(_winner(v) if _winner(v) is not None else v["choice"] for v in vs)
        x_wins, y_wins, ties, bad = counts[x], counts[y], counts["tie"], counts["both_bad"]
        n = len(vs)
        apart = _rate(x_wins, x_wins + y_wins)
        apart["bootstrap_ci95"] = _bootstrap_rate(vs, x, bootstrap, seed) if bootstrap else None
        rows.append({"x": x, "y": y, "votes": n, "x_wins": x_wins, "y_wins": y_wins, "ties": ties,
                     "both_bad": bad, "apart": apart, "half": _rate(x_wins + 0.5 * (ties + bad), n),
                     "share": _rate(x_wins, n), "tie_rate": _rate(ties, n), "both_bad_rate": _rate(bad, n)})
    return rows


def _comparisons(votes: list[dict]) -> Counter:
    """(winner, loser) -> weight: a decisive vote is one win, a tie or "both bad" half a win each way."""
    out: Counter = Counter()
    for v in votes:
        a, b = str(v["condition_a"]), str(v["condition_b"])
        if v["choice"] == "a":
            out[(a, b)] += 1.0
        elif v["choice"] == "b":
            out[(b, a)] += 1.0
        else:
            out[(a, b)] += 0.5
            out[(b, a)] += 0.5
    return out


def strengths(votes: list[dict], bootstrap: int = 200, seed: int = 0) -> dict:
    """Bradley-Terry strengths of the conditions with 95% bootstrap intervals (resampling participants)."""
    votes = first_showings(votes)
    players = sorted({str(v[k]) for v in votes for k in ("condition_a", "condition_b")})
    if len(players) < 2:
        return {"players": players, "strengths": {}, "note": "fewer than two conditions"}
    fit = bradley_terry([(i, j, w) for (i, j), w in _comparisons(votes).items()], players)
    prior = fit.pop("__prior__")
    by_person = defaultdict(list)
    for v in votes:
        by_person[v["participant"]].append(v)
    per_person = [_comparisons(vs) for _, vs in sorted(by_person.items())]
    rng = random.Random(seed)
    samples = defaultdict(list)
    for _ in range(bootstrap if len(per_person) >= 2 else 0):
        total: Counter = Counter()
        for c in rng.choices(per_person, k=len(per_person)):
            total.update(c)
        boot = bradley_terry([(i, j, w) for (i, j), w in total.items()], players)
        boot.pop("__prior__")
        for p, value in boot.items():
            samples[p].append(value)
    out = {}
    for p in players:
        ordered = sorted(samples[p])
        ci = ([round(ordered[int(0.025 * (len(ordered) - 1))], 4), round(ordered[int(0.975 * (len(ordered) - 1))], 4)]
              if ordered else None)
        out[p] = {"strength": round(fit[p], 4), "ci95": ci}
    note = "" if len(players) > 2 else "two conditions: the strength ratio is the odds of the win rate with ties half"
    return {"players": players, "strengths": out, "prior": prior, "bootstrap": bootstrap, "note": note}


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
    """Per participant: attention checks answered and failed (a different answer, in pair terms, to the repeat)."""
    first = {(v["participant"], v["task"]): v for v in votes}
    out: dict[str, dict] = defaultdict(lambda: {"checks": 0, "failed": 0})
    for v in votes:
        if v.get("check_of") is None:
            continue
        original = first.get((v["participant"], v["check_of"]))
        if original is None:
            continue
        out[v["participant"]]["checks"] += 1
        out[v["participant"]]["failed"] += original["choice"] != v["choice"]
    return dict(out)


def screen(votes: list[dict]) -> list[dict]:
    """Every participant with their checks, side balance and crowd agreement; `flags` lists the rules they broke.

    One pass over the votes: the decisive tallies per pair are counted once, and each voter's "others' majority" is
    that tally minus their own vote."""
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
            others = Counter(tally[v["item"]])
            if v["choice"] in ("a", "b"):
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
        c = checks.get(person, {"checks": 0, "failed": 0})
        flags = []
        if c["checks"] and c["failed"] * 2 >= c["checks"]:
            flags.append("attention")
        if left + right >= MIN_SIDE_VOTES and side_p < SIDE_ALPHA:
            flags.append("one-sided")
        if len(mine) >= MIN_CONSTANT and len({v["side"] for v in mine}) == 1:
            flags.append("constant")
        if crowd_p is not None and m >= MIN_CROWD and crowd_p < CROWD_ALPHA:
            flags.append("off-crowd")
        rows.append({"participant": person, "votes": len(mine), "left": left, "right": right,
                     "side_p": round(side_p, 5), "crowd_agree": agree, "crowd_pairs": m,
                     "crowd_rate_others": None if p0 is None else round(p0, 4),
                     "crowd_p": None if crowd_p is None else round(crowd_p, 5), **c, "flags": flags})
    return rows


def h_agreement(votes: list[dict]) -> dict:
    """How often the video h scores higher is the one people chose (per pair by majority, and per vote)."""
    tally = defaultdict(Counter)
    h = {}
    for v in first_showings(votes):
        if v["choice"] in ("a", "b"):
            tally[v["item"]][v["choice"]] += 1
        h[v["item"]] = (v.get("h_a"), v.get("h_b"))
    pairs_agree = pairs_n = votes_agree = votes_n = 0
    skipped = 0
    for item, c in tally.items():
        h_a, h_b = h[item]
        if h_a is None or h_b is None or h_a == h_b:
            skipped += 1
            continue
        favoured = "a" if h_a > h_b else "b"
        votes_agree += c[favoured]
        votes_n += c["a"] + c["b"]
        if c["a"] != c["b"]:
            pairs_n += 1
            pairs_agree += ("a" if c["a"] > c["b"] else "b") == favoured
    return {"pairs": _rate(pairs_agree, pairs_n), "votes": _rate(votes_agree, votes_n),
            "pairs_skipped_no_h": skipped,
            "note": "per pair: the majority of decisive votes vs the higher h; pairs without a majority are left out"}


def breakdown(votes: list[dict], key: str, bootstrap: int = 0) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for v in votes:
        groups[str(v.get(key) or "unknown")].append(v)
    return {name: win_rates(vs, bootstrap=bootstrap) for name, vs in sorted(groups.items())}


def analyse(votes: list[dict], bootstrap: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Everything above for one study's votes."""
    screening = screen(votes)
    flagged = {r["participant"] for r in screening if r["flags"]}
    kept = [v for v in votes if v["participant"] not in flagged]
    return {
        "votes": len(votes), "first_showings": len(first_showings(votes)),
        "participants": len({v["participant"] for v in votes}),
        "win_rates": win_rates(votes, bootstrap, seed),
        "bradley_terry": strengths(votes, bootstrap=min(bootstrap, 200), seed=seed),
        "by_prompt_type": breakdown(votes, "prompt_type"),
        "by_category": breakdown(votes, "category"),
        "agreement": agreement(votes),
        "attention_checks": {"answered": sum(r["checks"] for r in screening),
                             "failed": sum(r["failed"] for r in screening)},
        "voters": screening,
        "flagged": sorted(flagged),
        "screened": {"excluded": sorted(flagged), "win_rates": win_rates(kept, bootstrap, seed)},
        "h_vs_people": h_agreement(votes),
        "rules": {"one-sided": f"exact two-sided binomial test of left vs right presses, p < {SIDE_ALPHA}, "
                               f"{MIN_SIDE_VOTES}+ decisive votes",
                  "constant": f"the same button (left, right, tie or both bad) on all of {MIN_CONSTANT}+ pairs",
                  "off-crowd": f"one-sided exact binomial test of agreement with the other voters' majority against "
                               f"the other voters' agreement rate, p < {CROWD_ALPHA}, {MIN_CROWD}+ pairs",
                  "attention": "half or more of the attention checks answered differently from the first showing"},
    }


# ------------------------------------------------------------------------------------------------------------ exports

VOTE_COLUMNS = ["vote", "participant", "task", "item", "check_of", "side", "a_on_left", "choice", "condition_a",
                "condition_b", "run_a", "run_b", "h_a", "h_b", "query", "factor", "prompt_type", "category", "reason",
                "created"]


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


def summary_lines(result: dict) -> list[str]:
    """A short plain-text summary (the CLI's and the tab's)."""
    lines = [f"{result['votes']} votes from {result['participants']} participants "
             f"({result['first_showings']} first showings)"]
    for r in result["win_rates"]:
        a = r["apart"]
        if a["rate"] is not None:
            lines.append(f"{r['x']} vs {r['y']}: {r['x']} wins {a['rate']:.1%} of decisive votes "
                         f"[{a['ci95'][0]:.1%}, {a['ci95'][1]:.1%}] (n={a['n']}); ties half: {r['half']['rate']:.1%}; "
                         f"ties {r['ties']}, both bad {r['both_bad']}")
        else:
            lines.append(f"{r['x']} vs {r['y']}: no decisive votes yet ({r['votes']} votes)")
    h = result["h_vs_people"]["pairs"]
    if h["n"]:
        lines.append(f"h agrees with people on {h['rate']:.1%} of pairs [{h['ci95'][0]:.1%}, {h['ci95'][1]:.1%}] "
                     f"(n={h['n']})")
    ag = result["agreement"]
    lines.append(f"agreement: Fleiss' kappa {ag['fleiss_kappa']}, Krippendorff's alpha {ag['krippendorff_alpha']} "
                 f"over {ag['pairs_with_2plus_ratings']} pairs")
    lines.append(f"attention checks failed: {result['attention_checks']['failed']} of "
                 f"{result['attention_checks']['answered']}; flagged voters: {len(result['flagged'])}")
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
        lo, hi = rate["ci95"]
        ax.barh(i, rate["rate"], color="#4C72B0" if half is not None else "#55A868", height=0.55)
        ax.errorbar(rate["rate"], i, xerr=[[rate["rate"] - lo], [hi - rate["rate"]]], fmt="none", ecolor="black",
                    capsize=4)
        if half is not None:
            ax.plot(half, i, "o", color="#C44E52", label="ties as half" if i == 0 else None)
        ax.text(1.01, i, f"{rate['rate']:.0%} (n={rate['n']:g})", va="center", fontsize=8)
    ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("win rate of the first condition (decisive votes), 95% Wilson interval")
    if any(r[2] is not None for r in rows):
        ax.legend(loc="lower right", fontsize=8)
    if not rows:
        ax.text(0.5, 0.5, "no votes yet", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return str(path)
