"""The memory bank: the training videos, their labels, and the vector spaces they are searched in.

Retrieval is the evidence of the predictor (as MMRA): for an item, the top-k most similar MicroLens videos, their
labels and similarities. An item never retrieves itself: any memory row with the query's video id is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

KS = (5, 20, 50)  # the neighbourhood sizes whose label statistics become features
K_MAX = max(KS)
_BLOCK = 1024  # queries per similarity block: 1024 x 17.7k float32 = 72 MB


@dataclass
class MemoryBank:
    video_ids: np.ndarray  # int64, one per row
    titles: list[str]
    categories: np.ndarray  # object (str)
    comments: np.ndarray  # int64
    labels: np.ndarray  # float64, log2(1 + comments)
    spaces: dict[str, object] = field(default_factory=dict)  # name -> (rows x dim) L2-normalised, dense or CSR

    def __len__(self) -> int:
        return len(self.video_ids)

    def rows_of(self, video_ids) -> np.ndarray:
        """The memory row of each id, -1 where the id is not in the bank."""
        index = {int(v): i for i, v in enumerate(self.video_ids)}
        if video_ids is None:
            return None
        return np.asarray([index.get(int(v), -1) if v is not None else -1 for v in video_ids], dtype=np.int64)

    def search(self, space: str, queries, k: int = K_MAX, exclude_rows: np.ndarray | None = None):
        """Top-k memory rows by cosine similarity for each query row, best first: (rows, similarities).

        `exclude_rows[i]` is a memory row that query i must never retrieve (itself), or -1.
        """
        memory = self.spaces[space]
        k = min(k, len(self) - 1 if exclude_rows is not None else len(self))
        n = queries.shape[0]
        rows = np.empty((n, k), dtype=np.int64)
        sims = np.empty((n, k), dtype=np.float32)
        product = _SplitProduct(memory) if sparse.issparse(memory) and n >= SPLIT_MIN_QUERIES else None
        for start in range(0, n, _BLOCK):
            stop = min(n, start + _BLOCK)
            if product is not None:
                block = product.times(queries[start:stop])
            else:
                block = queries[start:stop] @ memory.T
                block = block.toarray() if sparse.issparse(block) else np.asarray(block)
            block = block.astype(np.float32, copy=False)
            if exclude_rows is not None:
                own = exclude_rows[start:stop]
                hit = own >= 0
                block[np.flatnonzero(hit), own[hit]] = -np.inf
            rows[start:stop], sims[start:stop] = _top_k(block, k)
        return rows, sims


SPLIT_MIN_QUERIES = 2048  # from this many sparse queries (training: every video against all), _SplitProduct pays
SPLIT_DF_SHARE = 0.04  # features in at least this share of the memory rows go dense
SPLIT_MAX_DENSE = 2000


class _SplitProduct:
    """queries @ memory.T for sparse TF-IDF rows, split by feature frequency: the few features present in many rows
    (char n-grams such as "e " or "in") as one dense matrix product (BLAS), the many rare ones as a sparse product.
    A sparse product costs about sum(df^2) over the features, so the frequent ones were most of it (char space:
    1.3e10 of it, 0.6e9 once the 1,000 most frequent go dense). The sum is the same, up to float rounding."""

    def __init__(self, memory: sparse.csr_matrix):
        memory = memory.tocsr()
        df = np.bincount(memory.indices, minlength=memory.shape[1])
        frequent = np.flatnonzero(df >= max(2, SPLIT_DF_SHARE * memory.shape[0]))
        if len(frequent) > SPLIT_MAX_DENSE:
            frequent = frequent[np.argsort(-df[frequent], kind="stable")[:SPLIT_MAX_DENSE]]
        self.dense_columns = np.sort(frequent)
        rare = np.ones(memory.shape[1], dtype=bool)
        rare[self.dense_columns] = False
        self.rare_columns = np.flatnonzero(rare)
        self.dense_memory_t = np.ascontiguousarray(memory[:, self.dense_columns].toarray().T, dtype=np.float32)
        self.rare_memory_t = memory[:, self.rare_columns].T.tocsr()

    def times(self, queries) -> np.ndarray:
        queries = sparse.csr_matrix(queries)
        out = queries[:, self.dense_columns].toarray().astype(np.float32) @ self.dense_memory_t
        out += (queries[:, self.rare_columns] @ self.rare_memory_t).toarray()
        return out


def _top_k(block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest entries of each row, largest first (torch's top-k is several times faster than numpy's)."""
    import torch  # heavy (~2 s): loaded when the first score needs it, not when popcorn.popularity is imported

    values, indices = torch.topk(torch.from_numpy(block), k, dim=1, largest=True, sorted=True)
    return indices.numpy(), values.numpy()


def neighbour_feature_names(space: str) -> list[str]:
    names = [f"{space}:sim1", f"{space}:sim5"]
    for k in KS:
        names += [f"{space}:mean{k}", f"{space}:wmean{k}", f"{space}:std{k}"]
    names += [f"{space}:label1", f"{space}:max5", f"{space}:softmax20"]
    return names


def neighbour_features(rows: np.ndarray, sims: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Label statistics of the neighbours: what the most similar videos scored, and how similar they are."""
    neighbour_labels = labels[rows]
    sims = np.where(np.isfinite(sims), sims, 0.0)
    columns = [sims[:, 0], sims[:, :5].mean(axis=1)]
    for k in KS:
        w = np.clip(sims[:, :k], 0.0, None) + 1e-6
        lab = neighbour_labels[:, :k]
        columns += [lab.mean(axis=1), (lab * w).sum(axis=1) / w.sum(axis=1), lab.std(axis=1)]
    soft = np.exp((sims[:, :20] - sims[:, :1]) * 20.0)
    columns += [neighbour_labels[:, 0], neighbour_labels[:, :5].max(axis=1),
                (neighbour_labels[:, :20] * soft).sum(axis=1) / soft.sum(axis=1)]
    return np.column_stack(columns).astype(np.float32)
