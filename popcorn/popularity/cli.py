"""The operation behind `python -m popcorn score` and the pipeline's score step: a plain function that takes plain
values and returns a JSON-ready dict (the CLI only parses arguments and prints). `predictor train|eval` call
popcorn.popularity's train and evaluate directly."""

from __future__ import annotations

from typing import Any

from popcorn.popularity.baseline import human_baseline
from popcorn.popularity.predictor import checkpoint_ready, get_predictor
from popcorn.retrieval.embed import prepare_query_encoder


def score(title: str, description: str = "", category: str | None = None, video: str | None = None,
          baseline: bool = True, baseline_k: int = 3, query: str | None = None) -> dict[str, Any]:
    """The predicted popularity of one video and, when `baseline`, the human-made MicroLens videos nearest to
    `query` (default: the title) with their actual and predicted popularity."""
    if baseline and not checkpoint_ready():  # the predictor trains first: the baseline's query encoder is built beside
        prepare_query_encoder()
    predictor = get_predictor()
    result = predictor.score(title, description=description, category=category, video=video)
    out: dict[str, Any] = {"score": result.to_dict()}
    if baseline:
        out["human_baseline"] = human_baseline(query or title, k=baseline_k, category=result.category,
                                               predictor=predictor)
    return out
