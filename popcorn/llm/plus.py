"""PE+ (`--mode plus`): Prompt Enhancement, then title drafts ranked by h with the references shown out of its memory.

The paper's PE asks the LLM for one plan after showing it popular and unpopular MicroLens videos. PE+ keeps that plan
(the same prompt, the same seed: its first draft is PE's plan) and then asks the same LLM, in the same conversation,
for TITLE_DRAFTS more titles for it, each with another hook, in the light of the popular and unpopular titles it was
shown. The titles are the part of a plan that both the predictor and people read first, and a title costs ~15 tokens
where a whole plan costs ~150, so several titles cost a fraction of several plans: with the local model the drafts
reuse the conversation already in llama.cpp's KV cache.

Every draft that is a near-copy of a reference title (popcorn.retrieval.copies: 3-gram Jaccard or containment) is
dropped before ranking, so PE+ cannot win by borrowing a popular title. The rest, PE's own title among them, are
ranked by h as it would score them had it never remembered the references shown to the LLM (RANKER:
popcorn.popularity.unseen, the shown videos out of h's neighbour memory), never by the held-out judge. Why: the
references are h's own training videos, so plain h rewards a draft for resembling them (h's choice won 18-10-0 under
h and 9-10-9 under the held-out judge, session 8); on a proxy judge trained on retrieval videos that no ranker saw and
that hold none of the references (bench/plus_rankers.py, the 28 tuned prompts), the masked ranker agreed with the
proxy on 0.61 of within-prompt draft pairs against h's 0.57, and its choice was even with PE's title (10-8-10) where
h's lost (9-8-11): a small effect, within noise (bench/RESULTS.md). The plan records every draft with both labels,
whether it was dropped and why (`plan.drafts` in run.json), so the ablation (PE's title, the first draft, h's choice,
the masked choice) can be recomputed from the runs alone (bench/plus.py).
"""

from __future__ import annotations

import json

from popcorn.llm.plan_schema import TITLE_LIMIT
from popcorn.llm.trim import shorten_title
from popcorn.retrieval.copies import is_near_copy
from popcorn.types import Plan, Retrieval

TITLE_DRAFTS = 3  # titles drafted beside PE's own (bench/plus.py: ablation in bench/RESULTS.md)
RANKER = "h_unseen"  # the drafts' key of the label PE+ ranks by: h with the references shown out of its memory
PLAIN = "h"  # h as the score step uses it, recorded beside it (what plain h would have chosen: the ablation)

DRAFTS_ASK = (
    "Now write {n} other titles for this same plan, each at most {limit} characters, in the language of the idea, "
    "each with a different hook (a question, a number, a surprise, a feeling, a challenge). Use what the popular "
    "titles above do and avoid what the unpopular ones do, but do not reuse any reference title or its words. "
    "Answer with one JSON object with the keys {keys}."
)


def draft_keys(n: int = TITLE_DRAFTS) -> list[str]:
    return [f"title_{i + 1}" for i in range(n)]


def drafts_schema(n: int = TITLE_DRAFTS) -> dict:
    keys = draft_keys(n)
    return {"type": "object", "properties": {k: {"type": "string", "minLength": 4, "maxLength": TITLE_LIMIT}
                                             for k in keys},
            "required": keys, "additionalProperties": False}


def drafts_messages(plan_messages: list[dict], plan: Plan, n: int = TITLE_DRAFTS) -> list[dict]:
    """The plan's own conversation (PE's prompt and the plan it answered), then the ask for `n` more titles."""
    answer = json.dumps({"title": plan.title, "cover_prompt": plan.cover_prompt, "video_prompt": plan.video_prompt},
                        ensure_ascii=False)
    ask = DRAFTS_ASK.format(n=n, limit=TITLE_LIMIT, keys=", ".join(draft_keys(n)))
    return [*plan_messages, {"role": "assistant", "content": answer}, {"role": "user", "content": ask}]


def read_drafts(text: str, n: int = TITLE_DRAFTS) -> list[str]:
    """The drafted titles in an answer (missing or unreadable ones left out), each fitted to TITLE_LIMIT."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    out = []
    for key in draft_keys(n):
        title = " ".join(str(data.get(key) or "").split())
        if title:
            out.append(shorten_title(title, TITLE_LIMIT) if len(title) > TITLE_LIMIT else title)
    return out


def pick_title(plan: Plan, drafts: list[str], retrieval: Retrieval | None) -> tuple[Plan, list[dict]]:
    """PE's title and the drafts, near-copies of a reference dropped, ranked by h with the references shown out of its
    memory: (the plan with the best title, every draft with both labels (RANKER, PLAIN) or why it was dropped, PE's
    own first)."""
    from popcorn.popularity import get_predictor, rank_plans  # heavy (scikit-learn, scipy): PE+ only
    from popcorn.popularity.unseen import without_memory

    references = retrieval.references if retrieval else []
    shown = [r.title for r in references]
    rows, kept, seen = [], [], set()
    for i, title in enumerate([plan.title, *drafts]):
        row = {"title": title, "source": "pe" if i == 0 else f"draft {i}"}
        copied = next((ref for ref in shown if is_near_copy(title, ref)), None)
        if title.lower() in seen:
            row["dropped"] = "the same as an earlier title"
        elif copied is not None and i > 0:  # PE's own title stays: PE+ adds to PE, it never scores worse than it
            row["dropped"] = f"a near-copy of a reference title ({copied[:60]!r})"
        else:
            kept.append(Plan.from_dict({**plan.to_dict(), "title": title}))
        seen.add(title.lower())
        rows.append(row)
    h = get_predictor()
    ranked = rank_plans(kept, without_memory(h, [r.video_id for r in references]))
    for key, pairs in ((RANKER, ranked), (PLAIN, rank_plans(kept, h))):
        labels = {p.title: s.label for p, s in pairs}
        for row in rows:
            if row["title"] in labels and "dropped" not in row:
                row[key] = round(float(labels[row["title"]]), 4)
    best = ranked[0][0] if ranked else plan
    for row in rows:
        row["chosen"] = row["title"] == best.title and "dropped" not in row
    return best, rows
