"""A first plan before the whole retrieval index exists (popcorn.retrieval.index.QuickRetriever): it routes on a sample of
the titles, embeds only the routed categories, searches them exactly as the whole index does, and leaves what it
embedded for the whole index to reuse."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from popcorn.retrieval import embed, index as retrieval
from popcorn.retrieval.index import QuickRetriever, quick_sample
from popcorn.retrieval.routing import IDEAS_DIR, BlendRouter, idea_bank, read_labelled
from popcorn.types import StageError

QUERIES = IDEAS_DIR / "routing_queries.tsv"


def labelled():
    return read_labelled(QUERIES)


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POPCORN_FIRST_PLAN", raising=False)
    return tmp_path


def seed(corpus, embedder, vectors, rows):
    """Put the whole index's vectors of these rows into the (fresh) cache, as a quick retrieval would have left them."""
    folder = embed.config.cache_dir() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{corpus.fingerprint}{embed.PART}seeded-{embedder.cache_key}"
    titles = corpus.table["title"].tolist()
    np.savez(folder / f"{name}.keys.npz", keys=embed.title_keys([titles[i] for i in rows]), model=np.array(embedder.name))
    np.save(folder / f"{name}.npy", vectors[rows])


def all_but(corpus, n):
    """Rows of every title but the last n titles that occur once in the corpus (a repeated title is one embedding)."""
    titles = corpus.table["title"].tolist()
    counts = Counter(titles)
    left = [i for i in range(len(titles)) if counts[titles[i]] == 1][-n:]
    return np.setdiff1d(np.arange(len(titles)), left), np.array(left)


def spy(embedder, monkeypatch) -> list:
    """Every list of texts the embedder is asked to embed from now on (and it still embeds them)."""
    calls = []
    real = embedder.encode_many
    monkeypatch.setattr(embedder, "encode_many", lambda texts: calls.append(list(texts)) or real(texts))
    return calls


def test_the_sample_is_stratified_stable_and_a_fifth_of_the_corpus(corpus):
    rows = quick_sample(corpus)
    assert np.array_equal(rows, quick_sample(corpus))  # the same sample in every process
    assert len(set(rows.tolist())) == len(rows) and 2500 <= len(rows) <= 4000
    labels = corpus.table["category"].to_numpy()
    for category, n in corpus.table["category"].value_counts().items():
        kept = int((labels[rows] == category).sum())
        assert kept == min(n, max(retrieval.QUICK_FLOOR, round(retrieval.QUICK_SAMPLE * n / len(corpus))))


def test_a_router_on_the_sample_routes_like_the_whole_one(retriever):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    rows = quick_sample(corpus)
    bank = idea_bank((QUERIES.name,))  # the queries below are one of the bank's files: routed by the others'
    sampled = BlendRouter(corpus, embedder, vectors[rows], rows=rows, ideas=bank)
    whole = BlendRouter(corpus, embedder, vectors, ideas=bank)
    assert sampled.sampled and not whole.sampled and sampled.neighbours < whole.neighbours
    pairs = labelled()
    queries = embedder.encode([q for _, q in pairs])
    same = np.mean([sampled.route(v, text=q).categories[0] == whole.route(v, text=q).categories[0]
                    for v, (_, q) in zip(queries, pairs)])
    right = np.mean([sampled.route(v, text=q).categories[0] == c for v, (c, q) in zip(queries, pairs)])
    assert same >= 0.93  # measured 0.96-0.97 (bench/RESULTS.md)
    assert right >= 0.87  # the whole router: 0.913


def test_quick_references_are_the_whole_index_references_for_the_same_route(retriever, fresh_cache):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    labels = corpus.table["category"].to_numpy()
    query = "how to make crispy fried chicken at home"
    whole = retriever.retrieve(query, 10)
    members = np.flatnonzero(np.isin(labels, whole.matched_categories))
    seed(corpus, embedder, vectors, np.union1d(quick_sample(corpus), members))
    quick = QuickRetriever(corpus, embedder).retrieve(query, 10)
    assert quick.index.startswith("quick: routed on") and whole.index == "full"
    assert quick.matched_categories == whole.matched_categories
    assert [(r.video_id, r.label) for r in quick.references] == [(r.video_id, r.label) for r in whole.references]
    assert [r.similarity for r in quick.references] == pytest.approx([r.similarity for r in whole.references],
                                                                     abs=2e-4)


