"""Honest judging: is a title new, or a copy of what the LLM was shown? And does a win survive a judge that does not
retrieve?

h is retrieval-augmented and PE shows the LLM popular MicroLens titles, so h could reward an LLM for copying them.
Two checks sit beside h's tables:

- Novelty. Each generated title is compared with the references shown to the LLM (PE) and with every title of the
  corpus. The similarity is the Jaccard index of the two titles' character 3-gram sets after normalisation (NFKC,
  case folded, every run of non-letters/digits made one space). A title is a near-copy when that index reaches
  NEAR_COPY (0.5) with some title: tests/test_report_judges.py plants copies (changed case and punctuation, an
  added hashtag or emoji, a changed word, a cut ending) and counts how many are caught and how often two different
  corpus titles are flagged. For Basic runs, which are shown nothing, the similarity to the references that PE was
  shown for the same prompt is reported as the control.
- A second judge: h trained without its retrieval features (popcorn.popularity Settings(retrieval=())), so nothing
  in it looks up neighbours in the corpus. Its checkpoint is cached beside h's (trained once, about a minute).
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import replace

import numpy as np
from scipy import sparse

NEAR_COPY = 0.5
NGRAM = 3
SECOND_JUDGE = "h without retrieval features"


def normalise(title: str) -> str:
    text = unicodedata.normalize("NFKC", str(title or "")).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def ngrams(title: str, n: int = NGRAM) -> set[str]:
    """The character n-grams of the normalised title, padded with a space at each end (a short title: itself)."""
    text = f" {normalise(title)} "
    if len(text.strip()) == 0:
        return set()
    return {text[i:i + n] for i in range(max(1, len(text) - n + 1))}


class NgramIndex:
    """Titles as binary n-gram rows, so one title's Jaccard with all of them is one sparse product."""

    def __init__(self, titles: list[str]):
        self.titles = list(titles)
        self.vocab: dict[str, int] = {}
        self.matrix = self._rows(self.titles, grow=True)
        self.sizes = np.asarray(self.matrix.sum(axis=1)).ravel()

    def _rows(self, titles: list[str], grow: bool) -> sparse.csr_matrix:
        indptr, indices = [0], []
        for title in titles:
            for gram in ngrams(title):
                col = self.vocab.get(gram)
                if col is None and grow:
                    col = self.vocab[gram] = len(self.vocab)
                if col is not None:
                    indices.append(col)
            indptr.append(len(indices))
        data = np.ones(len(indices), dtype=np.float32)
        return sparse.csr_matrix((data, indices, indptr), shape=(len(titles), max(1, len(self.vocab))))

    def jaccard(self, titles: list[str]) -> np.ndarray:
        """(len(titles), len(index)) Jaccard indexes."""
        if not titles or not self.titles:
            return np.zeros((len(titles), len(self.titles)), dtype=np.float32)
        sizes = np.array([len(ngrams(t)) for t in titles], dtype=np.float32)
        query = self._rows(titles, grow=False)
        inter = (query @ self.matrix.T).toarray()
        union = sizes[:, None] + self.sizes[None, :] - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)

    def nearest(self, titles: list[str], exclude: list[int | None] | None = None) -> list[tuple[float, str]]:
        """For each title, its highest Jaccard in the index and that title; `exclude[i]`: a row of the index not to
        count for title i (the title's own video)."""
        if not self.titles:
            return [(0.0, "")] * len(titles)
        out = []
        for start in range(0, len(titles), 256):  # bounded memory: 256 x corpus at a time
            sims = self.jaccard(titles[start:start + 256])
            for i, row in enumerate((exclude or [])[start:start + 256]):
                if row is not None:
                    sims[i, row] = -1.0
            out += [(round(float(sims[i, j]), 4), self.titles[j]) for i, j in enumerate(sims.argmax(axis=1))]
        return out


def similarity(a: str, b: str) -> float:
    """Jaccard of two titles' character 3-gram sets (normalised)."""
    x, y = ngrams(a), ngrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def is_near_copy(a: str, b: str, threshold: float = NEAR_COPY) -> bool:
    return similarity(a, b) >= threshold


