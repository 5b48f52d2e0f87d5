"""Reading a plan out of what an LLM really returns.

The backends ask for JSON that matches PLAN_SCHEMA (popcorn/llm/plan_schema.py; constrained where the backend can,
JSON mode where the API can), but answers still arrive fenced in ```json, wrapped in prose, with single or smart
quotes, trailing commas, unescaped inner quotes, cut off mid-string, nested under {"plan": ...}, with keys like
"Title" or "cover prompt", or as plain "Title: ... / Cover prompt: ... / Video prompt: ..." text. parse_plan() reads
all of these, in this order:

1. find JSON candidates and read each (popcorn/llm/lenient_json.py: json.loads, else a lenient reader that repairs
   the shapes above and closes whatever was left open at the end);
2. find the object that holds the plan (it may be nested) and map key aliases onto title/cover_prompt/video_prompt;
3. if no JSON held a plan, read "Label: value" text;
4. clean the values, cut the title to 50 characters where a phrase ends (popcorn/llm/trim.py); keep the reasoning
   apart.
"""

from __future__ import annotations

import re
from typing import Any

from popcorn.llm.lenient_json import Cut, json_spans, read_json_at, unwrap_json_string
from popcorn.llm.plan_schema import FIELDS, REASONING_LABELS
from popcorn.llm.trim import clean_text, shorten_title, trim_cut
from popcorn.types import StageError

# names importable from here as before this module was split: popcorn/pipeline.py, popcorn/studio/actions.py and
# bench/plans.py import them from popcorn.llm.parse
from popcorn.llm.plan_schema import PLAN_SCHEMA, TITLE_LIMIT, max_chars, plan_schema  # noqa: F401
from popcorn.llm.trim import longest_sentences  # noqa: F401

# normalised key (lower case, letters and digits only) -> field
_ALIASES = {
    "title": "title",
    "videotitle": "title",
    "suggestedtitle": "title",
    "headline": "title",
    "caption": "title",
    "coverprompt": "cover_prompt",
    "cover": "cover_prompt",
    "coverimage": "cover_prompt",
    "coverimageprompt": "cover_prompt",
    "coverdescription": "cover_prompt",
    "covertext": "cover_prompt",
    "thumbnail": "cover_prompt",
    "thumbnailprompt": "cover_prompt",
    "imageprompt": "cover_prompt",
    "videoprompt": "video_prompt",
    "video": "video_prompt",
    "videodescription": "video_prompt",
    "videogenerationprompt": "video_prompt",
    "videoscript": "video_prompt",
    "clipprompt": "video_prompt",
    "reasoning": "reasoning",
    "populartraits": "popular_traits",
    "unpopularflaws": "unpopular_flaws",
    "angle": "angle",
    "reason": "reasoning",
    "rationale": "reasoning",
    "analysis": "reasoning",
    "thought": "reasoning",
    "thoughts": "reasoning",
    "thinking": "reasoning",
    "explanation": "reasoning",
}

_HINT = (
    "the answer must be one JSON object with the keys title, cover_prompt and video_prompt; "
    "try again, pick a backend with constrained JSON output (local), or raise max_tokens if the answer was cut off"
)


def parse_plan(text: str) -> dict:
    """The plan in an LLM's answer: {"title", "cover_prompt", "video_prompt", "reasoning"}, all plain strings.

    Raises StageError("llm", ..., raw=text) when no title, cover prompt and video prompt can be read.
    """
    found = read_plan(text)
    found["title"] = shorten_title(found["title"])
    return found


def read_plan(text: str) -> dict:
    """parse_plan's fields with the title as written (not yet cut to TITLE_LIMIT). The reasoning is the answer's
    "reasoning", else its structured fields ("Popular: ... Unpopular: ... Angle: ..."), else whatever the answer
    wrote around the plan."""
    raw = text if isinstance(text, str) else str(text or "")
    body, think = _split_think(unwrap_json_string(raw))

    found: dict[str, str] = {}
    outside = ""
    for start, stop in json_spans(body):
        value, end = read_json_at(body, start, stop)
        fields = _plan_fields(value) if value is not None else {}
        if _score(fields) > _score(found):
            found = fields
            outside = (body[:start] + " " + body[end:]).strip()
        if _score(found) == 3:
            break
    if _score(found) < 3:
        labelled = _labelled_fields(body)
        if _score(labelled) > _score(found):
            found, outside = labelled, ""

    missing = [f for f in FIELDS if not found.get(f)]
    if missing:
        raise StageError(
            "llm",
            "could not read a plan from the LLM's answer (missing: " + ", ".join(missing) + ")",
            _HINT,
            raw=raw,
        )
    structured = "\n".join(f"{label}: {found[key]}" for key, label in REASONING_LABELS.items() if found.get(key))
    reasoning = found.get("reasoning") or structured or think or clean_text(_strip_fences(outside))
    return {
        "title": found["title"],
        "cover_prompt": found["cover_prompt"],
        "video_prompt": found["video_prompt"],
        "reasoning": reasoning,
    }


