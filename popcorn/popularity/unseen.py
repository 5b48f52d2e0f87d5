"""h as it would score a title had it never remembered some videos: those videos out of its neighbour memory.

PE shows the LLM popular and unpopular videos of the retrieval corpus, which is h's training set; a title that borrows
from them finds them among its nearest training videos, so h's neighbour features reward the borrowing while a judge
trained on other videos sees nothing of the kind. PE+ ranks its title drafts with h minus the references shown
(popcorn/llm/plus.py). Only the memory searched for neighbours changes: the ridges, encoders and the stack stay as
trained (the references are ~10 of ~17,700 training videos).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from popcorn.popularity.memory import MemoryBank
from popcorn.popularity.predictor import Predictor


def kept_rows(bank: MemoryBank, video_ids) -> np.ndarray | None:
    """The memory rows that are not videos of `video_ids`; None when none of them is in the bank."""
    drop = np.isin(bank.video_ids, np.asarray(sorted({int(v) for v in video_ids}), dtype=np.int64))
    return np.flatnonzero(~drop) if drop.any() else None


def bank_without(bank: MemoryBank, keep: np.ndarray) -> MemoryBank:
    return MemoryBank(bank.video_ids[keep], [bank.titles[i] for i in keep], bank.categories[keep],
                      bank.comments[keep], bank.labels[keep], {name: space[keep] for name, space in bank.spaces.items()})


def without_memory(predictor: Predictor, video_ids) -> Predictor:
    """A predictor that scores as `predictor` does but never retrieves the videos of `video_ids` as neighbours (its
    percentiles are those of the remaining training videos)."""
    model = predictor.model
    keep = kept_rows(model.memory, video_ids)
    if keep is None:
        return predictor
    return Predictor(replace(model, memory=bank_without(model.memory, keep), oof_predictions=model.oof_predictions[keep]),
                     predictor.info)
