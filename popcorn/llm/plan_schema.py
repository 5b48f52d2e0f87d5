"""The plan's JSON schema: which fields a plan has, in which order, and how long each may be.

A plan is the reasoning of its mode (the paper's PE steps as short fields, written first so a constrained model
thinks before it writes), then title, cover_prompt and video_prompt. Every string is bounded; the title's bound is
TITLE_LIMIT, the paper's 50 characters.
"""

from __future__ import annotations

TITLE_LIMIT = 50
FIELDS = ("title", "cover_prompt", "video_prompt")
# the short, structured reasoning of each mode (the paper's PE steps as fields), written before the plan fields
REASONING_FIELDS = {"pe": ("popular_traits", "unpopular_flaws", "angle"), "basic": ("angle",)}
REASONING_LABELS = {"popular_traits": "Popular", "unpopular_flaws": "Unpopular", "angle": "Angle"}

# Every string is bounded (minLength: nothing empty; maxLength: nothing runs on), and a constrained decoder enforces
# both (the local backend writes each value under a token mask and draws a title that runs past its maxLength again;
# a server's JSON-schema grammar stops it at maxLength), so an answer of this schema always ends within a known number
# of characters. The title's bound is TITLE_LIMIT itself: the title is to be written within it, not cut to it. The
# video prompt's cap comes from the video model's text encoder (popcorn/video/budget.py).
BOUNDS = {
    "popular_traits": (12, 70),  # ~10 words each: the prompt asks for a short note
    "unpopular_flaws": (12, 70),
    "angle": (12, 70),
    "title": (4, TITLE_LIMIT),
    "cover_prompt": (20, 160),
    "video_prompt": (80, 900),
}


# A keyword of this project, not of JSON Schema: the fewest words a string value may hold (popcorn.text.count_words).
# The local backend's decoder enforces it (popcorn/llm/token_mask.py); servers get the schema without it
# (server_schema) and the plan step checks the answer.
MIN_WORDS = "minWords"


def plan_schema(mode: str = "pe", video_chars: int | None = None, video_words: int | None = None) -> dict:
    """The JSON schema of a plan in `mode`: the reasoning fields first (so a constrained model thinks before it
    writes), then title, cover_prompt and video_prompt; every string bounded. `video_chars` caps the video prompt,
    `video_words` is its fewest words (MIN_WORDS)."""
    keys = REASONING_FIELDS["pe" if mode in ("pe", "plus") else "basic"] + FIELDS
    properties = {}
    for key in keys:
        low, high = BOUNDS[key]
        if key == "video_prompt" and video_chars:
            high = max(low + 20, int(video_chars))
        properties[key] = {"type": "string", "minLength": low, "maxLength": high}
        if key == "video_prompt" and video_words:
            properties[key][MIN_WORDS] = int(video_words)
    return {"type": "object", "properties": properties, "required": list(keys), "additionalProperties": False}


def server_schema(schema):
    """`schema` without this project's own keywords (MIN_WORDS), as a server's JSON-schema grammar takes it."""
    if isinstance(schema, dict):
        return {key: server_schema(value) for key, value in schema.items() if key != MIN_WORDS}
    return schema


def max_chars(schema: dict) -> int:
    """The most characters of string content an answer of `schema` can hold."""
    return sum(int(p.get("maxLength") or 0) for p in schema.get("properties", {}).values())


PLAN_SCHEMA: dict = plan_schema("pe")
