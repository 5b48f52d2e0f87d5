"""The routers' fixed texts (category names, descriptions, examples, the idea bank) come with their packaged-model
vectors (popcorn/retrieval/shipped.py): a first use embeds none of them, and the vectors are the reference ones."""

import numpy as np
import pytest

from popcorn.retrieval import embed, shipped
from popcorn.retrieval.routing import BlendRouter, idea_bank


@pytest.fixture()
def packaged():
    return embed.get_embedder(embed.PACKAGED)


def test_every_fixed_text_is_shipped_for_the_packaged_model(packaged):
    texts = shipped.fixed_texts()
    assert len(texts) >= 1900 and len(texts) == len(set(texts))
    assert set(idea for _, idea in idea_bank()) <= set(texts)
    assert shipped.unshipped(packaged) == [], "run `python -m popcorn.retrieval.shipped` after editing the texts"


def test_the_shipped_vectors_are_the_fp32_reference_ones(packaged):
    texts = shipped.fixed_texts()
    picked = [texts[i] for i in np.random.default_rng(0).choice(len(texts), 160, replace=False)]
    keys = embed.title_keys(picked)
    got = np.zeros((len(picked), packaged.dim), dtype=np.float32)
    assert len(shipped.fill(packaged, keys, got, np.arange(len(picked)))) == 0
    np.testing.assert_allclose(got, packaged.encode(picked), atol=2e-5)


def test_a_cold_router_embeds_no_fixed_text_and_routes_as_with_computed_vectors(retriever, tmp_path, monkeypatch):
    corpus, vectors = retriever.corpus, retriever.index.vectors
    packaged = embed.get_embedder(embed.PACKAGED)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    asked = []
    real = packaged.encode_many
    monkeypatch.setattr(packaged, "encode_many", lambda texts: asked.append(list(texts)) or real(texts))
    cold = BlendRouter(corpus, packaged, vectors)
    assert asked == []  # descriptions, examples and 1,900 ideas: nothing embedded
    assert len(cold.ideas) >= 1500 and cold.idea_vectors.shape == (len(cold.ideas), packaged.dim)
    # the same routes as a router whose fixed texts were embedded here, without the shipped file
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "none")
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "computed"))
    computed = BlendRouter(corpus, packaged, vectors)
    assert asked  # this one did embed them
    ideas = ["grandma's dumplings on new year's eve", "my cat knocks a glass off the table", "经典游戏回顾"]
    for text, q in zip(ideas, packaged.encode(ideas)):
        assert cold.route(q, text=text).categories == computed.route(q, text=text).categories
        np.testing.assert_allclose(cold.scores(q, text), computed.scores(q, text), atol=1e-3)


def test_a_model_without_a_shipped_file_embeds_as_before(packaged, monkeypatch, tmp_path):
    other = embed.Embedder("some/other-model")
    assert shipped.shipped(other) is None
    keys = embed.title_keys(["a", "b"])
    missing = np.arange(2)
    width = packaged.dim
    monkeypatch.setattr(embed.Embedder, "dim", property(lambda self: width))  # no model to load for the name
    assert shipped.fill(other, keys, np.zeros((2, width), dtype=np.float32), missing).tolist() == [0, 1]
    # a file of another model under this model's name is not trusted
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path)
    np.savez(tmp_path / f"{other.cache_key}.npz", keys=keys, vectors=np.ones((2, width), dtype=np.float32),
             model=np.array("yet/another-model"))
    assert shipped.fill(other, keys, np.zeros((2, width), dtype=np.float32), missing).tolist() == [0, 1]
