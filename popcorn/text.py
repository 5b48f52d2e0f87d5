"""Words that more than one layer writes or counts. Lengths of text that more than one stage reads: the plan step (f) bounds a video prompt in words, the video
budget (g) checks it against the text encoder. Kept here so the LLM's decoder and the video budget count the same way."""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
CJK_CHARS_PER_WORD = 1.5  # a Chinese word is 1-2 characters; an English word's worth of meaning takes ~1.5


def count_words(text: str) -> int:
    """Words in `text`, for a length in words that holds across languages: space-separated words of the text without
    its CJK characters, plus the CJK characters / CJK_CHARS_PER_WORD (Chinese and Japanese put no spaces between
    words, so a Chinese video prompt of 60 characters would otherwise count as one word)."""
    cjk = len(CJK.findall(text))
    words = [w for w in CJK.sub(" ", text).split() if any(ch.isalnum() for ch in w)]  # not lone punctuation
    return len(words) + int(round(cjk / CJK_CHARS_PER_WORD))


def plural(n: float, word: str) -> str:
    """'1 pair', '2 pairs', '0.5 votes': a count and its noun, for every page and report that says how many."""
    return f"{n:g} {word}" + ("" if n == 1 else "s")
