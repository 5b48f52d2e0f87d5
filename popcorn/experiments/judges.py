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

import numpy as np

# the detector lives below both the plan modes and the report (PE+ drops drafts that copy a reference); its names
# are re-exported here for the report's readers
from popcorn.retrieval.copies import (CONTAINED, DETECTOR, MIN_CONTAINED, NEAR_COPY, NGRAM, NgramIndex,  # noqa: F401
                                      containment, is_near_copy, max_containment, max_similarity, ngrams, normalise,
                                      similarity)


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
