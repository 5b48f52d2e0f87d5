"""Prompt Enhancement retrieval: route the query to MicroLens categories, then fetch popular and unpopular references.

The paper's algorithm (LLMPopcorn, section 3.2), step by step:
  1. route:  pick the top-T categories for the query (the paper: cosine of the query with each category NAME);
  2. split:  inside those categories, the bottom `ratio` of videos by comment count are "unpopular", the rest "popular";
  3. search: FAISS inner-product search of the query against the videos' title embeddings;
  4. return: K references, K*(1-ratio) popular + K*ratio unpopular, nearest first.

Unlike the paper's script, which re-encodes the category's texts and rebuilds a FAISS index on every request, the
embeddings, the split and one FAISS index per (category, label) are built once per corpus and model, persisted in the
cache and reloaded (`ReferenceIndex.load_or_build`). Routers live in popcorn/routing.py.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from popcorn import config
from popcorn.corpus import Corpus, load_corpus
from popcorn.embed import Embedder, corpus_embeddings, get_embedder
from popcorn.types import Reference, Retrieval, StageError

K_CHOICES = (10, 50, 100)
DEFAULT_RATIO = 0.1
INDEX_VERSION = 1


def unpopular_cut(comments: np.ndarray, ratio: float) -> int:
    """The comment count from which a video of this category counts as popular.

    Videos with fewer comments than the cut are the bottom `ratio` ("unpopular"); ties never straddle the cut, so every
    unpopular video has strictly fewer comments than every popular one. If the bottom ratio is all one tied value, the
    cut moves up to the next distinct value so the unpopular side is not empty (when the category has two values).
    """
    values = np.sort(np.asarray(comments, dtype=np.int64))
    if len(values) == 0:
        return 0
    n_unpopular = max(1, int(math.ceil(ratio * len(values))))
    cut = int(values[min(n_unpopular, len(values) - 1)])
    if cut <= values[0]:
        above = values[values > values[0]]
        cut = int(above[0]) if len(above) else int(values[0])
    return cut


def split_counts(k: int, ratio: float) -> tuple[int, int]:
    """K -> (popular, unpopular): K=10, ratio 0.1 -> (9, 1)."""
    n_unpopular = int(round(k * ratio))
    return k - n_unpopular, n_unpopular


@dataclass
class ReferenceIndex:
    """Title embeddings of the corpus, the popular/unpopular split and one FAISS index per (category, label)."""

    corpus: Corpus
    embedder: Embedder
    vectors: np.ndarray  # (N, d) float32, L2-normalised, in corpus table order
    ratio: float
    cuts: dict[str, int]  # category -> comment count from which a video is popular
    indexes: dict[tuple[str, str], faiss.Index]  # (category, "popular"|"unpopular") -> index over those rows
    rows: dict[tuple[str, str], np.ndarray]  # same key -> corpus row numbers, in index order

    # ---------------------------------------------------------------------------------------------- build / persist

    @classmethod
    def build(cls, corpus: Corpus, embedder: Embedder, ratio: float = DEFAULT_RATIO,
              vectors: np.ndarray | None = None) -> "ReferenceIndex":
        """The split and indexes over `vectors` (the corpus' title embeddings; default: the cached ones)."""
        vectors = corpus_embeddings(corpus, embedder) if vectors is None else vectors
        table = corpus.table
        categories = table["category"].to_numpy()
        comments = table["comments"].to_numpy(np.int64)
        cuts, indexes, rows = {}, {}, {}
        for category in sorted(set(categories)):
            members = np.flatnonzero(categories == category)
            cut = unpopular_cut(comments[members], ratio)
            cuts[category] = cut
            for label, mask in (("popular", comments[members] >= cut), ("unpopular", comments[members] < cut)):
                chosen = members[mask]
                index = faiss.IndexFlatIP(vectors.shape[1])
                if len(chosen):
                    index.add(vectors[chosen])
                indexes[(category, label)] = index
                rows[(category, label)] = chosen.astype(np.int64)
        return cls(corpus, embedder, vectors, ratio, cuts, indexes, rows)

    @staticmethod
    def folder_for(corpus: Corpus, embedder: Embedder, ratio: float) -> Path:
        name = f"v{INDEX_VERSION}-{corpus.fingerprint}-{embedder.cache_key}-r{ratio:g}"
        return config.cache_dir() / "retrieval" / name

    def save(self) -> Path:
        folder = self.folder_for(self.corpus, self.embedder, self.ratio)
        folder.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.indexes)
        for i, key in enumerate(keys):
            faiss.write_index(self.indexes[key], str(folder / f"{i}.faiss"))
            np.save(folder / f"{i}.rows.npy", self.rows[key])
        meta = {"keys": [list(k) for k in keys], "cuts": self.cuts, "ratio": self.ratio,
                "fingerprint": self.corpus.fingerprint, "model": self.embedder.name}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: marks a complete index
        return folder

    @classmethod
    def load(cls, corpus: Corpus, embedder: Embedder, ratio: float) -> "ReferenceIndex | None":
        folder = cls.folder_for(corpus, embedder, ratio)
        if not (folder / "meta.json").exists():
            return None
        meta = json.loads((folder / "meta.json").read_text())
        indexes, rows = {}, {}
        for i, key in enumerate(meta["keys"]):
            indexes[tuple(key)] = faiss.read_index(str(folder / f"{i}.faiss"))
            rows[tuple(key)] = np.load(folder / f"{i}.rows.npy")
        return cls(corpus, embedder, corpus_embeddings(corpus, embedder), meta["ratio"], meta["cuts"], indexes, rows)

    @classmethod
    def load_or_build(cls, corpus: Corpus, embedder: Embedder, ratio: float = DEFAULT_RATIO) -> "ReferenceIndex":
        index = cls.load(corpus, embedder, ratio)
        if index is None:
            index = cls.build(corpus, embedder, ratio)
            index.save()
        return index

    # ---------------------------------------------------------------------------------------------- search

    def search(self, query_vector: np.ndarray, categories: list[str], k: int) -> list[Reference]:
        """K references from `categories`: K*(1-ratio) popular + K*ratio unpopular, each group nearest first."""
        n_popular, n_unpopular = split_counts(k, self.ratio)
        q = np.ascontiguousarray(query_vector.reshape(1, -1), dtype=np.float32)
        table = self.corpus.table
        refs: list[Reference] = []
        for label, wanted in (("popular", n_popular), ("unpopular", n_unpopular)):
            hits: list[tuple[float, int]] = []
            for category in categories:
                index = self.indexes.get((category, label))
                if index is None or index.ntotal == 0 or wanted == 0:
                    continue
                sims, pos = index.search(q, min(wanted, index.ntotal))
                rows = self.rows[(category, label)]
                hits.extend((float(s), int(rows[p])) for s, p in zip(sims[0], pos[0]) if p >= 0)
            hits.sort(key=lambda h: -h[0])
            for sim, row in hits[:wanted]:
                rec = table.iloc[row]
                refs.append(Reference(video_id=int(rec["video_id"]), title=str(rec["title"]),
                                      category=str(rec["category"]), comments=int(rec["comments"]), label=label,
                                      similarity=round(sim, 4)))
        return refs


