"""A first plan before the whole retrieval index exists (popcorn.retrieval.index.QuickRetriever): it routes as the whole
index does (the router reads no title embedding), embeds only the routed categories, searches them exactly as the whole
index does, and leaves what it embedded for the whole index to reuse."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from popcorn.retrieval import embed, index as retrieval
from popcorn.retrieval.index import QuickRetriever
from popcorn.retrieval.routing import IDEAS_DIR, TITLE_WEIGHTS, BlendRouter, BlendWeights, read_labelled
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


def test_the_default_router_reads_no_title_so_a_quick_route_is_the_whole_indexs(retriever):
    """The default `ours` routes every labelled query the same whether it is given the corpus' title vectors or none
    (categories, scores, margin, deciding signal); weights that read the titles cannot be built without them; and the
    whole index and a quick plan route with the very same router objects (built once per process)."""
    corpus, embedder = retriever.corpus, retriever.embedder
    blind = BlendRouter(corpus, embedder, None)
    given = BlendRouter(corpus, embedder, retriever.index.vectors)
    assert not blind.w.reads_titles and blind.all_titles is None and given.all_titles is None
    pairs = labelled()
    for v, (_, q) in zip(embedder.encode([q for _, q in pairs]), pairs):
        a, b = blind.route(v, text=q), given.route(v, text=q)
        assert (a.categories, a.scores, a.margin, a.deciding) == (b.categories, b.scores, b.margin, b.deciding)
    with pytest.raises(ValueError, match="title embeddings"):
        BlendRouter(corpus, embedder, None, BlendWeights(**TITLE_WEIGHTS))
    assert retrieval.routers_for(corpus, embedder) is retriever.routers


def test_quick_references_are_the_whole_index_references_for_the_same_route(retriever, fresh_cache):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    labels = corpus.table["category"].to_numpy()
    query = "how to make crispy fried chicken at home"
    whole = retriever.retrieve(query, 10)
    members = np.flatnonzero(np.isin(labels, whole.matched_categories))
    seed(corpus, embedder, vectors, members)
    quick = QuickRetriever(corpus, embedder).retrieve(query, 10)
    assert quick.index.startswith("quick: searched the routed categories") and whole.index == "full"
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
def test_a_cold_quick_retrieval_embeds_the_routed_category_only(retriever, fresh_cache):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    got = QuickRetriever(corpus, embedder).retrieve("a bowl of spicy noodles from a street stall", 10)
    assert got.index.startswith("quick") and got.matched_categories == ["Delicacy"]
    labels = corpus.table["category"].to_numpy()
    wanted = np.flatnonzero(labels == "Delicacy")
    now, known = embed.known_titles(corpus, embedder)
    titles = corpus.table["title"].tolist()
    embedded = {titles[i] for i in wanted}
    assert set(np.flatnonzero(known)) == {i for i, t in enumerate(titles) if t in embedded}  # (a repeated title once)
    assert known.sum() < len(corpus) / 5  # Delicacy: 1,553 of the 12,502-title retrieval corpus
    cosine = (now[wanted] * vectors[wanted]).sum(axis=1)
    # the same vectors the whole index holds (to bf16's rounding; int8, when asked for, moves more)
    assert cosine.min() > (0.97 if embed.corpus_precision() == "int8" else 0.999)
    assert {r.category for r in got.references} == {"Delicacy"} and len(got.references) == 10


def test_a_quick_retrieval_says_so_in_the_run_and_round_trips():
    from popcorn import pipeline
    from popcorn.types import Retrieval

    quick = Retrieval("q", ["Game"], [], [], index="quick: searched the routed categories' 5,259 of 12,502 titles")
    assert "5,259 of 12,502" in pipeline.quick_note(quick) and "popcorn index" in pipeline.quick_note(quick)
    assert Retrieval.from_dict(quick.to_dict()) == quick
    assert pipeline.quick_note(Retrieval("q", ["Game"], [], [])) == "" and pipeline.quick_note(None) == ""
    assert Retrieval.from_dict({"query": "old row", "matched_categories": ["Game"]}).index == "full"



def test_the_background_fill_embeds_the_rest_in_chunks_and_builds_nothing_twice(retriever, fresh_cache, monkeypatch):
    corpus, embedder, vectors = retriever.corpus, retriever.embedder, retriever.index.vectors
    rows, left = all_but(corpus, 300)
    seed(corpus, embedder, vectors, rows)
    calls = spy(embedder, monkeypatch)
    assert retrieval.fill_index(corpus, embedder, chunk=100) == 300
    titles = corpus.table["title"].tolist()
    assert [len(c) for c in calls] == [100, 100, 100]
    assert sorted(t for c in calls for t in c) == sorted(titles[i] for i in left)  # the titles left, each once
    assert embed.known_titles(corpus, embedder)[1].all()
    calls.clear()
    assert retrieval.fill_index(corpus, embedder, chunk=100) == 0 and not calls  # nothing left: nothing embedded


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
