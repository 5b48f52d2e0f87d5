"""The near-copy detector on planted copies of real MicroLens titles (Jaccard and containment), on pairs of different
titles, and the held-out judge (trained on the judge set only)."""

import random

import pytest

from popcorn.experiments import judges


@pytest.fixture(scope="module")
def titles(corpus):
    pool = [t for t in corpus.table["title"].astype(str) if len(judges.normalise(t).split()) >= 4
            and len(judges.normalise(t)) >= 20]
    return random.Random(13).sample(pool, 300)


EDITS = {
    "case and punctuation": lambda t, rng: t.upper().replace(" ", " - ", 1) + "!!",
    "a hashtag added": lambda t, rng: t + " #fyp",
    "an emoji added": lambda t, rng: "🔥 " + t + " 😂",
    "one word changed": lambda t, rng: _replace_word(t, rng),
    "the last word cut": lambda t, rng: " ".join(t.split()[:-1]),
    "two words swapped": lambda t, rng: _swap(t, rng),
    "embedded in a longer title": lambda t, rng: "Day 3 of my challenge: " + t + " | part two, wait for the end #fyp",
}


def _replace_word(title, rng):
    words = title.split()
    words[rng.randrange(len(words))] = "amazing"
    return " ".join(words)


def _swap(title, rng):
    words = title.split()
    i = rng.randrange(len(words) - 1)
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def test_normalise():
    assert judges.normalise("  Ｃａｔ's   BIG—day!! #fyp ") == "cat s big day fyp"
    assert judges.similarity("A cat, on a skateboard!", "a CAT on a skateboard") == 1.0
    assert judges.similarity("", "anything") == 0.0


@pytest.mark.parametrize("edit", list(EDITS))
def test_planted_copies_are_caught(titles, edit):
    rng = random.Random(7)
    caught = [judges.is_near_copy(EDITS[edit](t, rng), t) for t in titles]
    assert sum(caught) / len(caught) >= 0.9, f"{edit}: {sum(caught)}/{len(caught)} caught"


def test_different_titles_are_not_copies(titles, corpus):
    rng = random.Random(3)
    all_titles = corpus.table["title"].astype(str).tolist()
    pairs = [(t, rng.choice(all_titles)) for t in titles for _ in range(10)]
    pairs = [(a, b) for a, b in pairs if judges.normalise(a) != judges.normalise(b)]
    flagged = sum(judges.is_near_copy(a, b) for a, b in pairs)
    assert flagged / len(pairs) <= 0.005, f"{flagged} of {len(pairs)} random pairs flagged"


def test_index_agrees_with_the_pairwise_measure(titles):
    index = judges.NgramIndex(titles[:100])
    probes = [EDITS["one word changed"](t, random.Random(1)) for t in titles[:20]] + ["a completely new idea here"]
    sims = index.jaccard(probes)
    for i, probe in enumerate(probes):
        for j in (0, i % 100, 57):
            assert sims[i, j] == pytest.approx(judges.similarity(probe, titles[j]), abs=1e-6)
    nearest = index.nearest(probes[:20])
    assert [n[1] for n in nearest] == titles[:20]  # each planted copy finds its own source
    jac, contained = index.similarities(probes[:1])
    for j in (0, 57):
        assert contained[0, j] == pytest.approx(judges.containment(probes[0], titles[j]), abs=1e-6)


def test_novelty_flags_a_copied_reference(corpus):
    index = judges.NgramIndex(corpus.table["title"].astype(str).tolist()[:2000])
    source = index.titles[42]
    found = judges.novelty([source + " #viral", "an entirely fresh title about quantum origami"],
                           [["unrelated reference", source], ["unrelated reference"]], index)
    assert found[0]["ref_copy"] and found[0]["ref_title"] == source and found[0]["corpus_copy"]
    assert not found[1]["ref_copy"] and found[1]["ref_similarity"] < judges.NEAR_COPY
    assert judges.novelty(["x y z"], [[]], index)[0]["ref_copy"] is False  # nothing shown: no copy of a reference


def test_containment_catches_a_reference_inside_a_longer_title(corpus):
    source = next(t for t in corpus.table["title"].astype(str) if 25 <= len(judges.normalise(t)) <= 40)
    longer = f"{source} | the whole story in 60 seconds, day 3 of my challenge, wait for the end #fyp #viral"
    assert judges.similarity(longer, source) < judges.NEAR_COPY  # Jaccard alone misses it
    [found] = judges.novelty([longer], [["unrelated reference", source]], judges.NgramIndex([source, "other"]))
    assert found["ref_contained"] and found["ref_copy"] and found["ref_title"] == source
    assert found["corpus_contained"] and found["corpus_copy"]
    assert judges.containment(longer, "short one") == 0.0  # a short title is contained by chance: not counted


def test_human_base_rate_leaves_each_title_itself_out(corpus):
    ids = corpus.table["video_id"].tolist()[:300]
    base = judges.human_base_rate(ids)
    assert base["n"] == 300 and 0.0 <= base["share"] < 0.5  # a title is never its own near-copy
    assert base["median_corpus_similarity"] < judges.NEAR_COPY


def test_heldout_judge_never_saw_the_retrieval_corpus_and_is_loaded_once(monkeypatch):
    from popcorn.popularity import Predictor, get_predictor
    from popcorn.retrieval import split
    from popcorn.popularity import judges as popularity_judges
    from popcorn.retrieval.corpus import load_corpus

    popularity_judges._HELDOUT.clear()
    heldout = popularity_judges.heldout_judge()
    judge_set = load_corpus(part="judge")
    assert heldout.info["fingerprint"] == judge_set.fingerprint and heldout.info["n_train"] == len(judge_set)
    trained = set(heldout.model.memory.video_ids.tolist())
    assert trained == set(judge_set.table["video_id"])
    assert not trained & set(load_corpus().table["video_id"])  # nothing PE or the studio retrieves from
    assert set(get_predictor().model.memory.video_ids.tolist()) == set(load_corpus().table["video_id"])
    whole = load_corpus(part="all")
    assert split.describe(whole.table["video_id"])["counts"] == {
        p: len(load_corpus(part=p)) for p in ("retrieval", "judge", "human")}
    assert "5-fold" in heldout.info["validation"]["kind"]  # validated out of fold on the judge set
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, path: pytest.fail(f"loaded {path} again")))
    assert popularity_judges.heldout_judge() is heldout  # a second report in the process reuses it


def test_the_split_is_fixed_by_seed_and_id():
    from popcorn.retrieval import split

    ids = list(range(1, 5001))
    parts = split.parts(ids)
    assert (split.parts(ids[::-1])[::-1] == parts).all()  # order does not matter
    assert (split.parts(ids[:100]) == parts[:100]).all()  # nor the rest of the corpus
    shares = {p: float((parts == p).mean()) for p in split.PARTS}
    assert shares["judge"] == pytest.approx(0.2, abs=0.02) and shares["human"] == pytest.approx(0.1, abs=0.015)
    assert (split.parts(ids, seed=split.SEED + 1) != parts).any()  # another seed, another split
