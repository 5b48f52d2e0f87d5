"""The judge split: MicroLens cut once, with a recorded seed, into what plans may see and what only judges see.

    retrieval  what PE shows the LLM and the studio retrieves from; h (the studio's predictor) is trained on it
    judge      the held-out judge's training set: no plan ever sees it (popcorn/popularity/judges.py)
    human      the human-matched pool (the paper's Concrete-M / Abstract-M): no plan sees it and neither judge was
               trained on it, so both judges score a human-matched video exactly as they score a generated title

A video's part depends only on the seed and its id (a digest of the two, read as a number in [0, 1)), so the split is
the same on every machine, whatever order or subset of the corpus is read, and a new video never moves an old one.
`popcorn.retrieval.corpus.load_corpus()` returns the retrieval part (a filter at load time); `load_corpus(part=...)` the others.
"""

from __future__ import annotations

import hashlib

import numpy as np

SEED = 2502  # the paper's arXiv number (2502.12945); changing it re-draws the split and every cache built on it
SHARES = {"judge": 0.20, "human": 0.10}  # the rest is the retrieval corpus
PARTS = ("retrieval", "judge", "human")


def draw(video_id: int, seed: int = SEED) -> float:
    """A number in [0, 1) fixed by the seed and the video id."""
    digest = hashlib.sha256(f"{seed}:{int(video_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def parts(video_ids, seed: int = SEED) -> np.ndarray:
    """The part of each video: 'judge' below SHARES['judge'], 'human' below the sum of both shares, else 'retrieval'."""
    u = np.array([draw(v, seed) for v in video_ids], dtype=np.float64)
    cut_judge, cut_human = SHARES["judge"], SHARES["judge"] + SHARES["human"]
    return np.where(u < cut_judge, "judge", np.where(u < cut_human, "human", "retrieval"))


def part_mask(video_ids, part: str, seed: int = SEED) -> np.ndarray:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; known: {PARTS}")
    return parts(video_ids, seed) == part


def describe(video_ids, seed: int = SEED) -> dict:
    """What run.json and the report record about the split: seed, shares, counts, and a digest of each part's ids."""
    ids = np.asarray(list(video_ids), dtype=np.int64)
    labels = parts(ids, seed)
    out = {"seed": seed, "shares": dict(SHARES), "counts": {}, "digests": {}}
    for part in PARTS:
        mine = np.sort(ids[labels == part])
        out["counts"][part] = int(mine.size)
        out["digests"][part] = hashlib.sha256(mine.tobytes()).hexdigest()[:12]
    return out
