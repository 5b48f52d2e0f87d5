"""Category routing for Prompt Enhancement: which MicroLens categories does a query belong to?

Two routers, both selectable (POPCORN_ROUTER or `--router`), so experiments can compare them:

- `paper`: the paper's method. Cosine of the query with each category NAME; the top-T names win.
- `ours`:  a blend of signals, each cheap at query time because everything per category is precomputed:
    desc     cosine with the category's name + a short description of what is posted under it (assets/categories.json)
    examples highest cosine with the category's hand-written example phrases (assets/categories.json)
    names    share of the category names (games, shows, dishes, ...) found in the query text that are the category's
    ideas    highest cosine with the ideas people filed under the category: the labelled idea bank of
             assets/routing/*.tsv, one file per writer (2,582 ideas by thirteen writers; a supervised signal in the
             examples' form, which grows with every labelled set instead of with lexicon words; its vectors for the
             packaged model ship with it, popcorn/retrieval/shipped.py)
  and two that read the corpus' title embeddings, weighted 0 by default since session 12:
    centroid cosine with the mean title embedding of the category's videos
    vote     share of the query's nearest MicroLens titles (similarity-weighted) that belong to the category
  With the idea bank they add nothing: routing each bank file by the other writers' bank (2,345 ideas), the blend
  with them is right 0.790 of the time and without them 0.792, with the same share of unsure routes and the same
  accuracy among them (bench/RESULTS.md). Without them a route needs no title embedded at all, so a first plan embeds
  only the routed category's titles (popcorn.retrieval.index.QuickRetriever) and routes exactly as the whole index.
  The cosine signals are calibrated per query: a softmax over the categories at `temperature` turns each into a
  distribution, as the vote and the names already are, so a category whose description or centroid sits close to
  every query (Daily Sharing, Film and Television Works) no longer gains from that alone; what counts is how far a
  category stands out for this query.
  Categories with fewer than `min_size` videos are not candidates (too few references to learn from). When the best
  candidates are close (within a relative `margin` of the best score), up to `max_categories` are kept: an ambiguous query keeps
  several categories instead of betting on one.

The blend weights and the temperature were picked on the 414 labelled queries of assets/routing/routing_queries.tsv and
routing_heldout.tsv (a grid search, `fit_weights`, without the idea bank); grouped 10-fold cross-validation over them
gives 0.90 (`python bench/routing.py --cv`); three sets written blind by other writers were then routed 0.87, 0.76 and
0.76 right on first reading. The idea bank's weight (1, as the examples' scale) was chosen by leave-one-writer-out: each
writer's file routed by a router whose bank holds the other files only (`bench/routing.py --leave-out`), see
bench/RESULTS.md; the centroid and the vote were set to 0 the same way. Labels that name a format rather than a topic
("Others", "Video Clip": every micro-video is a clip) are marked not routable in assets/categories.json.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from popcorn import config
from popcorn.retrieval.corpus import UNKNOWN_CATEGORY, Corpus
from popcorn.retrieval.embed import Embedder
from popcorn.types import UNSURE_MARGIN, CategoryScore  # noqa: F401  (UNSURE_MARGIN: the routers' word for it)

SHOWN_SCORES = 5  # how many candidates a Route reports, for "why this category"


IDEAS_DIR = config.ASSETS_DIR / "routing"  # the labelled idea bank, one `category<TAB>idea` file per writer


def read_labelled(path: Path) -> list[tuple[str, str]]:
    """(category, idea) rows of one labelled file; '#' lines are comments."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if "\t" in line and not line.startswith("#"):
            category, idea = line.split("\t", 1)
            if category.strip() and idea.strip():
                rows.append((category.strip(), idea.strip()))
    return rows


