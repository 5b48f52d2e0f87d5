"""Prompt Enhancement retrieval: route the query to MicroLens categories, then fetch popular and unpopular references.

The paper's algorithm (LLMPopcorn, section 3.2), step by step:
  1. route:  pick the top-T categories for the query (the paper: cosine of the query with each category NAME);
  2. split:  inside those categories, the bottom `ratio` of videos by comment count are "unpopular", the rest "popular";
  3. search: FAISS inner-product search of the query against the videos' title embeddings;
  4. return: K references, K*(1-ratio) popular + K*ratio unpopular, nearest first.

Unlike the paper's script, which re-encodes the category's texts and rebuilds a FAISS index on every request, the
embeddings, the split and one FAISS index per (category, label) are built once per corpus and model, persisted in the
cache and reloaded (`ReferenceIndex.load_or_build`). Routers live in popcorn/retrieval/routing.py.
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
from popcorn.retrieval.corpus import Corpus, load_corpus
from popcorn.retrieval.embed import Embedder, corpus_embeddings, drop_parts, get_embedder, known_titles, part_vectors
from popcorn.retrieval.routing import build_routers
from popcorn.serve import prebuilt
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
              vectors: np.ndarray | None = None, only: list[str] | None = None) -> "ReferenceIndex":
        """The split and indexes over `vectors` (the corpus' title embeddings; default: the cached ones, and then the
        parts a quick retrieval left are dropped). `only`: FAISS indexes for these categories alone (whose rows of
        `vectors` must be filled); the split is made for every category either way."""
        if vectors is None:
            vectors = corpus_embeddings(corpus, embedder)
            drop_parts(corpus.fingerprint, embedder)
        table = corpus.table
        categories = table["category"].to_numpy()
        comments = table["comments"].to_numpy(np.int64)
        cuts, indexes, rows = {}, {}, {}
        for category in sorted(set(categories)):
            members = np.flatnonzero(categories == category)
            cut = unpopular_cut(comments[members], ratio)
            cuts[category] = cut
            if only is not None and category not in only:
                continue
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
        faiss.omp_set_num_threads(1)  # one query at a time: threads cost more than they give at this size
        self.corpus = corpus
        self.embedder = embedder
        self.index = ReferenceIndex.load_or_build(corpus, embedder, ratio)
        self.routers = routers_for(corpus, embedder)
        embedder.encode_one("")  # the query encoder is built (ONNX export, once) here, not inside the first query

    def retrieve(self, query: str, k: int = 10, *, router: str = "ours", top_t: int | None = None,
                 gloss: str = "") -> Retrieval:
        """`gloss`: an English reading of the query (popcorn/llm/gloss.py): embedded instead of it for the route and
        the references; the names lexicon reads both."""
        query = _checked(query, k, router)
        q = self.embedder.encode_one(gloss or query)
        route = self.routers[router].route(q, top_t=top_t, text=routing_text(query, gloss))
        references = self.index.search(q, route.categories, k)
        return Retrieval(query=query, matched_categories=route.categories, category_scores=route.scores,
                         references=references, router=router, margin=route.margin, deciding_signal=route.deciding,
                         gloss=gloss)


ROUTERS = ("paper", "ours")
_ROUTER_SETS: dict[tuple, dict] = {}
_ROUTER_LOCK = threading.Lock()


def routers_for(corpus: Corpus, embedder: Embedder) -> dict[str, object]:
    """The routers of a corpus and model, built once per process: they read no title embedding, so the whole index
    and a quick first plan route with the same objects."""
    key = (corpus.source, corpus.fingerprint, embedder.name)
    with _ROUTER_LOCK:
        if key not in _ROUTER_SETS:
            _ROUTER_SETS[key] = build_routers(corpus, embedder)
        return _ROUTER_SETS[key]


def routing_text(query: str, gloss: str) -> str:
    """The text the routers look up names in: the idea as typed, and its English gloss where it has one."""
    return f"{query} {gloss}" if gloss else query


def _checked(query: str, k: int, router: str) -> str:
    query = (query or "").strip()
    if not query:
        raise StageError("retrieve", "the query is empty", "type a one-line idea for the video")
    if k < 1 or k > 500:
        raise StageError("retrieve", f"K={k} is out of range", f"use one of {K_CHOICES}")
    if router not in ROUTERS:
        raise StageError("retrieve", f"unknown router {router!r}", f"use one of {sorted(ROUTERS)}")
    return query


# -------------------------------------------------------------------------------------------------- a quick first plan

QUICK_ENOUGH = 3000  # when no more titles than this are left to embed, the whole index is built instead
_QUICK_LOCK = threading.Lock()


class QuickRetriever:
    """PE retrieval before the whole index exists: a first plan on a fresh cache (the CLI), or one made while the
    studio's warm-up is still embedding titles. Embedding all titles takes ~40 s on a 2-core CPU; this embeds the
    routed categories' titles only.

    The routers read no title embedding (the `ours` blend's title signals weigh 0, popcorn/retrieval/routing.py), so
    the route is the whole index's. Then it embeds every title of the routed categories not embedded yet and searches
    them exactly as the whole index would: the same references. The Retrieval says what it embedded (`index`). What it
    embeds stays in the cache, so the whole index later reuses it; `python -m popcorn index` or the studio's warm-up
    builds it."""

    def __init__(self, corpus: Corpus, embedder: Embedder, ratio: float = DEFAULT_RATIO):
        self.corpus, self.embedder, self.ratio = corpus, embedder, ratio

    def retrieve(self, query: str, k: int = 10, *, router: str = "ours", top_t: int | None = None,
                 gloss: str = "") -> Retrieval:
        query = _checked(query, k, router)
        with _QUICK_LOCK:  # two first plans at once embed (and write) each part once, one after the other
            return self._retrieve(query, k, router, top_t, gloss)

    def _retrieve(self, query: str, k: int, router: str, top_t: int | None, gloss: str) -> Retrieval:
        corpus, embedder = self.corpus, self.embedder
        q = embedder.encode_one(gloss or query)
        route = routers_for(corpus, embedder)[router].route(q, top_t=top_t, text=routing_text(query, gloss))
        vectors, known = known_titles(corpus, embedder)
        members = np.flatnonzero(corpus.table["category"].isin(route.categories).to_numpy())
        _embed_missing(corpus, embedder, members, vectors, known)
        index = ReferenceIndex.build(corpus, embedder, self.ratio, vectors=vectors, only=route.categories)
        return Retrieval(query=query, matched_categories=route.categories, category_scores=route.scores,
                         references=index.search(q, route.categories, k), router=router,
                         index=f"quick: searched the routed categories' {len(members):,} of {len(corpus):,} titles",
                         margin=route.margin, deciding_signal=route.deciding, gloss=gloss)


def _embed_missing(corpus: Corpus, embedder: Embedder, rows: np.ndarray, vectors: np.ndarray,
                   known: np.ndarray) -> None:
    """Embed those of `rows` not known yet, cached as one part of just them (so the parts of a cache never hold more
    than one corpus' worth of vectors, whatever routes visitors ask for); fills `vectors` and `known` in place."""
    missing = rows[~known[rows]]
    if len(missing):
        vectors[missing] = part_vectors(corpus, missing, embedder)
        known[missing] = True


# ------------------------------------------------------------------------- the whole index, filled behind plans

FILL_CHUNK = 1000  # titles the background fill embeds between two looks at whether a plan is being made
FILL_PATIENCE_S = 60.0  # the longest the fill steps aside before its next chunk: plans in a row cannot starve it
_FOREGROUND = threading.Condition()
_PLANS_NOW = 0


class foreground:
    """`with retrieval.foreground():` around an interactive plan. While one is held, `fill_index` (the studio's
    warm-up) embeds nothing more after its current chunk, so a first plan has the CPU to itself."""

    def __enter__(self):
        global _PLANS_NOW
        with _FOREGROUND:
            _PLANS_NOW += 1
        return self

    def __exit__(self, *exc):
        global _PLANS_NOW
        with _FOREGROUND:
            _PLANS_NOW -= 1
            _FOREGROUND.notify_all()
        return False


def _wait_for_no_plan() -> None:
    """Until no interactive plan is being made, or FILL_PATIENCE_S have passed (a busy public instance, with one plan
    after another, still gets its whole index: at least a chunk a minute)."""
    with _FOREGROUND:
        _FOREGROUND.wait_for(lambda: _PLANS_NOW == 0, timeout=FILL_PATIENCE_S)


def fill_index(corpus: Corpus, embedder: Embedder, chunk: int | None = None) -> int:
    """Embed every title not embedded yet, `chunk` titles at a time, each chunk cached as a part, stepping aside
    (between chunks, up to FILL_PATIENCE_S each) while an interactive plan is being made. Holds no lock, so a quick
    plan can run meanwhile; the whole index is then built from the parts without embedding anything. Returns the
    titles embedded."""
    chunk = chunk or FILL_CHUNK
    _, known = known_titles(corpus, embedder)
    order = np.flatnonzero(~known)
    done = 0
    for start in range(0, len(order), chunk):
        _wait_for_no_plan()
        rows = order[start:start + chunk]
        with _QUICK_LOCK:  # one embedding at a time in this process, never two writers of the cache's parts
            part_vectors(corpus, rows, embedder)
        done += len(rows)
    return done


def _quick(corpus: Corpus, embedder: Embedder, ratio: float) -> QuickRetriever | None:
    """A QuickRetriever when the whole index would take long to build: not on disk, no prebuilt one, and more than
    QUICK_ENOUGH titles left to embed. None otherwise (then the whole index is loaded or built)."""
    if config.first_plan() != "quick" or (ReferenceIndex.folder_for(corpus, embedder, ratio) / "meta.json").exists():
        return None
    if prebuilt.install(corpus):
        return None
    _, known = known_titles(corpus, embedder)
    return QuickRetriever(corpus, embedder, ratio) if (~known).sum() > QUICK_ENOUGH else None


def get_retriever(data_dir: str | None = None, embed_model: str | None = None,
                  ratio: float = DEFAULT_RATIO, *, quick: bool = False) -> "Retriever | QuickRetriever":
    """The process-wide retriever for a corpus + model (built or loaded once). `quick` (one interactive plan): a
    QuickRetriever instead when the whole index is not built yet and no build is under way in this process (the
    studio's warm-up), so a first plan does not wait for every title to be embedded (POPCORN_FIRST_PLAN=full: never)."""
    corpus = load_corpus(data_dir)
    embedder = get_embedder(embed_model)
    key = (corpus.source, corpus.fingerprint, embedder.name, ratio)
    if quick and key not in _RETRIEVERS and not _LOCK.locked():
        quick_one = _quick(corpus, embedder, ratio)
        if quick_one is not None:
            return quick_one
    with _LOCK:
        if key not in _RETRIEVERS:
            if not (ReferenceIndex.folder_for(corpus, embedder, ratio) / "meta.json").exists():  # online, a
                # verified prebuilt index (and its embeddings) can serve instead of a local build
                prebuilt.install(corpus)
            _RETRIEVERS[key] = Retriever(corpus, embedder, ratio)
        return _RETRIEVERS[key]


def retrieve(query: str, k: int = 10, *, router: str = "ours", top_t: int | None = None,
             data_dir: str | None = None, quick: bool = False) -> Retrieval:
    return get_retriever(data_dir, quick=quick).retrieve(query, k, router=router, top_t=top_t)
