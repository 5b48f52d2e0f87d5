"""An English reading of an idea written in another script, for routing and retrieval only.

The router and the references read a query through MiniLM, an English model, and the MicroLens titles are English:
an idea typed in Chinese, Japanese, Korean, Russian, Arabic, Thai or Hindi was routed right 0.26 of the time on a
blind set of such ideas (nearly all to Anime, bench/RESULTS.md). So before PE retrieves, an idea that is mostly in
a non-Latin script gets a one-line English gloss from the plan's own LLM (temperature 0, a bounded JSON field), and
routing and references read the gloss (the names found in the idea are still looked up in both). The plan itself is
written from the idea as typed, in its language. The gloss is kept in the run (Retrieval.gloss) and said in its
notes; a gloss that fails leaves the idea as it was (a note says so).
"""

from __future__ import annotations

import json

from popcorn.llm.base import LLM
from popcorn.llm.prompts import clean_query, template

GLOSS_CHARS = 160
NON_LATIN_SHARE = 0.3  # an idea whose letters are at least this share outside the Latin scripts is glossed


def needs_gloss(query: str) -> bool:
    """Whether at least NON_LATIN_SHARE of the idea's letters are outside the Latin scripts (Basic Latin to Latin
    Extended-B, and Latin Extended Additional: Vietnamese, accented European languages stay as they are)."""
    letters = [ch for ch in query if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if ord(ch) <= 0x024F or 0x1E00 <= ord(ch) <= 0x1EFF)
    return (len(letters) - latin) / len(letters) >= NON_LATIN_SHARE


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