def idea_bank(without: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """Every labelled idea of assets/routing/*.tsv, but those of the files named in `without` (by file name), which is
    how a writer's own file is routed by a bank that never saw it."""
    return [row for path in sorted(IDEAS_DIR.glob("*.tsv")) if path.name not in without for row in read_labelled(path)]


@dataclass
class Route:
    categories: list[str]  # the matched categories, best first
    scores: list[CategoryScore]  # the top candidates and their scores
    margin: float | None = None  # how far the best category is ahead of the next, relative to the best score
    deciding: str = ""  # the signal that put the best category ahead of the next (the largest weighted gap)


def relative_margin(scores: np.ndarray, order: np.ndarray) -> float | None:
    """(best - next) / best: 0 when two categories tie; None with one candidate or a best score <= 0."""
    if len(order) < 2 or scores[order[0]] <= 0:
        return None
    return round(float((scores[order[0]] - scores[order[1]]) / scores[order[0]]), 4)


def calibrated(cosines: np.ndarray, temperature: float) -> np.ndarray:
    """Cosines over the categories -> a softmax distribution at `temperature` (unchanged when it is 0)."""
    if temperature <= 0:
        return cosines
    z = (cosines - cosines.max()) / temperature
    e = np.exp(z)
    return e / e.sum()


@dataclass
class CategoryInfo:
    description: str
    examples: list[str]
    routable: bool = True
    names: list[str] = field(default_factory=list)

    def name_pattern(self) -> re.Pattern | None:
        """Whole-word, case-insensitive matcher for the category's names (CJK names match as substrings)."""
        if not self.names:
            return None
        parts = [re.escape(n) if not n.isascii() else rf"(?<!\w){re.escape(n)}(?!\w)"
                 for n in sorted(self.names, key=len, reverse=True)]
        return re.compile("|".join(parts), re.IGNORECASE)


def category_info() -> dict[str, CategoryInfo]:
    """Hand-written descriptions and example phrases per MicroLens category (assets/categories.json)."""
    data = json.loads((config.ASSETS_DIR / "categories.json").read_text(encoding="utf-8"))["categories"]
    return {name: CategoryInfo(d.get("description", name), list(d.get("examples", [])), bool(d.get("routable", True)),
                               list(d.get("names", [])))
            for name, d in data.items()}


def describe(category: str, info: "CategoryInfo | None") -> str:
    """The text the `desc` signal embeds for a category: its name and description."""
    return f"{category}: {info.description}" if info is not None else category


class NameRouter:
    """The paper's router: cosine similarity of the query with the category names."""

    name = "paper"

    def __init__(self, categories: list[str], embedder: Embedder, top_t: int = 1):
        self.categories = categories
        self.top_t = top_t
        self.name_vectors = embedder.encode_cached(categories)

    def route(self, q: np.ndarray, top_t: int | None = None, text: str = "") -> Route:
        scores = self.name_vectors @ q
        order = np.argsort(-scores)
        top = [self.categories[i] for i in order[: (top_t or self.top_t)]]
        shown = [CategoryScore(self.categories[i], round(float(scores[i]), 4)) for i in order[:SHOWN_SCORES]]
        return Route(top, shown, relative_margin(scores, order), "name")


@dataclass
class BlendWeights:
    desc: float = 0.5
    examples: float = 0.5
    centroid: float = 0.0  # 0.5 before session 12; the two signals that read title embeddings (module docstring)
    vote: float = 0.0  # 0.25 before session 12
    names: float = 0.5
    ideas: float = 1.0  # the labelled idea bank (module docstring); 0 leaves it out
    # softmax temperature that turns each cosine signal (desc, examples, centroid) into a distribution over the
    # categories; 0: raw cosines (the router before session 9)
    temperature: float = 0.1
    neighbours: int = 50  # nearest titles that vote
    # smallest category that can be routed to: 25 of the whole 17,738 before the judge split, the same share (0.14%)
    # of the 12,502-title retrieval corpus (Transportation, 18 there, stays routable; Photography, 12, does not)
    min_size: int = 18
    # keep runners-up scoring at least (1 - margin) x the best score: 0.2 keeps 2-3 categories for about 8% of the
    # labelled queries (the calibrated scores spread further apart than the raw ones, where 0.1 kept ~10%)
    margin: float = 0.2
    max_categories: int = 3

    @property
    def reads_titles(self) -> bool:
        """Whether a route needs the corpus' title embeddings (the centroid or the vote weighs)."""
        return bool(self.centroid or self.vote)


TITLE_WEIGHTS = {"centroid": 0.5, "vote": 0.25}  # the title signals' weights in sessions 9-11 (BlendWeights(**...))


class BlendRouter:
    """Our router: category descriptions, examples, names and the idea bank (+ title centroids and a nearest-title
    vote where they weigh; module docstring)."""

    name = "ours"

    def __init__(self, corpus: Corpus, embedder: Embedder, vectors: np.ndarray | None,
                 weights: BlendWeights | None = None, ideas: list[tuple[str, str]] | None = None):
        """`vectors`: the title embeddings of every corpus row; None where the weights read no title (the default
        ones). `ideas`: the labelled (category, idea) bank; None: all of assets/routing (idea_bank())."""
        self.w = weights or BlendWeights()
        if vectors is None and self.w.reads_titles:
            raise ValueError("these blend weights read title embeddings (centroid, vote): pass the corpus' vectors")
        table = corpus.table
        labels = table["category"].to_numpy()
        counts = table["category"].value_counts()
        info = category_info()
        self.categories = sorted(
            c for c, n in counts.items()
            if n >= self.w.min_size and c != UNKNOWN_CATEGORY and info.get(c, CategoryInfo(c, [])).routable)
        column = {c: i for i, c in enumerate(self.categories)}
        descriptions = [describe(c, info.get(c)) for c in self.categories]
        self.desc_vectors = embedder.encode_cached(descriptions)
        # example phrases, grouped by category (contiguous), for a max-similarity per category
        examples, owners = [], []
        for i, c in enumerate(self.categories):
            phrases = info[c].examples if c in info and info[c].examples else [c]
            examples += phrases
            owners += [i] * len(phrases)
        self.example_vectors = embedder.encode_cached(examples)
        self.name_patterns = [info[c].name_pattern() if c in info else None for c in self.categories]
        self.ideas = [(c, idea) for c, idea in (idea_bank() if ideas is None else ideas) if c in column]
        self.idea_owner = np.array([column[c] for c, _ in self.ideas], dtype=np.int64)
        self.idea_vectors = (embedder.encode_cached([idea for _, idea in self.ideas]) if self.ideas and self.w.ideas
                             else np.zeros((0, self.desc_vectors.shape[1]), dtype=np.float32))
        self.example_starts = np.flatnonzero(np.r_[True, np.diff(owners) != 0])
        self.all_titles = None  # the vote's search over the titles, and the centroids: only where they weigh
        self.centroids = None
        if self.w.reads_titles:
            self._read_titles(vectors, labels, column)

    def _read_titles(self, vectors: np.ndarray, labels: np.ndarray, column: dict) -> None:
        """The centroid and the vote's precomputed parts, from the title embeddings."""
        centroids = np.stack([vectors[labels == c].mean(axis=0) for c in self.categories])
        self.centroids = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)
        # every title votes for its category; titles of non-candidate categories vote for nothing (-1)
        self.row_category = np.array([column.get(c, -1) for c in labels], dtype=np.int64)
        self.all_titles = faiss.IndexFlatIP(vectors.shape[1])
        self.all_titles.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def signals(self, q: np.ndarray, text: str = "") -> dict[str, np.ndarray]:
        """The per-category signals for one query vector (each an array over self.categories)."""
        vote = self.title_vote(q)
        examples = np.maximum.reduceat(self.example_vectors @ q, self.example_starts)
        ideas = np.full(len(self.categories), -1.0)  # a category nobody filed an idea under is as far as can be
        if len(self.idea_vectors):
            np.maximum.at(ideas, self.idea_owner, self.idea_vectors @ q)
        t, zeros = self.w.temperature, np.zeros(len(self.categories))
        return {"desc": calibrated(self.desc_vectors @ q, t), "examples": calibrated(examples, t),
                "centroid": calibrated(self.centroids @ q, t) if self.centroids is not None else zeros, "vote": vote,
                "names": self.name_hits(text), "ideas": calibrated(ideas, t) if len(self.idea_vectors) else zeros}

    def title_vote(self, q: np.ndarray) -> np.ndarray:
        """The nearest titles' similarity-weighted share per category (0 everywhere where the vote does not weigh)."""
        vote = np.zeros(len(self.categories), dtype=np.float64)
        if self.all_titles is None:
            return vote
        sims, rows = self.all_titles.search(q.reshape(1, -1).astype(np.float32), self.w.neighbours)
        for sim, row in zip(sims[0], rows[0]):
            c = self.row_category[row] if row >= 0 else -1
            if c >= 0:
                vote[c] += max(float(sim), 0.0)
        total = vote.sum()
        return vote / total if total > 0 else vote

    def name_hits(self, text: str) -> np.ndarray:
        """Share of the names found in the query text that belong to each category (0 everywhere if none)."""
        hits = np.array([len(p.findall(text)) if p is not None else 0 for p in self.name_patterns], dtype=np.float64)
        return hits / hits.sum() if hits.sum() else hits

    SIGNALS = ("desc", "examples", "centroid", "vote", "names", "ideas")

    def weighted(self, q: np.ndarray, text: str = "") -> dict[str, np.ndarray]:
        """Each signal times its weight (their sum is the score)."""
        s = self.signals(q, text)
        return {k: getattr(self.w, k) * s[k] for k in self.SIGNALS}

    def scores(self, q: np.ndarray, text: str = "") -> np.ndarray:
        return sum(self.weighted(q, text).values())

    def route(self, q: np.ndarray, top_t: int | None = None, text: str = "") -> Route:
        parts = self.weighted(q, text)
        scores = sum(parts.values())
        order = np.argsort(-scores)
        deciding = ""
        if len(order) > 1:  # the signal whose weighted gap between the best and the next is largest
            deciding = max(self.SIGNALS, key=lambda k: parts[k][order[0]] - parts[k][order[1]])
        if top_t:
            chosen = order[:top_t]
        else:
            best = scores[order[0]]
            chosen = [i for i in order[: self.w.max_categories] if scores[i] >= best * (1.0 - self.w.margin)]
        shown = [CategoryScore(self.categories[i], round(float(scores[i]), 4)) for i in order[:SHOWN_SCORES]]
        return Route([self.categories[i] for i in chosen], shown, relative_margin(scores, order), deciding)


