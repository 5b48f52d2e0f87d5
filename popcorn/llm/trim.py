"""Text trimming: a title cut where a phrase ends, text within a length cut at a sentence, cleaned one-line text.

Used where a text has to fit: a title over TITLE_LIMIT, a plan field over its maxLength (popcorn/llm/token_mask.py),
a video prompt over the video model's budget (popcorn/pipeline.py), a value an answer stopped in the middle of.
"""

from __future__ import annotations

import re
from typing import Callable

from popcorn.llm.plan_schema import TITLE_LIMIT

# Words a title must not end on: articles, conjunctions, prepositions, possessives, and the words that announce
# what comes next ("Discover", "More", "Top", "How"). Used only where a title has to be cut.
DANGLING_ENDINGS = frozenset("""
a an the and or but nor so yet of to for in on at by from with without into onto upon about as than then vs via over
under after before between through like per plus your my our their his her its this that these those is are was were
be been being will can could would should must has have had do does did not no more most less best top new very just
how why what when where who which whose while if every all some any each discover explore watch see meet try learn
unlock get make find inside behind ultimate
""".split())
_PHRASE_END = re.compile(r"(?:\s[-–—|/]\s|[:：;；,，、]\s?|[.!?。！？…]+\s?)")
_CLOSER = {"(": ")", "[": "]", "{": "}", "“": "”", "«": "»"}
_TRAILING = " \t,.;:-–—/&|+([{\"'“”‘’«#@：；，、"


# a sentence ends at . ! ? before whitespace, or at a CJK full stop, which needs none (a Chinese paragraph has no
# spaces: split on ". " alone it is one sentence)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_CJK_STOPS = ("。", "！", "？")


def sentences(text: str) -> list[str]:
    """`text`'s sentences, in order, stripped."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def longest_sentences(text: str, fits: Callable[[str], bool]) -> str:
    """The longest run of `text`'s whole sentences, from its start, that `fits` ("" if not even the first does).
    Sentences are joined by a space, except after a CJK full stop."""
    kept = ""
    for sentence in sentences(text):
        candidate = kept + sentence if kept.endswith(_CJK_STOPS) else f"{kept} {sentence}".strip()
        if not fits(candidate):
            break
        kept = candidate
    return kept


def shorten_title(title: str, limit: int = TITLE_LIMIT) -> str:
    """The title within `limit` characters. A longer one is cut where a phrase ends: at the last phrase break
    (" - ", ":", ",", "!", "?", "。") that keeps at least 40% of the limit, else at the last word boundary, and then
    words that leave it dangling (DANGLING_ENDINGS: "of", "and", "the", "More", "Discover", ...) and trailing
    punctuation are dropped. A script without spaces (Chinese, Japanese) is cut at its last phrase break, else at
    the limit."""
    title = clean_text(title)
    if len(title) <= limit:
        return title
    head = title[: limit + 1]
    breaks = [m.start() for m in _PHRASE_END.finditer(head) if m.start() >= 0.4 * limit]
    keep = ""
    if breaks:
        cut = breaks[-1]
        # keep a closing ! or ? (it ends the phrase); drop separators
        end_mark = head[cut] if head[cut] in "!?！？" else ""
        keep = _drop_dangling(head[:cut]) + end_mark
    if not keep:
        space = head.rfind(" ")
        keep = _drop_dangling(head[:space]) if space >= limit // 3 else ""
    if not keep:  # one long word, or a script without spaces
        keep = title[:limit].rstrip(_TRAILING)
    return keep.strip()


def _drop_dangling(text: str) -> str:
    """Text without trailing punctuation, an unclosed bracket's tail, or dangling words (at least one word stays)."""
    words = text.rstrip(_TRAILING).split()
    # an opening bracket or quote that the cut left unclosed: drop from it on
    for i in range(len(words) - 1, 0, -1):
        if words[i][:1] in _CLOSER and _CLOSER[words[i][0]] not in " ".join(words[i:]):
            words = words[:i]
            break
    while len(words) > 1 and _norm_word(words[-1]) in DANGLING_ENDINGS:
        words = words[:-1]
    return " ".join(words).rstrip(_TRAILING)


def _norm_word(word: str) -> str:
    return word.strip(_TRAILING + ")]}»!?").lower()


def bound_text(text: str, max_chars: int) -> str:
    """`text` within max_chars, cut at its last sentence end when that keeps 60% of it, else where a phrase ends
    (shorten_title: a phrase break, else a word, never on a dangling word such as "of" or "the")."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    kept = longest_sentences(text, lambda candidate: len(candidate) <= max_chars)
    if len(kept) >= 0.6 * max_chars:
        return kept
    return shorten_title(text, max_chars)


def trim_cut(text: str) -> str:
    """A value cut off mid-way back to its last clause boundary, when that keeps most of it ("..., with a" -> "...")."""
    text = text.rstrip()
    boundary = max(text.rfind(p) for p in (". ", ", ", "; ", "! ", "? ", " - "))
    return text[:boundary] if boundary >= 0.6 * len(text) else text


def clean_text(text: str) -> str:
    """Plain one-paragraph text: no markdown emphasis, no wrapping quotes, single spaces."""
    text = str(text).replace("**", "").replace("__", "")
    text = re.sub(r"\s+", " ", text).strip()
    pairs = {'"': '"', "'": "'", "“": "”", "‘": "’"}
    if len(text) >= 2 and pairs.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text.strip(" ,")