# -------------------------------------------------------------------------------------------------- the PE step

_LOCK = threading.Lock()
_RETRIEVERS: dict[tuple, "Retriever"] = {}


class Retriever:
    """Routing + references for one corpus and embedding model; build once, call `retrieve` per query."""

    def __init__(self, corpus: Corpus, embedder: Embedder, ratio: float = DEFAULT_RATIO):
        from popcorn.routing import build_routers

        faiss.omp_set_num_threads(1)  # one query at a time: threads cost more than they give at this size
        self.corpus = corpus
        self.embedder = embedder
        self.index = ReferenceIndex.load_or_build(corpus, embedder, ratio)
        self.routers = build_routers(corpus, embedder, self.index.vectors)
        embedder.encode_one("")  # the query encoder is built (ONNX export, once) here, not inside the first query

    def retrieve(self, query: str, k: int = 10, *, router: str = "ours", top_t: int | None = None) -> Retrieval:
        query = (query or "").strip()
        if not query:
            raise StageError("retrieve", "the query is empty", "type a one-line idea for the video")
        if k < 1 or k > 500:
            raise StageError("retrieve", f"K={k} is out of range", f"use one of {K_CHOICES}")
        if router not in self.routers:
            raise StageError("retrieve", f"unknown router {router!r}", f"use one of {sorted(self.routers)}")
        q = self.embedder.encode_one(query)
        route = self.routers[router].route(q, top_t=top_t, text=query)
        references = self.index.search(q, route.categories, k)
        return Retrieval(query=query, matched_categories=route.categories, category_scores=route.scores,
                         references=references, router=router)


def get_retriever(data_dir: str | None = None, embed_model: str | None = None,
                  ratio: float = DEFAULT_RATIO) -> Retriever:
    """The process-wide retriever for a corpus + model (built or loaded once)."""
    corpus = load_corpus(data_dir)
    embedder = get_embedder(embed_model)
    key = (corpus.source, corpus.fingerprint, embedder.name, ratio)
    with _LOCK:
        if key not in _RETRIEVERS:
            if not (ReferenceIndex.folder_for(corpus, embedder, ratio) / "meta.json").exists():  # online, a
                # verified prebuilt index (and its embeddings) can serve instead of a local build
                from popcorn import prebuilt

                prebuilt.install(corpus)
            _RETRIEVERS[key] = Retriever(corpus, embedder, ratio)
        return _RETRIEVERS[key]


def retrieve(query: str, k: int = 10, *, router: str = "ours", top_t: int | None = None,
             data_dir: str | None = None) -> Retrieval:
    return get_retriever(data_dir).retrieve(query, k, router=router, top_t=top_t)
