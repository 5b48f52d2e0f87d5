"""The human-matched baseline (the paper's Concrete-M / Abstract-M) and best-of-N plans.

A generated video is compared like for like: next to its predicted popularity stand the human-made MicroLens videos
nearest to the same query, with their actual comment counts and their predicted scores computed the same way. A
memory video's predicted score is the model's out-of-fold prediction: made by a stack that never saw the video, with
the video left out of its own retrieval.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from popcorn.popularity.predictor import Predictor, Score, get_predictor, log_progress
from popcorn.retrieval.embed import get_embedder, title_vectors
from popcorn.types import Plan, StageError


def _match(predictor: Predictor, query: str, candidates: np.ndarray, k: int,
           matcher: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The k memory rows (among `candidates`) nearest to the query, by sentence embedding or by TF-IDF."""
    bank = predictor.model.memory
    if matcher == "embedding":
        embedder = get_embedder()
        fingerprint = predictor.info["fingerprint"]
        if len(candidates) < len(bank):  # one category: only its titles are needed (a first score embeds those
            # alone; rows already embedded for the whole corpus, or another subset, are reused by title)
            fingerprint += "-rows" + hashlib.sha256(np.asarray(candidates, dtype=np.int64).tobytes()).hexdigest()[:12]
        vectors = title_vectors([bank.titles[i] for i in candidates], fingerprint, embedder, log_progress)
        sims = vectors @ embedder.encode_one(query)
        matched_by = f"embedding:{embedder.name}"
    elif matcher == "tfidf":
        query_matrix = predictor.model.word_matrix([query])
        sims = (query_matrix @ bank.spaces["word"][candidates].T).toarray()[0]
        matched_by = "tfidf:word"
    else:
        raise StageError("score", f"unknown matcher {matcher!r}", "use 'embedding' or 'tfidf'")
    order = np.argsort(-sims, kind="stable")[:k]
    return candidates[order], sims[order], matched_by


def human_baseline(query: str, k: int = 1, category: str | None = None, predictor: Predictor | None = None,
                   matcher: str = "embedding") -> dict[str, Any]:
    """The k human-made MicroLens videos nearest to `query` (within `category` when given): their actual comments
    and their predicted scores, computed the same way as a generated video's, with themselves left out.

    `matcher`: "embedding" (popcorn.retrieval.embed's model; the corpus titles are embedded once and cached) or "tfidf"."""
    if not query or not query.strip():
        raise StageError("score", "the human-matched baseline needs a query", "pass the one-line query")
    predictor = predictor or get_predictor()
    bank = predictor.model.memory
    candidates = np.arange(len(bank))
    if category:
        in_category = np.flatnonzero(bank.categories == category)
        candidates = in_category if len(in_category) else candidates
    rows, sims, matched_by = _match(predictor, query, candidates, max(1, k), matcher)
    videos = []
    for row, sim in zip(rows, sims):
        predicted = float(predictor.model.oof_predictions[row])
        cat = str(bank.categories[row])
        videos.append({
            "video_id": int(bank.video_ids[row]), "title": bank.titles[row], "category": cat,
            "similarity": round(float(sim), 4),
            "comments": int(bank.comments[row]), "label": round(float(bank.labels[row]), 4),
            "predicted_label": round(predicted, 4), "predicted_comments": round(2.0 ** predicted - 1.0, 2),
            "percentile_category": predictor.percentile(predicted, cat),
            "percentile_overall": predictor.percentile(predicted),
        })
    return {
        "query": query, "matched_by": matched_by, "category": category, "videos": videos,
        "mean_label": round(float(np.mean([v["label"] for v in videos])), 4),
        "mean_predicted_label": round(float(np.mean([v["predicted_label"] for v in videos])), 4),
    }


def rank_plans(plans: list[Plan], predictor: Predictor | None = None) -> list[tuple[Plan, Score]]:
    """Best-of-N: score every plan's title with h and return (plan, score) pairs, highest predicted first."""
    if not plans:
        return []
    predictor = predictor or get_predictor()
    items = [{"title": p.title, "description": p.video_prompt,
              "category": p.matched_categories[0] if p.matched_categories else None} for p in plans]
    scores = predictor.score_batch(items)
    order = sorted(range(len(plans)), key=lambda i: -scores[i].label)  # stable: ties keep the plans' order
    return [(plans[i], scores[i]) for i in order]


def human_match(query: str, category: str | None = None, k: int = 1) -> dict[str, Any]:
    """The k videos of the human pool (popcorn/retrieval/split.py: seen by no plan, trained on by no judge) nearest
    to `query` by sentence embedding, within `category` when the pool has it: a function of the query and the category
    alone, so every arm of a prompt is matched to the same human video. Labels are the videos' actual ones; the
    judges' predictions are added by popcorn.popularity.judges."""
    from popcorn.retrieval.corpus import load_corpus
    from popcorn.retrieval.embed import get_embedder, title_vectors

    if not query or not query.strip():
        raise StageError("score", "the human-matched baseline needs a query", "pass the one-line query")
    pool = load_corpus(part="human")
    table = pool.table
    embedder = get_embedder()
    vectors = title_vectors(table["title"].astype(str).tolist(), pool.fingerprint, embedder, log_progress)
    candidates = np.flatnonzero(table["category"].to_numpy() == category) if category else np.array([], dtype=int)
    within = len(candidates) > 0
    if not within:
        candidates = np.arange(len(table))
    sims = vectors[candidates] @ embedder.encode_one(query)
    order = candidates[np.argsort(-sims, kind="stable")[:max(1, k)]]
    sim_of = dict(zip(candidates.tolist(), sims.tolist()))
    videos = [{"video_id": int(table["video_id"].iat[i]), "title": str(table["title"].iat[i]),
               "category": str(table["category"].iat[i]), "similarity": round(float(sim_of[i]), 4),
               "comments": int(table["comments"].iat[i]),
               "label": round(float(np.log2(1.0 + table["comments"].iat[i])), 4)} for i in order]
    return {"query": query, "matched_by": f"embedding:{embedder.name}", "pool": "human (judge split)",
            "within_category": within, "videos": videos,
            "mean_label": round(float(np.mean([v["label"] for v in videos])), 4)}