def test_the_decision_quick_or_whole(retriever, fresh_cache, monkeypatch):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    assert isinstance(retrieval._quick(corpus, embedder, 0.1), QuickRetriever)  # nothing embedded yet
    assert retrieval.get_retriever(quick=True) is retriever  # a whole index held in this process always serves
    monkeypatch.setenv("POPCORN_FIRST_PLAN", "full")
    assert retrieval._quick(corpus, embedder, 0.1) is None
    monkeypatch.setenv("POPCORN_FIRST_PLAN", "soon")
    with pytest.raises(StageError) as err:
        retrieval._quick(corpus, embedder, 0.1)
    assert err.value.stage == "retrieve" and "POPCORN_FIRST_PLAN" in str(err.value)
    monkeypatch.delenv("POPCORN_FIRST_PLAN")
    seed(corpus, embedder, vectors, all_but(corpus, retrieval.QUICK_ENOUGH + 1)[0])
    assert isinstance(retrieval._quick(corpus, embedder, 0.1), QuickRetriever)
    seed(corpus, embedder, vectors, all_but(corpus, retrieval.QUICK_ENOUGH)[0])
    assert retrieval._quick(corpus, embedder, 0.1) is None  # the whole index is nearly free now: build it


def test_the_whole_index_reuses_what_quick_plans_embedded_and_drops_their_files(retriever, fresh_cache, monkeypatch):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    rows, left = all_but(corpus, 40)
    seed(corpus, embedder, vectors, rows)
    calls = spy(embedder, monkeypatch)
    index = retrieval.ReferenceIndex.build(corpus, embedder)
    titles = corpus.table["title"].tolist()
    assert sorted(t for c in calls for t in c) == sorted(titles[i] for i in left)  # only the titles no quick plan had embedded
    counts = Counter(titles)  # a repeated title has one cached vector, whichever row's it was (bf16 batches may
    once = [i for i in rows if counts[titles[i]] == 1]  # give its rows slightly different ones)
    assert np.array_equal(index.vectors[once], vectors[once])
    folder = fresh_cache / "embeddings"
    assert not list(folder.glob(f"*{embed.PART}*"))
    assert (folder / f"{corpus.fingerprint}-{embedder.cache_key}.npy").exists()


@pytest.mark.slow
def test_a_cold_quick_retrieval_embeds_the_sample_and_the_routed_category_only(retriever, fresh_cache):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    got = QuickRetriever(corpus, embedder).retrieve("a bowl of spicy noodles from a street stall", 10)
    assert got.index.startswith("quick") and got.matched_categories == ["Delicacy"]
    labels = corpus.table["category"].to_numpy()
    wanted = np.union1d(quick_sample(corpus), np.flatnonzero(labels == "Delicacy"))
    now, known = embed.known_titles(corpus, embedder)
    titles = corpus.table["title"].tolist()
    embedded = {titles[i] for i in wanted}
    assert set(np.flatnonzero(known)) == {i for i, t in enumerate(titles) if t in embedded}  # (a repeated title once)
    assert known.sum() < len(corpus) / 3  # 29% of the 12,502-title retrieval corpus (the sample is ~3,300 whatever its size)
    cosine = (now[wanted] * vectors[wanted]).sum(axis=1)
    # the same vectors the whole index holds (to bf16's rounding; int8, when asked for, moves more)
    assert cosine.min() > (0.97 if embed.corpus_precision() == "int8" else 0.999)
    assert {r.category for r in got.references} == {"Delicacy"} and len(got.references) == 10


def test_a_quick_retrieval_says_so_in_the_run_and_round_trips():
    from popcorn import pipeline
    from popcorn.types import Retrieval

    quick = Retrieval("q", ["Game"], [], [], index="quick: routed on 3,374 of 17,738 titles")
    assert "routed on 3,374 of 17,738" in pipeline.quick_note(quick) and "popcorn index" in pipeline.quick_note(quick)
    assert Retrieval.from_dict(quick.to_dict()) == quick
    assert pipeline.quick_note(Retrieval("q", ["Game"], [], [])) == "" and pipeline.quick_note(None) == ""
    assert Retrieval.from_dict({"query": "old row", "matched_categories": ["Game"]}).index == "full"



