"""Randomisation of a study: subsets, order and sides are balanced, reproducible from the seed, and attention checks
repeat a pair later with its sides swapped."""

from __future__ import annotations

from collections import Counter

import pytest

from popcorn.study import analysis
from popcorn.study.assign import MIN_GAP, assign

ITEMS = [f"p{i:02d}" for i in range(12)]
PEOPLE = 2000


def test_same_seed_same_tasks_other_seed_other_tasks():
    assert assign(ITEMS, "s1", 7, 6, 1) == assign(ITEMS, "s1", 7, 6, 1)
    assert assign(ITEMS, "s1", 7, 6, 1) != assign(ITEMS, "s2", 7, 6, 1)
    assert assign(ITEMS, "s1", 7, 6, 1) != assign(ITEMS, "s1", 8, 6, 1)


def test_subset_order_and_sides_are_balanced():
    shown, first, swapped, per_person_swaps = Counter(), Counter(), Counter(), Counter()
    for person in range(PEOPLE):
        tasks = assign(ITEMS, "balance", person, 6, 0)
        assert len(tasks) == 6 and len({t["item"] for t in tasks}) == 6
        first[tasks[0]["item"]] += 1
        for t in tasks:
            shown[t["item"]] += 1
            swapped[t["item"]] += t["swap"]
        per_person_swaps[sum(t["swap"] for t in tasks)] += 1
    assert per_person_swaps == {3: PEOPLE}  # every participant sees exactly half of the pairs swapped
    expected = PEOPLE * 6 / len(ITEMS)  # each pair shown 1000 times; a binomial sd ~ 26
    for item in ITEMS:
        assert abs(shown[item] - expected) < 5 * (expected * (1 - 6 / 12)) ** 0.5, shown
        # the side is a fair coin per pair: two-sided exact binomial test at 0.001
        assert analysis.binom_two_sided(swapped[item], shown[item]) > 0.001, (item, swapped[item], shown[item])
        # every pair comes first about equally often (1/12 of the people)
        assert abs(first[item] - PEOPLE / 12) < 5 * (PEOPLE / 12 * 11 / 12) ** 0.5, first


def test_positions_are_uniform():
    # chi-square of (pair, position) counts against uniform: 12 x 6 cells, 55 degrees of freedom -> 99.9% < 99.6
    cells = Counter()
    for person in range(PEOPLE):
        for position, t in enumerate(assign(ITEMS, "order", person, 6, 0)):
            cells[(t["item"], position)] += 1
    expected = PEOPLE * 6 / (12 * 6)
    chi2 = sum((cells[(i, p)] - expected) ** 2 / expected for i in ITEMS for p in range(6))
    assert chi2 < 99.6, chi2


@pytest.mark.parametrize("n_items, per_person, checks", [(12, 6, 2), (3, 10, 1), (5, 5, 9), (2, 2, 1)])
def test_attention_checks_repeat_a_pair_later_with_sides_swapped(n_items, per_person, checks):
    items = ITEMS[:n_items]
    for person in range(200):
        tasks = assign(items, "checks", person, per_person, checks)
        shown = min(per_person, n_items)
        repeats = [(i, t) for i, t in enumerate(tasks) if t["check_of"] is not None]
        assert len(repeats) == min(checks, shown // 3)
        assert len(tasks) == shown + len(repeats)
        for i, t in repeats:
            original = tasks[t["check_of"]]
            assert original["check_of"] is None and original["item"] == t["item"]
            assert original["swap"] != t["swap"]
            assert i - t["check_of"] >= MIN_GAP


def test_all_pairs_when_fewer_than_asked_and_errors_on_bad_input():
    assert sorted(t["item"] for t in assign(ITEMS[:4], "x", 0, 10)) == ITEMS[:4]
    with pytest.raises(ValueError):
        assign([], "x", 0, 3)
    with pytest.raises(ValueError):
        assign(["a", "a"], "x", 0, 3)


def test_exposure_balance_gives_every_pair_to_about_as_many_people():
    items = [f"i{k:02d}" for k in range(13)]
    shown = dict.fromkeys(items, 0)
    for person in range(40):  # 40 people x 5 pairs = 200 showings over 13 pairs: 15 or 16 each
        for t in assign(items, "seed", person, 5, shown=shown):
            shown[t["item"]] += 1
    assert max(shown.values()) - min(shown.values()) <= 1
    # still seeded: the same counts give the same draw
    again = dict.fromkeys(items, 0)
    assert assign(items, "seed", 0, 5, shown=again) == assign(items, "seed", 0, 5, shown=dict.fromkeys(items, 0))


def test_gold_checks_are_inserted_once_each_and_never_replace_a_pair():
    items = [f"i{k}" for k in range(10)]
    tasks = assign(items, "s", 3, 6, gold=["g0", "g1", "g2"], gold_checks=2)
    gold = [t for t in tasks if t.get("gold")]
    assert len(tasks) == 8 and len(gold) == 2 and {t["item"] for t in gold} < {"g0", "g1", "g2"}
    assert len({t["item"] for t in tasks if not t.get("gold")}) == 6
    assert all(t["check_of"] is None for t in gold)