_THINK = re.compile(r"<(think|thinking|reasoning)>(.*?)(?:</\1>|\Z)", re.S | re.I)


def _split_think(text: str) -> tuple[str, str]:
    """Remove <think>...</think> blocks (R1-style reasoning written inline); return (rest, reasoning)."""
    thoughts = [m.group(2).strip() for m in _THINK.finditer(text)]
    return _THINK.sub(" ", text), "\n".join(t for t in thoughts if t)


# --- finding the plan inside what was read ------------------------------------------------------------------------


def _norm_key(key: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Cut):
        return clean_text(trim_cut(value))
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, (list, tuple)):
        return clean_text(" ".join(_as_text(v) for v in value))
    if isinstance(value, dict):  # e.g. {"scene": "...", "camera": "..."}: keep the words
        return clean_text(" ".join(_as_text(v) for v in value.values()))
    return clean_text(str(value))


_PLACEHOLDER = re.compile(r"^(?:string|str|text|none|null|n/?a|todo|tbd|\.\.\.|…|<[^<>]*>|\[[^\[\]]*\])$", re.I)


_URL = re.compile(r"\b(?:https?|ftp)://\S+|\bwww\.\S+", re.I)


def _usable(field: str, text: str) -> bool:
    """Not an echoed schema ("string", "<title>"); a prompt must describe something: not a URL, not just "3s"."""
    if not text or _PLACEHOLDER.match(text):
        return False
    if field in ("cover_prompt", "video_prompt"):
        return len(re.findall(r"\w", _URL.sub(" ", text))) >= 3
    return True


def _fields_of(obj: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in obj.items():
        field = _ALIASES.get(_norm_key(key))
        if field and field not in out:
            text = _as_text(value)
            if _usable(field, text):
                out[field] = text
    return out


def _score(fields: dict) -> int:
    return sum(1 for f in FIELDS if fields.get(f))


def _plan_fields(value: Any, depth: int = 0) -> dict[str, str]:
    """The best plan found in a value: this object's keys, or a nested object's ({"plan": {...}}, [plan, ...])."""
    if depth > 6:
        return {}
    best: dict[str, str] = {}
    if isinstance(value, dict):
        best = _fields_of(value)
        if _score(best) == 3:
            return best
        for child in value.values():
            if isinstance(child, (dict, list)):
                nested = _plan_fields(child, depth + 1)
                if _score(nested) > _score(best):
                    # keep reasoning written next to the nested plan
                    if "reasoning" not in nested and best.get("reasoning"):
                        nested["reasoning"] = best["reasoning"]
                    best = nested
    elif isinstance(value, list):
        for child in value:
            nested = _plan_fields(child, depth + 1)
            if _score(nested) > _score(best):
                best = nested
    return best


# --- "Title: ... / Cover prompt: ..." text -----------------------------------------------------------------------

_LABEL = re.compile(
    r"^[ \t>*_#\-•\d.)]*"  # list markers, headings, bold
    r"(?P<label>(?:video\s+)?title|headline|cover(?:\s+image)?(?:\s+prompt)?|thumbnail(?:\s+prompt)?|"
    r"video(?:\s+generation)?\s+prompt|video\s+description|reasoning|rationale)"
    r"(?:[ \t*_]*(?:[:：=]|[-–—](?=\s))[ \t*_]*|[ \t*_#]*$)(?P<rest>.*)$",
    re.I | re.M,
)


def _labelled_fields(text: str) -> dict[str, str]:
    text = _strip_fences(text)
    matches = [m for m in _LABEL.finditer(text) if _ALIASES.get(_norm_key(m.group("label")))]
    out: dict[str, str] = {}
    for k, m in enumerate(matches):
        end = matches[k + 1].start() if k + 1 < len(matches) else len(text)
        value = m.group("rest") + text[m.end() : end]
        field = _ALIASES[_norm_key(m.group("label"))]
        value = clean_text(value)
        if field not in out and _usable(field, value):
            out[field] = value
    return out


def _strip_fences(text: str) -> str:
    return re.sub(r"```[A-Za-z0-9_-]*", " ", text)
