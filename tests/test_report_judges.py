"""The near-copy detector on planted copies of real MicroLens titles, and on pairs of different titles."""

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
    assert [title for _, title in nearest] == titles[:20]  # each planted copy finds its own source


def test_novelty_flags_a_copied_reference(corpus):
    index = judges.NgramIndex(corpus.table["title"].astype(str).tolist()[:2000])
    source = index.titles[42]
    found = judges.novelty([source + " #viral", "an entirely fresh title about quantum origami"],
                           [["unrelated reference", source], ["unrelated reference"]], index)
    assert found[0]["ref_copy"] and found[0]["ref_title"] == source and found[0]["corpus_copy"]
    assert not found[1]["ref_copy"] and found[1]["ref_similarity"] < judges.NEAR_COPY
    assert judges.novelty(["x y z"], [[]], index)[0]["ref_copy"] is False  # nothing shown: no copy of a reference


def test_human_base_rate_leaves_each_title_itself_out(corpus):
    ids = corpus.table["video_id"].tolist()[:300]
    base = judges.human_base_rate(ids)
    assert base["n"] == 300 and 0.0 <= base["share"] < 0.5  # a title is never its own near-copy
    assert base["median_corpus_similarity"] < judges.NEAR_COPY


@pytest.mark.slow
def test_second_judge_is_h_without_retrieval_loaded_once(corpus, monkeypatch):
    from popcorn.popularity import Predictor, get_predictor

    judges._SECOND_JUDGES.clear()
    second = judges.second_judge()
    assert list(second.info["settings"]["retrieval"]) == []  # nothing in it looks up neighbours
    assert second.info["fingerprint"] == corpus.fingerprint
    assert tuple(get_predictor().info["settings"]["retrieval"])  # h itself retrieves: the judges differ
    monkeypatch.setattr(Predictor, "load", classmethod(lambda cls, path: pytest.fail(f"loaded {path} again")))
    assert judges.second_judge() is second  # a second report in the process reuses it
    labels = judges.second_judge_labels([{"title": "my cat learns to skateboard", "category": None}] * 2)
    assert len(labels) == 2 and labels[0] == labels[1] and 0.0 <= labels[0] < 20.0
