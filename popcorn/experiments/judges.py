"""Honest judging: is a title new, or a copy of what the LLM was shown? (The judge PE cannot flatter, trained on the
judge set only, lives in popcorn/popularity/judges.py.)

h is retrieval-augmented and PE shows the LLM popular MicroLens titles, so h could reward an LLM for copying them.
The near-copy checks beside the judges' tables (excluding near-copies stays a sensitivity analysis):

- Novelty. Each generated title is compared with the references shown to the LLM (PE) and with every title of the
  corpus. The similarity is the Jaccard index of the two titles' character 3-gram sets after normalisation (NFKC,
  case folded, every run of non-letters/digits made one space). A title is a near-copy when that index reaches
  NEAR_COPY (0.5) with some title: tests/test_report_judges.py plants copies (changed case and punctuation, an
  added hashtag or emoji, a changed word, a cut ending) and counts how many are caught and how often two different
  corpus titles are flagged. For Basic runs, which are shown nothing, the similarity to the references that PE was
  shown for the same prompt is reported as the control.
- Containment: a reference (or corpus) title of at least MIN_CONTAINED character 3-grams whose 3-grams are, for at
  least CONTAINED (0.9) of them, inside the generated title is a near-copy too: Jaccard misses a short reference
  embedded in a longer title ("<reference> | day 3 of my challenge #fyp").
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
from scipy import sparse

NEAR_COPY = 0.5
NGRAM = 3
CONTAINED = 0.9  # share of a title's n-grams found in the generated title
MIN_CONTAINED = 12  # n-grams a title needs before its containment counts (short titles are contained by chance)
DETECTOR = (f"character {NGRAM}-gram Jaccard of normalised titles >= {NEAR_COPY}, or a title of >= {MIN_CONTAINED} "
            f"{NGRAM}-grams with >= {CONTAINED:.0%} of them inside the generated title (containment)")


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
        return self.similarities(titles)[0]

    def similarities(self, titles: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(Jaccard, containment) of each title with each indexed one, both (len(titles), len(index)); containment is
        the share of the indexed title's n-grams inside the title (0 for indexed titles under MIN_CONTAINED n-grams).
        A query n-gram the index has never seen counts in its size, so it lowers the Jaccard as it should."""
        if not titles or not self.titles:
            empty = np.zeros((len(titles), len(self.titles)), dtype=np.float32)
            return empty, empty
        sizes = np.array([len(ngrams(t)) for t in titles], dtype=np.float32)
        query = self._rows(titles, grow=False)
        inter = (query @ self.matrix.T).toarray()
        union = sizes[:, None] + self.sizes[None, :] - inter
        jac = np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)
        long_enough = (self.sizes >= MIN_CONTAINED)[None, :]
        contained = np.where(long_enough, inter / np.maximum(self.sizes[None, :], 1), 0.0).astype(np.float32)
        return jac, contained

    def nearest(self, titles: list[str], exclude: list[int | None] | None = None) -> list[tuple[float, str, float, str]]:
        """For each title: its highest Jaccard in the index and that title, its highest containment and that title;
        `exclude[i]`: a row of the index not to count for title i (the title's own video)."""
        if not self.titles:
            return [(0.0, "", 0.0, "")] * len(titles)
        out = []
        for start in range(0, len(titles), 256):  # bounded memory: 256 x corpus at a time
            sims, contained = self.similarities(titles[start:start + 256])
            for i, row in enumerate((exclude or [])[start:start + 256]):
                if row is not None:
                    sims[i, row] = contained[i, row] = -1.0
            for i, (j, c) in enumerate(zip(sims.argmax(axis=1), contained.argmax(axis=1))):
                out.append((round(float(sims[i, j]), 4), self.titles[j], round(float(contained[i, c]), 4),
                            self.titles[c]))
        return out