def max_similarity(title: str, others: list[str]) -> tuple[float, str]:
    """The closest of `others` to `title` (0.0, '' when there are none)."""
    scored = [(similarity(title, o), o) for o in others]
    return max(scored, default=(0.0, ""))


# ---------------------------------------------------------------------------------------------------- per run


_CORPUS_INDEX: dict[str, NgramIndex] = {}


def corpus_index() -> NgramIndex:
    """The n-gram index of every MicroLens title of the configured corpus (built once per process)."""
    from popcorn.retrieval.corpus import load_corpus

    corpus = load_corpus()
    if corpus.fingerprint not in _CORPUS_INDEX:
        _CORPUS_INDEX[corpus.fingerprint] = NgramIndex(corpus.table["title"].astype(str).tolist())
    return _CORPUS_INDEX[corpus.fingerprint]


def novelty(titles: list[str], shown: list[list[str]], index: NgramIndex | None = None,
            threshold: float = NEAR_COPY) -> list[dict]:
    """For each title: its closest reference among those shown, and its closest corpus title; near-copy flags."""
    index = index if index is not None else corpus_index()
    nearest = index.nearest(titles)
    out = []
    for title, refs, (corpus_sim, corpus_title) in zip(titles, shown, nearest):
        ref_sim, ref_title = max_similarity(title, refs)
        out.append({"title": title, "refs": len(refs), "ref_similarity": round(ref_sim, 4), "ref_title": ref_title,
                    "ref_copy": bool(refs) and ref_sim >= threshold, "corpus_similarity": corpus_sim,
                    "corpus_title": corpus_title, "corpus_copy": corpus_sim >= threshold})
    return out


def human_base_rate(video_ids: list[int], threshold: float = NEAR_COPY) -> dict:
    """How often a human-made MicroLens title has a near-copy among the corpus's other titles (series, re-uploads):
    the rate a generated title would show by chance of the corpus, next to which the generated rates are read."""
    from popcorn.retrieval.corpus import load_corpus

    table = load_corpus().table
    row_of = {int(v): i for i, v in enumerate(table["video_id"])}
    rows = [row_of[int(v)] for v in dict.fromkeys(video_ids) if int(v) in row_of]
    index = corpus_index()
    nearest = index.nearest([index.titles[r] for r in rows], exclude=rows)
    k = sum(sim >= threshold for sim, _ in nearest)
    return {"share": round(k / len(rows), 4) if rows else None, "k": k, "n": len(rows),
            "median_corpus_similarity": round(float(np.median([sim for sim, _ in nearest])), 4) if rows else None}


# ---------------------------------------------------------------------------------------------------- judge 2


_SECOND_JUDGES: dict = {}  # corpus fingerprint -> the second judge, once per process
_SECOND_LOCK = threading.Lock()


def second_judge(progress=None):
    """h without retrieval features: trained on the configured corpus once (its checkpoint cached beside h's), then
    loaded from the cache once per process (each report of a long-lived studio reuses it)."""
    from popcorn.retrieval.corpus import load_corpus
    from popcorn.popularity import Predictor, fit_predictor
    from popcorn.popularity.predictor import checkpoint_path, default_settings

    corpus = load_corpus()
    with _SECOND_LOCK:  # two reports at once train or load it once
        if corpus.fingerprint in _SECOND_JUDGES:
            return _SECOND_JUDGES[corpus.fingerprint]
        settings = replace(default_settings(corpus), retrieval=())
        path = checkpoint_path(corpus, settings)
        if path.exists():
            predictor = Predictor.load(path)
        else:
            if progress:
                progress(f"training the second judge ({SECOND_JUDGE}) once -> {path}")
            predictor = fit_predictor(corpus, settings, progress)
            predictor.save(path)
        _SECOND_JUDGES[corpus.fingerprint] = predictor
        return predictor


def second_judge_labels(items: list[dict], predictor=None) -> list[float]:
    """Predicted labels of items {title, category} under the second judge."""
    if not items:
        return []
    predictor = predictor or second_judge()
    return [s.label for s in predictor.score_batch(items)]