def build_routers(corpus: Corpus, embedder: Embedder) -> dict[str, object]:
    """The paper's router and ours (with the whole idea bank); neither reads a title embedding."""
    categories = corpus.categories()
    return {"paper": NameRouter(categories, embedder), "ours": BlendRouter(corpus, embedder, None)}


WEIGHT_GRID = {"desc": (0.5, 1, 2), "examples": (0.5, 1, 2), "centroid": (0, 0.5, 1), "vote": (0, 0.25, 0.5, 1),
               "names": (0, 0.1, 0.2, 0.3, 0.5, 1)}


def fit_weights(router: BlendRouter, embedder: Embedder, labelled: list[tuple[str, str]]) -> tuple[BlendWeights, float]:
    """Grid-search the blend weights on labelled (category, query) pairs; ties go to the smaller total weight.

    This is how the defaults were picked (on assets/routing/routing_queries.tsv + routing_heldout.tsv, at the default
    temperature, which the fit keeps with the other settings of `router.w`, the idea bank's weight among them: fit with
    a router whose bank holds none of `labelled`, or an idea finds itself). The router must read the titles (its
    weights for centroid and vote are searched: e.g. BlendWeights(**TITLE_WEIGHTS)). Returns the weights and their
    accuracy.
    """
    if not router.w.reads_titles:
        raise ValueError("fit_weights searches the title signals: fit with a router whose weights read the titles")
    keys = list(WEIGHT_GRID)
    known = [(c, q) for c, q in labelled if c in router.categories]
    target = np.array([router.categories.index(c) for c, _ in known])
    vectors = embedder.encode([q for _, q in known])
    signals = [router.signals(v, q) for v, (_, q) in zip(vectors, known)]
    stacked = {k: np.stack([s[k] for s in signals]) for k in keys}
    kept = router.w.ideas * np.stack([s["ideas"] for s in signals])  # the bank's part, not searched
    best, best_key = None, None
    for combo in itertools.product(*(WEIGHT_GRID[k] for k in keys)):
        scores = kept + sum(w * stacked[k] for w, k in zip(combo, keys))
        accuracy = float((scores.argmax(axis=1) == target).mean()) * len(known) / max(len(labelled), 1)
        key = (accuracy, -sum(combo))
        if best_key is None or key > best_key:
            best, best_key = combo, key
    base = router.w
    weights = BlendWeights(**dict(zip(keys, best)), ideas=base.ideas, temperature=base.temperature,
                           neighbours=base.neighbours, min_size=base.min_size, margin=base.margin,
                           max_categories=base.max_categories)
    return weights, best_key[0]