def test_the_background_fill_embeds_the_rest_in_chunks_sample_first_and_builds_nothing_twice(retriever, fresh_cache,
                                                                                          monkeypatch):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    sample = quick_sample(corpus)
    rows, left = all_but(corpus, 300)
    left_in_sample = np.intersect1d(left, sample)
    assert 0 < len(left_in_sample) < len(left)  # the case the order is about
    seed(corpus, embedder, vectors, rows)
    calls = spy(embedder, monkeypatch)
    assert retrieval.fill_index(corpus, embedder, chunk=100) == 300
    titles = corpus.table["title"].tolist()
    assert [len(c) for c in calls] == [100, 100, 100]
    assert set(calls[0][:len(left_in_sample)]) == {titles[i] for i in left_in_sample}  # the sample's titles first
    assert embed.known_titles(corpus, embedder)[1].all()
    calls.clear()
    assert retrieval.fill_index(corpus, embedder, chunk=100) == 0 and not calls  # nothing left: nothing embedded


def test_the_background_fill_steps_aside_while_a_plan_is_being_made(retriever, fresh_cache, monkeypatch):
    import threading

    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    rows, left = all_but(corpus, 200)
    seed(corpus, embedder, vectors, rows)
    calls = spy(embedder, monkeypatch)
    result = []
    with retrieval.foreground():
        filler = threading.Thread(target=lambda: result.append(retrieval.fill_index(corpus, embedder, chunk=100)))
        filler.start()
        filler.join(timeout=1.5)
        assert filler.is_alive() and calls == []  # waiting for the plan, having embedded nothing
    filler.join(timeout=60)
    assert not filler.is_alive() and result == [200] and [len(c) for c in calls] == [100, 100]


def test_the_studio_warm_up_fills_the_index_by_parts_unless_first_plans_wait_for_it(retriever, fresh_cache,
                                                                                     monkeypatch):
    from popcorn.serve import warm

    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    rows, _ = all_but(corpus, 150)
    seed(corpus, embedder, vectors, rows)
    monkeypatch.setenv("POPCORN_FIRST_PLAN", "full")  # then a plan builds the whole index itself, under its lock
    warm._index()
    assert not embed.known_titles(corpus, embedder)[1].all()
    monkeypatch.delenv("POPCORN_FIRST_PLAN")
    warm._index()
    assert embed.known_titles(corpus, embedder)[1].all()


def test_quick_plans_embed_each_title_once_whatever_routes_are_asked(retriever, fresh_cache, monkeypatch):
    """A public instance: visitors' routes cannot make the cache's parts hold more than one corpus' worth."""
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    sample = quick_sample(corpus)
    seed(corpus, embedder, vectors, sample)
    labels, titles = corpus.table["category"].to_numpy(), corpus.table["title"].tolist()
    new = np.flatnonzero((labels == "Delicacy") & ~embed.known_titles(corpus, embedder)[1])
    calls = spy(embedder, monkeypatch)
    quick = QuickRetriever(corpus, embedder)
    assert quick.retrieve("a bowl of spicy noodles from a street stall").matched_categories == ["Delicacy"]
    corpus_titles = set(titles)  # (the router's category descriptions are embedded too, once)
    embedded = [t for c in calls for t in c if t in corpus_titles]
    assert sorted(embedded) == sorted(titles[i] for i in new)  # the sample is not embedded again
    calls.clear()
    assert quick.retrieve("grandma's dumplings for the new year").matched_categories == ["Delicacy"]
    assert calls == []
    stored = sum(np.load(f, mmap_mode="r").shape[0] for f in (fresh_cache / "embeddings").glob(f"*{embed.PART}*.npy"))
    assert stored == len(sample) + len(new)


def test_plans_one_after_another_cannot_starve_the_background_fill(retriever, fresh_cache, monkeypatch):
    import threading

    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    seed(corpus, embedder, vectors, all_but(corpus, 200)[0])
    monkeypatch.setattr(retrieval, "FILL_PATIENCE_S", 0.3)
    result = []
    with retrieval.foreground():  # held the whole time, as by a stream of plans
        filler = threading.Thread(target=lambda: result.append(retrieval.fill_index(corpus, embedder, chunk=100)))
        filler.start()
        filler.join(timeout=60)
        assert not filler.is_alive() and result == [200]


@pytest.mark.slow
def test_prepare_embeds_the_sample_alone_for_any_idea(retriever, fresh_cache):
    """What a quick retriever does while an idea's English gloss is being written (pipeline.gloss_beside_retrieval):
    the stratified sample every route needs, nothing routed yet."""
    corpus, embedder = retriever.corpus, retriever.embedder
    QuickRetriever(corpus, embedder).prepare()
    _, known = embed.known_titles(corpus, embedder)
    titles = corpus.table["title"].tolist()
    assert {titles[i] for i in np.flatnonzero(known)} == {titles[i] for i in quick_sample(corpus)}
