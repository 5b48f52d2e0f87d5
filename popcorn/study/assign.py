"""Who sees what: each participant's subset of pairs, its order, the sides and the attention checks.

    tasks = assign(item_ids, seed="7f3a...", participant=3, per_participant=10, attention_checks=1)
    -> [{"item": "i03", "swap": False, "check_of": None}, ..., {"item": "i03", "swap": True, "check_of": 0}]

Everything is drawn from one random generator seeded by (the study's recorded seed, the participant's number), so the
same study and participant always get the same list, and a study can be re-drawn from its seed alone.

- subset: `per_participant` distinct pairs drawn uniformly without replacement (all of them when there are fewer);
- order: a uniform random permutation;
- sides: balanced within a participant: half of the pairs (the odd one at random) show the pair's "a" video on the
  right (`swap`), which pair is swapped is random; a participant who always presses the left button therefore
  cannot favour either condition;
- exposure balance (`shown`, the number of participants each pair was given so far): the subset is the least-seen
  pairs, ties broken at random, so every pair reaches about the same number of people; then a random order;
- repeats (`repeats`): that many of the shown pairs are shown again, at least two positions later (one other pair
  between), with the sides swapped: a consistency measure, reported, never an exclusion on its own;
- gold attention checks (`gold_checks` drawn from `gold`, the study's gold items: one side intact, the other frozen,
  both under media ids of their own) at random positions, sides at random.
"""

from __future__ import annotations

import random

MIN_GAP = 2  # an attention check comes at least this many tasks after the pair it repeats


def rng_for(seed: str | int, participant: int) -> random.Random:
    return random.Random(f"popcorn-study:{seed}:{participant}")  # str seeds hash deterministically (sha512)


def assign(items: list[str], seed: str | int, participant: int, per_participant: int, repeats: int = 0,
           gold: list[str] = (), gold_checks: int = 0, shown: dict[str, int] | None = None) -> list[dict]:
    """The tasks of participant number `participant` (0, 1, ...): see the module's docstring."""
    if not items:
        raise ValueError("a study needs at least one pair")
    if len(set(items)) != len(items):
        raise ValueError("pair ids must be unique")
    rng = rng_for(seed, participant)
    n = min(int(per_participant), len(items)) if per_participant else len(items)
    if shown is None:
        chosen = rng.sample(list(items), n)  # a uniform subset in a uniform order
    else:  # the least-seen pairs first, ties at random; then a uniform order
        chosen = sorted(items, key=lambda item: (shown.get(item, 0), rng.random()))[:n]
        rng.shuffle(chosen)
    swaps = [False] * (n // 2) + [True] * (n // 2)
    if n % 2:
        swaps.append(rng.random() < 0.5)
    rng.shuffle(swaps)
    tasks = [{"item": item, "swap": swap, "check_of": None} for item, swap in zip(chosen, swaps)]

    checks = max(0, min(int(repeats), max_checks(n)))
    originals = rng.sample(tasks[: n - 1], checks) if checks else []  # never the last pair: a repeat must follow it
    for original in originals:
        start = next(i for i, t in enumerate(tasks) if t is original) + MIN_GAP  # <= len(tasks): a task follows
        position = rng.randint(start, len(tasks))
        tasks.insert(position, {"item": original["item"], "swap": not original["swap"], "check_of": original})
    for item in rng.sample(list(gold), max(0, min(int(gold_checks), len(gold)))):
        tasks.insert(rng.randint(0, len(tasks)), {"item": item, "swap": rng.random() < 0.5, "check_of": None,
                                                  "gold": True})
    for task in tasks:  # the reference to the original task becomes its position
        if task["check_of"] is not None:
            task["check_of"] = next(i for i, t in enumerate(tasks) if t is task["check_of"])
    return tasks


def max_checks(n: int) -> int:
    """At most one attention check per three pairs shown (and none for fewer than three)."""
    return n // 3
