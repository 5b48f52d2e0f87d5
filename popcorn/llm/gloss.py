"""An English reading of an idea written in another language, for routing and retrieval only.

The router and the references read a query through MiniLM, an English model, and the MicroLens titles are English:
an idea typed in Chinese, Japanese, Korean, Russian, Arabic, Thai or Hindi was routed right 0.26 of the time on a
blind set of such ideas (nearly all to Anime, bench/RESULTS.md), and one typed in Tagalog, Indonesian or Spanish
fares little better. So before PE retrieves, an idea the encoder cannot read (`needs_gloss`: mostly in a non-Latin
script, or in Latin letters with fewer than KNOWN_SHARE of its words in the encoder's vocabulary) gets a one-line
English gloss from the plan's own LLM (temperature 0, a bounded JSON field), and routing and references read the
gloss where `reads_gloss` says it is a translation (the names found in the idea are still looked up in both). An
English idea full of rare words ("omakase", "mukbang") comes back about as typed and is routed as typed. The plan
itself is written from the idea as typed, in its language. A gloss read is kept in the run (Retrieval.gloss) and said
in its notes; a gloss that fails leaves the idea as it was (a note says so).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection

from popcorn.llm.base import LLM
from popcorn.llm.prompts import clean_query, template

GLOSS_CHARS = 160
NON_LATIN_SHARE = 0.3  # an idea whose letters are at least this share outside the Latin scripts reads its gloss
# an idea in Latin letters reads its gloss when the two share fewer than this share of their words: chosen between 0.5
# and 0.3 on six files of the idea bank, each routed with the other files' bank and the local LLM's glosses
# (bench/RESULTS.md; an English idea is echoed with a word or two changed, a Spanish or Tagalog one shares names and
# numbers at most)
SHARED_WORDS = 0.3
# an idea in Latin letters asks for a gloss when fewer than this share of its words (2+ letters, accents dropped) are
# whole words of the encoder's vocabulary: 15% of the labelled writers' ideas, nearly all not in English
KNOWN_SHARE = 0.7
_WORD = re.compile(r"[^\W_]+")
_LETTERS = re.compile(r"[^\W\d_]{2,}")


def needs_gloss(query: str, known_words: Collection[str] = ()) -> bool:
    """Whether PE asks for an English reading of the idea: at least NON_LATIN_SHARE of its letters are outside the
    Latin scripts (Basic Latin to Latin Extended-B, and Latin Extended Additional), or, given the encoder's whole-word
    vocabulary (`known_words`; none given: Latin letters never ask), fewer than KNOWN_SHARE of its words are in it."""
    letters = [ch for ch in query if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ord(ch) <= 0x024F or 0x1E00 <= ord(ch) <= 0x1EFF)
    if (len(letters) - latin) / len(letters) >= NON_LATIN_SHARE:
        return True
    if not known_words:
        return False
    plain = "".join(ch for ch in unicodedata.normalize("NFD", query.casefold()) if unicodedata.category(ch) != "Mn")
    words = _LETTERS.findall(plain)
    return bool(words) and sum(w in known_words for w in words) < KNOWN_SHARE * len(words)


def non_latin(query: str) -> bool:
    """An idea mostly in another script (needs_gloss without a vocabulary): its gloss is always read."""
    return needs_gloss(query)


def reads_gloss(query: str, english: str) -> bool:
    """Whether routing reads the LLM's English reading `english` instead of the idea as typed: always for an idea
    mostly in another script (non_latin), and for one in Latin letters when the two share fewer than SHARED_WORDS
    of their words (Jaccard, case-folded): the reading is then a translation, not the idea echoed."""
    if not english:
        return False
    if non_latin(query):
        return True
    words, read = set(_WORD.findall(query.casefold())), set(_WORD.findall(english.casefold()))
    return len(words & read) < SHARED_WORDS * max(len(words | read), 1)


def gloss_schema() -> dict:
    return {"type": "object", "properties": {"english": {"type": "string", "minLength": 3, "maxLength": GLOSS_CHARS}},
            "required": ["english"], "additionalProperties": False}


def english_gloss(backend: LLM, query: str) -> str:
    """The backend's one-line English reading of `query` (see the module's docstring); raises what the backend
    raises, or ValueError when the answer cannot be read."""
    messages = [{"role": "system", "content": template("gloss_system").substitute().strip()},
                {"role": "user", "content": template("gloss").substitute(query=clean_query(query)).strip()}]
    # the answer is one short field (the local decoder caps it at GLOSS_CHARS); the room is for a reasoning model
    # (DeepSeek-R1), whose max_tokens counts its reasoning first
    answer = backend.complete(messages, json_schema=gloss_schema(), max_tokens=1024, temperature=0.0, seed=0)
    text = answer.text.strip()
    try:
        english = json.loads(text)["english"]
    except (ValueError, KeyError, TypeError):
        english = text if text and not text.startswith("{") else ""
    english = " ".join(str(english).split())[:GLOSS_CHARS]
    if not english:
        raise ValueError("the gloss answer could not be read")
    return english