def similarity(a: str, b: str) -> float:
    """Jaccard of two titles' character 3-gram sets (normalised)."""
    x, y = ngrams(a), ngrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def containment(title: str, other: str) -> float:
    """The share of `other`'s 3-grams inside `title` (0 when `other` has fewer than MIN_CONTAINED)."""
    x, y = ngrams(title), ngrams(other)
    return len(x & y) / len(y) if len(y) >= MIN_CONTAINED else 0.0


def is_near_copy(a: str, b: str, threshold: float = NEAR_COPY) -> bool:
    """a copies b: similar as a whole (Jaccard), or b sits inside a (containment)."""
    return similarity(a, b) >= threshold or containment(a, b) >= CONTAINED


def max_similarity(title: str, others: list[str]) -> tuple[float, str]:
    """The closest of `others` to `title` (0.0, '' when there are none)."""
    scored = [(similarity(title, o), o) for o in others]
    return max(scored, default=(0.0, ""))


def max_containment(title: str, others: list[str]) -> tuple[float, str]:
    scored = [(containment(title, o), o) for o in others]
    return max(scored, default=(0.0, ""))


# ---------------------------------------------------------------------------------------------------- per run


_CORPUS_INDEX: dict[str, NgramIndex] = {}


def corpus_index() -> NgramIndex:
    """The n-gram index of every MicroLens title, all parts of the judge split (built once per process)."""
    from popcorn.retrieval.corpus import load_corpus

    corpus = load_corpus(part="all")
    if corpus.fingerprint not in _CORPUS_INDEX:
        _CORPUS_INDEX[corpus.fingerprint] = NgramIndex(corpus.table["title"].astype(str).tolist())
    return _CORPUS_INDEX[corpus.fingerprint]


def novelty(titles: list[str], shown: list[list[str]], index: NgramIndex | None = None,
            threshold: float = NEAR_COPY) -> list[dict]:
    """For each title: its closest reference among those shown, and its closest corpus title; near-copy flags."""
    index = index if index is not None else corpus_index()
    nearest = index.nearest(titles)
    out = []
    for title, refs, (corpus_sim, corpus_title, corpus_in, corpus_in_title) in zip(titles, shown, nearest):
        ref_sim, ref_title = max_similarity(title, refs)
        ref_in, ref_in_title = max_containment(title, refs)
        ref_contained = bool(refs) and ref_in >= CONTAINED
        corpus_contained = corpus_in >= CONTAINED
        out.append({"title": title, "refs": len(refs), "ref_similarity": round(ref_sim, 4),
                    "ref_title": ref_title if ref_sim >= threshold or not ref_contained else ref_in_title,
                    "ref_containment": round(ref_in, 4), "ref_contained": ref_contained,
                    "ref_copy": bool(refs) and (ref_sim >= threshold or ref_contained),
                    "corpus_similarity": corpus_sim, "corpus_containment": corpus_in,
                    "corpus_title": corpus_title if corpus_sim >= threshold or not corpus_contained else corpus_in_title,
                    "corpus_contained": corpus_contained, "corpus_copy": corpus_sim >= threshold or corpus_contained})
    return out


def human_base_rate(video_ids: list[int], threshold: float = NEAR_COPY) -> dict:
    """How often a human-made MicroLens title has a near-copy among the corpus's other titles (series, re-uploads):
    the rate a generated title would show by chance of the corpus, next to which the generated rates are read."""
    from popcorn.retrieval.corpus import load_corpus

    table = load_corpus(part="all").table  # the same table as corpus_index(), row for row
    row_of = {int(v): i for i, v in enumerate(table["video_id"])}
    rows = [row_of[int(v)] for v in dict.fromkeys(video_ids) if int(v) in row_of]
    index = corpus_index()
    nearest = index.nearest([index.titles[r] for r in rows], exclude=rows)
    k = sum(sim >= threshold or contained >= CONTAINED for sim, _, contained, _ in nearest)
    return {"share": round(k / len(rows), 4) if rows else None, "k": k, "n": len(rows),
            "median_corpus_similarity": round(float(np.median([n[0] for n in nearest])), 4) if rows else None}
