"""Target encodings: what the training videos of a category, or carrying a hashtag, scored on average.

The model trains on out-of-fold encodings (PopularityModel.fit fits an encoder per fold and encodes the held-out
fold with it), so the feature a training video is trained on looks like the feature an unseen video gets.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from popcorn.popularity.text import hashtags

CATEGORY_PRIOR = 20.0  # pseudo-count of the global mean in a category's mean
HASHTAG_PRIOR = 3.0

HASHTAG_FEATURES = ("tag:mean", "tag:max", "tag:min", "tag:known", "tag:log_count")


@dataclass
class TargetEncoder:
    prior: float
    mean: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def fit(cls, keys: list[list[str]], labels: np.ndarray, prior: float) -> "TargetEncoder":
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for item_keys, label in zip(keys, labels):
            for key in item_keys:
                sums[key] += float(label)
                counts[key] += 1
        return cls(prior=prior, mean=float(np.mean(labels)), sums=dict(sums), counts=dict(counts))

    def encode(self, key: str) -> tuple[float, int]:
        """(smoothed mean label of the key, number of videos behind it)."""
        total = self.sums.get(key, 0.0)
        count = self.counts.get(key, 0)
        return (total + self.prior * self.mean) / (count + self.prior), count


def category_keys(categories) -> list[list[str]]:
    return [[str(c)] for c in categories]


def hashtag_keys(titles) -> list[list[str]]:
    return [hashtags(t) for t in titles]


def encode_categories(encoder: TargetEncoder, categories) -> np.ndarray:
    return np.asarray([encoder.encode(str(c))[0] for c in categories], dtype=np.float32)[:, None]


def encode_hashtags(encoder: TargetEncoder, titles) -> np.ndarray:
    """Mean, max and min encoded label over a title's known hashtags, how many are known, and the largest support."""
    rows = []
    for title in titles:
        values, supports = [], []
        for tag in hashtags(title):
            value, count = encoder.encode(tag)
            if count > 0:
                values.append(value)
                supports.append(count)
        if values:
            rows.append((np.mean(values), max(values), min(values), len(values), np.log1p(max(supports))))
        else:
            rows.append((encoder.mean, encoder.mean, encoder.mean, 0.0, 0.0))
    return np.asarray(rows, dtype=np.float32).reshape(len(titles), len(HASHTAG_FEATURES))
