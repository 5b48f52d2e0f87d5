"""PE+'s ranker (issue 28, session 9): h with the references shown to the LLM taken out of its neighbour memory
(popcorn/popularity/unseen.py), so a draft is not rewarded for resembling h's own training videos that the LLM saw."""

from __future__ import annotations

import numpy as np
import pytest

from popcorn.llm import plus
from popcorn.popularity import get_predictor
from popcorn.popularity.unseen import kept_rows, without_memory
from popcorn.types import Plan, Reference, Retrieval

VIDEO = "A kitten steps onto fresh snow in a garden at dawn, slow push-in at ground level, soft light, quiet mood."


@pytest.fixture(scope="module")
def h():
    return get_predictor()


def test_a_masked_video_scores_its_own_title_as_h_does_with_that_video_left_out(h):
    """Scoring a training video's title with the video out of the memory gives exactly h's leave-one-out label (the
    id exclusion the trainer uses), and not h's label with the video remembered: the masking is what it claims."""
    bank = h.model.memory
    rows = [10, 500, 4000]
    items = [{"title": bank.titles[r], "category": str(bank.categories[r])} for r in rows]
    remembered = [s.label for s in h.score_batch(items)]
    left_out = [s.label for s in h.score_batch([{**it, "video_id": int(bank.video_ids[r])}
                                               for it, r in zip(items, rows)])]
    masked = [without_memory(h, [int(bank.video_ids[r])]).score_batch([it])[0].label for it, r in zip(items, rows)]
    assert masked == pytest.approx(left_out, abs=1e-6)
    assert max(abs(a - b) for a, b in zip(masked, remembered)) > 0.05  # a remembered title is scored differently


def test_masking_keeps_every_other_row_in_order_and_leaves_h_untouched(h):
    bank = h.model.memory
    ids = [int(bank.video_ids[3]), int(bank.video_ids[7]), -12345]  # an id not in the bank is ignored
    masked = without_memory(h, ids)
    assert len(masked.model.memory) == len(bank) - 2 and len(bank) == len(h.model.memory)
    keep = kept_rows(bank, ids)
    assert np.array_equal(masked.model.memory.video_ids, np.delete(bank.video_ids, [3, 7]))
    assert masked.model.memory.titles[:5] == [bank.titles[i] for i in keep[:5]]
    assert all(space.shape[0] == len(bank) - 2 for space in masked.model.memory.spaces.values())
    assert masked.model.oof_predictions.shape == (len(bank) - 2,)
    assert without_memory(h, [-1]) is h and kept_rows(bank, []) is None


def test_pick_title_ranks_by_h_without_the_shown_references_and_records_plain_h_beside(h):
    bank = h.model.memory
    # the references: the 10 training videos most like the idea by the word space (what a title would echo)
    query = h.model.word_matrix(["my kitten sees snow for the first time"], ["Animal"])
    found, _ = bank.search("word", query, k=10)
    references = [Reference(video_id=int(bank.video_ids[r]), title=bank.titles[r], category=str(bank.categories[r]),
                            comments=int(bank.comments[r]), label="popular", similarity=0.5) for r in found[0]]
    retrieval = Retrieval(query="a kitten and snow", matched_categories=["Animal"], category_scores=[],
                          references=references)
    plan = Plan(title="First snow, first zoomies", cover_prompt="a kitten in snow", video_prompt=VIDEO, mode="plus",
                matched_categories=["Animal"])
    drafts = ["My kitten meets snow for the very first time", "Snow day: a kitten's first leap",
              "Can a kitten love snow? Watch this"]
    best, rows = plus.pick_title(plan, drafts, retrieval)
    kept = [r for r in rows if "dropped" not in r]
    masked = without_memory(h, [r.video_id for r in references])
    items = [{"title": r["title"], "category": "Animal"} for r in kept]
    assert [r[plus.RANKER] for r in kept] == pytest.approx([s.label for s in masked.score_batch(items)], abs=1e-3)
    assert [r[plus.PLAIN] for r in kept] == pytest.approx([s.label for s in h.score_batch(items)], abs=1e-3)
    top = max(kept, key=lambda r: r[plus.RANKER])
    assert best.title == top["title"] and [r["title"] for r in rows if r["chosen"]] == [top["title"]]
    # the references' memory matters for a title that echoes them: its two labels differ
    assert any(abs(r[plus.RANKER] - r[plus.PLAIN]) > 1e-3 for r in kept)
