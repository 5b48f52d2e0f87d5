"""The popularity predictor h on real MicroLens data: held-out metrics, self-exclusion, determinism, ordering,
the human-matched baseline and best-of-N."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from popcorn.retrieval.corpus import load_raw_dir, popularity_label
from popcorn.popularity import (Predictor, Settings, evaluate, fit_predictor, get_predictor, human_baseline,
                                rank_plans, regression_metrics, split_ids, subset_raw_dir, train)
from popcorn.types import Plan

REPO = Path(__file__).resolve().parent.parent


def _data_dir() -> Path:
    folder = Path(os.environ.get("POPCORN_DATA_DIR") or REPO.parent / "shared" / "data" / "microlens")
    if not folder.is_dir():
        pytest.skip(f"MicroLens data not found at {folder} (set POPCORN_DATA_DIR)")
    return folder


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    """The full corpus split 85/15 by video id into two raw-layout folders."""
    source = _data_dir()
    full = load_raw_dir(source)
    train_ids, test_ids = split_ids(full.table["video_id"], test_fraction=0.15, seed=0)
    root = tmp_path_factory.mktemp("popularity_split")
    return subset_raw_dir(source, root / "train", train_ids), subset_raw_dir(source, root / "test", test_ids)


@pytest.fixture(scope="module")
def full_predictor(split) -> Predictor:
    """Trained on the 85% part of the real corpus (15k videos), as `train` would."""
    return fit_predictor(load_raw_dir(split[0]))


@pytest.fixture(scope="module")
def small_dir(split, tmp_path_factory) -> Path:
    """2,500 training videos: for tests whose point does not need the whole corpus."""
    ids = load_raw_dir(split[0]).table["video_id"].to_numpy()[:2500]
    return subset_raw_dir(split[0], tmp_path_factory.mktemp("popularity_small"), ids)


@pytest.fixture(scope="module")
def small_predictor(small_dir) -> Predictor:
    return fit_predictor(load_raw_dir(small_dir))


def test_metrics_match_scipy():
    rng = np.random.default_rng(3)
    y = rng.normal(4, 1.5, 500)
    p = y + rng.normal(0, 1.0, 500)
    m = regression_metrics(y, p)
    assert m["n"] == 500
    assert m["SRC"] == pytest.approx(spearmanr(y, p).statistic, abs=1e-4)
    assert m["nMSE"] == pytest.approx(np.mean((y - p) ** 2) / np.var(y), abs=1e-4)
    assert m["MAE"] == pytest.approx(np.mean(np.abs(y - p)), abs=1e-4)


def test_split_folders_are_disjoint_and_complete(split):
    train_table = load_raw_dir(split[0]).table
    test_table = load_raw_dir(split[1]).table
    full = load_raw_dir(_data_dir()).table
    assert not set(train_table["video_id"]) & set(test_table["video_id"])
    assert len(train_table) + len(test_table) == len(full)
    # the same rows come back through the raw files: titles, categories, comments
    merged = test_table.merge(full, on="video_id", suffixes=("", "_full"))
    assert (merged["title"] == merged["title_full"]).all()
    assert (merged["comments"] == merged["comments_full"]).all()


def test_eval_on_held_out_split_gives_global_metrics_and_clears_the_bar(split, full_predictor):
    result = evaluate(split[1], full_predictor)
    table = load_raw_dir(split[1]).table
    predictions = full_predictor.predict_labels(table["title"].tolist(), table["category"].tolist(),
                                                table["video_id"].tolist())
    y = popularity_label(table["comments"].to_numpy())
    assert result["n"] == len(table)
    assert result["overlap_with_training"] == 0
    assert result["SRC"] == pytest.approx(spearmanr(y, predictions).statistic, abs=1e-4)
    assert result["nMSE"] == pytest.approx(np.mean((y - predictions) ** 2) / np.var(y), abs=1e-4)
    assert result["MAE"] == pytest.approx(np.mean(np.abs(y - predictions)), abs=1e-4)
    game = table["category"].to_numpy() == "Game"
    assert result["per_category_SRC"]["Game"]["SRC"] == pytest.approx(
        spearmanr(y[game], predictions[game]).statistic, abs=1e-4)
    # the bar on unseen videos
    assert result["SRC"] >= 0.52 and result["nMSE"] <= 0.74


def test_popular_titles_rank_above_unpopular_ones_of_the_same_category(split, full_predictor):
    table = load_raw_dir(split[1]).table
    for category in ("Game", "Anime", "Film and Television Works"):
        part = table[table["category"] == category]
        low, high = part["comments"].quantile([0.1, 0.9])
        top, bottom = part[part["comments"] >= high], part[part["comments"] <= low]
        top_mean = full_predictor.predict_labels(top["title"].tolist(), top["category"].tolist()).mean()
        bottom_mean = full_predictor.predict_labels(bottom["title"].tolist(), bottom["category"].tolist()).mean()
        assert top_mean > bottom_mean + 0.25, (category, top_mean, bottom_mean)


def test_an_item_never_retrieves_itself(split, full_predictor, tmp_path):
    bank = full_predictor.model.memory
    rows = np.arange(0, len(bank), 97)
    items = [{"title": bank.titles[r], "category": str(bank.categories[r]), "video_id": int(bank.video_ids[r])}
             for r in rows]
    for item, score in zip(items, full_predictor.score_batch(items)):
        assert item["video_id"] not in [n["video_id"] for n in score.neighbours]
    # without its id, the same text finds itself first: the exclusion above is what kept it out
    anonymous = full_predictor.score_batch([{k: v for k, v in it.items() if k != "video_id"} for it in items[:20]])
    assert sum(s.neighbours[0]["video_id"] == it["video_id"] for s, it in zip(anonymous, items)) >= 15
    # training features are computed the same way: no row is its own neighbour
    found, _ = bank.search("word", bank.spaces["word"][rows], exclude_rows=rows)
    assert not (found == rows[:, None]).any()
    # an eval folder of training videos: evaluate passes their ids, so each is kept out of its own retrieval
    ids = load_raw_dir(split[0]).table["video_id"].to_numpy()[:300]
    folder = subset_raw_dir(_data_dir(), tmp_path / "seen", ids)
    table = load_raw_dir(folder).table
    titles, cats, vids = table["title"].tolist(), table["category"].tolist(), table["video_id"].tolist()
    overlap = evaluate(folder, full_predictor)
    assert overlap["overlap_with_training"] == overlap["n"] == len(ids)
    with_ids = full_predictor.predict_labels(titles, cats, vids)
    assert overlap["SRC"] == pytest.approx(spearmanr(popularity_label(table["comments"].to_numpy()), with_ids).statistic,
                                           abs=1e-4)
    assert not np.allclose(with_ids, full_predictor.predict_labels(titles, cats))  # ids change what is retrieved


def test_same_seed_same_model(small_dir):
    corpus = load_raw_dir(small_dir)
    probe = corpus.table["title"].tolist()[:200]
    a = fit_predictor(corpus, Settings(seed=0)).predict_labels(probe)
    b = fit_predictor(corpus, Settings(seed=0)).predict_labels(probe)
    c = fit_predictor(corpus, Settings(seed=1)).predict_labels(probe)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed matters (fold assignment), so equality above is not vacuous


def test_train_saves_a_checkpoint_that_scoring_loads(small_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    result = train(small_dir, seed=0)
    path = Path(result["checkpoint"])
    assert path.exists() and path.parent == tmp_path / "popularity"
    # h trains on the folder's retrieval part (the judge split holds 30% back: popcorn/retrieval/split.py)
    from popcorn.retrieval.corpus import load_corpus

    assert result["n_train"] == len(load_corpus(small_dir)) < 2500 and 0 < result["validation"]["SRC"] < 1
    loaded = Predictor.load(path)
    trained = get_predictor(small_dir)  # the one train() left in memory
    titles = load_raw_dir(small_dir).table["title"].tolist()[:50]
    np.testing.assert_array_equal(loaded.predict_labels(titles), trained.predict_labels(titles))


def test_score_explains_and_infers_a_missing_category(small_predictor):
    score = small_predictor.score("King of Glory pentakill with Li Bai # King of Glory # game",
                                  description="a hero dashes across the map")
    assert score.category_inferred and score.category == "Game"
    assert any("inferred" in note for note in score.notes)
    assert any("description" in note for note in score.notes)
    assert score.predicted_comments == pytest.approx(2 ** score.label - 1, abs=0.01)
    assert 0 <= score.percentile_category <= 100 and 0 <= score.percentile_overall <= 100
    assert len(score.neighbours) == 5
    sims = [n["similarity"] for n in score.neighbours]
    assert sims == sorted(sims, reverse=True) and sims[0] > 0.2
    given = small_predictor.score("King of Glory pentakill with Li Bai # King of Glory # game", category="Anime")
    assert given.category == "Anime" and not given.category_inferred
    assert set(score.to_dict()) >= {"label", "predicted_comments", "percentile_category", "percentile_overall",
                                    "category", "neighbours"}


def test_percentiles_follow_the_label(small_predictor):
    labels = np.sort(small_predictor.model.oof_predictions)
    assert small_predictor.percentile(labels[0] - 1) == 0.0
    assert small_predictor.percentile(labels[-1] + 1) == 100.0
    assert small_predictor.percentile(float(np.median(labels))) == pytest.approx(50, abs=1)


def test_human_baseline_matches_like_for_like(small_predictor):
    bank = small_predictor.model.memory
    row = 123
    found = human_baseline(bank.titles[row], k=3, predictor=small_predictor, matcher="tfidf")
    first = found["videos"][0]
    assert len(found["videos"]) == 3
    assert first["similarity"] > 0.8  # the query is that video's title (the memory side also has a category token)
    match = int(np.flatnonzero(bank.video_ids == first["video_id"])[0])
    assert bank.titles[match] == bank.titles[row]
    assert first["comments"] == int(bank.comments[match])
    # its predicted score is the out-of-fold one: made without the video, not the training fit
    assert first["predicted_label"] == pytest.approx(small_predictor.model.oof_predictions[match], abs=1e-4)
    in_category = human_baseline("funny moments", k=2, category="Delicacy", predictor=small_predictor,
                                 matcher="tfidf")
    assert all(v["category"] == "Delicacy" for v in in_category["videos"])


def test_human_baseline_by_embedding(small_predictor, tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POPCORN_EMBED_MODEL", "packaged:all-MiniLM-L6-v2")
    found = human_baseline("spicy hot pot at home", k=2, predictor=small_predictor)
    assert found["matched_by"] == "embedding:packaged:all-MiniLM-L6-v2"
    assert found["videos"][0]["similarity"] >= found["videos"][1]["similarity"] > 0.3
    # cached where retrieval keeps its title embeddings too (one cache per corpus fingerprint + model)
    fingerprint = small_predictor.info["fingerprint"]
    assert (tmp_path / "embeddings" / f"{fingerprint}-packaged_all-MiniLM-L6-v2.npy").exists()


def test_rank_plans_puts_the_highest_predicted_first(small_predictor):
    titles = ["hello", "King of Glory pentakill highlight # King of Glory # game", "a quiet afternoon"]
    plans = [Plan(title=t, cover_prompt="c", video_prompt="v") for t in titles]
    ranked = rank_plans(plans, small_predictor)
    assert sorted(p.title for p, _ in ranked) == sorted(titles)
    labels = [s.label for _, s in ranked]
    assert labels == sorted(labels, reverse=True)
    direct = {t: small_predictor.score(t, description="v").label for t in titles}
    assert all(s.label == pytest.approx(direct[p.title]) for p, s in ranked)
    # a plan's matched category is what it is scored in
    placed = Plan(title=titles[1], cover_prompt="c", video_prompt="v", matched_categories=["Delicacy"])
    (_, in_food), = rank_plans([placed], small_predictor)
    assert in_food.category == "Delicacy"
    assert in_food.label == pytest.approx(small_predictor.score(titles[1], description="v", category="Delicacy").label)
    assert in_food.label != pytest.approx(direct[titles[1]])  # its own inferred category (Game) scores otherwise


def test_eval_folder_with_only_the_short_title_file(split, small_predictor, tmp_path):
    """The held-back folder may lack MicroLens-50k titles: the 100k title file is the fallback."""
    ids = load_raw_dir(split[1]).table["video_id"].to_numpy()[:300]
    folder = subset_raw_dir(_data_dir(), tmp_path / "short", ids)
    (folder / "MicroLens-50k_titles.csv").unlink()
    (folder / "MicroLens-100k_likes_and_views.txt").unlink()
    result = evaluate(folder, small_predictor)
    assert result["n"] == 300 and np.isfinite(result["SRC"]) and result["SRC"] > 0.1


def _write_visual_features(folder: Path, seed: int) -> None:
    """Frame features that carry the label (as real ones partly would): a bucket of the label, seen noisily."""
    table = load_raw_dir(folder).table
    buckets = np.round(popularity_label(table["comments"].to_numpy())).astype(int)
    rng = np.random.default_rng(seed)
    directions = np.random.default_rng(0).normal(size=(16, 16))
    features = directions[np.clip(buckets, 0, 15)] + rng.normal(0, 0.3, (len(table), 16))
    np.savez(folder / "visual_features.npz", video_id=table["video_id"].to_numpy(), features=features,
             encoder=np.array("test-encoder"))


def test_visual_branch_is_trained_when_frame_features_are_supplied(split, small_dir, tmp_path):
    import shutil

    from popcorn.popularity.predictor import default_settings
    from popcorn.popularity.visual import register_frame_encoder

    train_dir = Path(shutil.copytree(small_dir, tmp_path / "train"))
    test_ids = load_raw_dir(split[1]).table["video_id"].to_numpy()[:600]
    test_dir = subset_raw_dir(_data_dir(), tmp_path / "test", test_ids)
    _write_visual_features(train_dir, seed=1)
    _write_visual_features(test_dir, seed=2)
    corpus = load_raw_dir(train_dir)
    settings = default_settings(corpus)
    assert "visual" in settings.retrieval
    with_frames = fit_predictor(corpus, settings)
    text_only = fit_predictor(corpus, Settings())
    assert with_frames.model.visual_encoder is not None and text_only.model.visual_encoder is None
    assert evaluate(test_dir, with_frames)["SRC"] > evaluate(test_dir, text_only)["SRC"] + 0.1

    title = load_raw_dir(test_dir).table["title"].iloc[0]
    unused = with_frames.score(title, video="clip.mp4")
    assert any("no frame encoder 'test-encoder'" in n for n in unused.notes)
    register_frame_encoder("test-encoder", lambda path: np.random.default_rng(0).normal(size=16))
    used = with_frames.score(title, video="clip.mp4")
    assert not any("video file" in n for n in used.notes) and used.label != unused.label


def test_human_baseline_in_a_category_embeds_only_that_category(small_predictor, tmp_path, monkeypatch):
    from popcorn.retrieval import embed

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POPCORN_EMBED_MODEL", "packaged:all-MiniLM-L6-v2")
    embedder = embed.get_embedder()
    sizes = []
    real = embedder.encode_many
    monkeypatch.setattr(embedder, "encode_many", lambda texts: sizes.append(len(texts)) or real(texts))
    bank = small_predictor.model.memory
    in_category = int((bank.categories == "Delicacy").sum())
    found = human_baseline("spicy hot pot at home", k=2, category="Delicacy", predictor=small_predictor)
    assert sizes == [in_category] and in_category < len(bank)
    # the same videos and similarities as searching the whole corpus' matrix restricted to the category
    whole = embed.title_vectors(bank.titles, small_predictor.info["fingerprint"], embedder)
    rows = np.flatnonzero(bank.categories == "Delicacy")
    sims = whole[rows] @ embedder.encode_one("spicy hot pot at home")
    best = rows[np.argsort(-sims, kind="stable")[:2]]
    assert [v["video_id"] for v in found["videos"]] == [int(bank.video_ids[r]) for r in best]
    assert sizes == [in_category, len(bank) - in_category]  # the whole matrix reused the category's rows


def test_split_sparse_product_gives_the_plain_products_neighbours_on_real_titles(monkeypatch):
    """Training's every-video-against-all search splits the TF-IDF product into frequent features (dense, BLAS) and
    rare ones (sparse); it must find the same neighbours with the same similarities as the plain sparse product."""
    from popcorn.popularity import memory as memory_module
    from popcorn.popularity.model import _vectorizer

    table = load_raw_dir(_data_dir()).table.iloc[:3000]
    titles = table["title"].tolist()
    space = _vectorizer("char").fit_transform(titles).tocsr()
    product = memory_module._SplitProduct(space)
    assert len(product.dense_columns) and len(product.rare_columns)  # both halves are exercised
    assert np.array_equal(np.sort(np.concatenate([product.dense_columns, product.rare_columns])),
                          np.arange(space.shape[1]))  # every feature in exactly one half
    queries = space[:700]
    assert np.allclose(product.times(queries), (queries @ space.T).toarray(), atol=1e-5)

    bank = memory_module.MemoryBank(table["video_id"].to_numpy(np.int64), titles, table["category"].to_numpy(object),
                                    table["comments"].to_numpy(np.int64), popularity_label(table["comments"]),
                                    {"char": space})
    own = np.arange(len(titles))
    used = []
    real_times = memory_module._SplitProduct.times
    monkeypatch.setattr(memory_module._SplitProduct, "times", lambda self, q: used.append(1) or real_times(self, q))
    assert len(titles) >= memory_module.SPLIT_MIN_QUERIES
    split_rows, split_sims = bank.search("char", space, k=20, exclude_rows=own)
    assert used  # the split path ran
    monkeypatch.setattr(memory_module, "SPLIT_MIN_QUERIES", 10**9)
    plain_rows, plain_sims = bank.search("char", space, k=20, exclude_rows=own)
    assert np.allclose(split_sims, plain_sims, atol=1e-5)
    assert not (split_rows == own[:, None]).any()
    # the same neighbours, apart from swaps among similarities tied to within float rounding
    for i in range(len(titles)):
        clear = plain_rows[i][plain_sims[i] > plain_sims[i, -1] + 1e-4]
        assert set(clear) <= set(split_rows[i]), i
    assert (split_rows == plain_rows).mean() > 0.95
