"""Reading a plan out of what an LLM really returns.

The backends ask for JSON that matches PLAN_SCHEMA (constrained where the backend can, JSON mode where the API can),
but answers still arrive fenced in ```json, wrapped in prose, with single or smart quotes, trailing commas, unescaped
inner quotes, cut off mid-string, nested under {"plan": ...}, with keys like "Title" or "cover prompt", or as plain
"Title: ... / Cover prompt: ... / Video prompt: ..." text. parse_plan() reads all of these, in this order:

1. find JSON candidates (fenced blocks, then the span from the first "{"), read each with json.loads, falling back to
   a lenient reader (_Lenient) that repairs the shapes above and closes whatever was left open at the end;
2. find the object that holds the plan (it may be nested) and map key aliases onto title/cover_prompt/video_prompt;
3. if no JSON held a plan, read "Label: value" text;
4. clean the values, cut the title to 50 characters at a word boundary; keep the reasoning apart.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from popcorn.types import StageError

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


def plan_schema(mode: str = "pe", video_chars: int | None = None) -> dict:
    """The JSON schema of a plan in `mode`: the reasoning fields first (so a constrained model thinks before it
    writes), then title, cover_prompt and video_prompt; every string bounded. `video_chars` caps the video prompt."""
    keys = REASONING_FIELDS["pe" if mode == "pe" else "basic"] + FIELDS
    properties = {}
    for key in keys:
        low, high = BOUNDS[key]
        if key == "video_prompt" and video_chars:
            high = max(low + 20, int(video_chars))
        properties[key] = {"type": "string", "minLength": low, "maxLength": high}
    return {"type": "object", "properties": properties, "required": list(keys), "additionalProperties": False}


def max_chars(schema: dict) -> int:
    """The most characters of string content an answer of `schema` can hold."""
    return sum(int(p.get("maxLength") or 0) for p in schema.get("properties", {}).values())


PLAN_SCHEMA: dict = plan_schema("pe")

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
    body, think = _split_think(_unwrap_json_string(raw))

    found: dict[str, str] = {}
    outside = ""
    for start, stop in _json_spans(body):
        value, end = _load(body, start, stop)
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
    reasoning = found.get("reasoning") or structured or think or _clean(_strip_fences(outside))
    return {
        "title": found["title"],
        "cover_prompt": found["cover_prompt"],
        "video_prompt": found["video_prompt"],
        "reasoning": reasoning,
    }


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
    title = _clean(title)
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


# --- 1. finding and reading JSON ---------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)
_THINK = re.compile(r"<(think|thinking|reasoning)>(.*?)(?:</\1>|\Z)", re.S | re.I)


def _unwrap_json_string(text: str) -> str:
    """A JSON object sent as a JSON string ("{\\"title\\": ...}"), as some APIs double-encode: decode it once."""
    stripped = text.strip()
    if stripped.startswith('"') and "{" in stripped:
        try:
            inner = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(inner, str):
            return inner
    return text


def _split_think(text: str) -> tuple[str, str]:
    """Remove <think>...</think> blocks (R1-style reasoning written inline); return (rest, reasoning)."""
    thoughts = [m.group(2).strip() for m in _THINK.finditer(text)]
    return _THINK.sub(" ", text), "\n".join(t for t in thoughts if t)


def _json_spans(text: str):
    """(start, stop) spans that may hold JSON: inside each fenced block first, then from each "{" on."""
    for m in _FENCE.finditer(text):
        if "{" in m.group(2):
            yield m.start(2), m.end(2)
    for m in list(re.finditer(r"\{", text))[:8]:
        yield m.start(), len(text)


def _load(text: str, start: int, stop: int) -> tuple[Any, int]:
    """The JSON value that starts at text[start] (strict first, then lenient) and where it ends."""
    start = text.index("{", start) if "{" in text[start:stop] else start
    try:
        return json.JSONDecoder().raw_decode(text[:stop], start)
    except (ValueError, RecursionError):
        pass
    reader = _Lenient(text[:stop], start)
    try:
        return reader.read(), reader.i
    except (ValueError, RecursionError):
        return None, start


class _Cut(str):
    """A string value the answer stopped in the middle of."""


def _trim_cut(text: str) -> str:
    """A cut-off value back to its last clause boundary, when that keeps most of it ("..., with a" -> "...")."""
    text = text.rstrip()
    boundary = max(text.rfind(p) for p in (". ", ", ", "; ", "! ", "? ", " - "))
    return text[:boundary] if boundary >= 0.6 * len(text) else text


_OPEN_DQ = '"“”„'
_OPEN_SQ = "'‘’"


class _Lenient:
    """A forgiving JSON reader: single/smart quotes, unquoted keys, unescaped inner quotes, trailing or missing
    commas, comments, Python literals, and text that stops anywhere (what is open gets closed)."""

    def __init__(self, text: str, start: int = 0):
        self.s = text
        self.i = start

    def read(self) -> Any:
        self._ws()
        if self.i >= len(self.s) or self.s[self.i] not in "{[":
            raise ValueError("no object")
        return self._value()

    # helpers
    def _peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def _ws(self) -> None:
        s = self.s
        while self.i < len(s):
            if s[self.i].isspace():
                self.i += 1
            elif s.startswith("//", self.i) or s[self.i] == "#":
                nl = s.find("\n", self.i)
                self.i = len(s) if nl < 0 else nl + 1
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                self.i = len(s) if end < 0 else end + 2
            else:
                break

    def _value(self) -> Any:
        self._ws()
        c = self._peek()
        if c == "{":
            return self._object()
        if c == "[":
            return self._array()
        if c and (c in _OPEN_DQ or c in _OPEN_SQ):
            return self._string()
        if c == "":
            return ""
        return self._bare()

    def _object(self) -> dict:
        self.i += 1
        out: dict = {}
        while True:
            self._ws()
            c = self._peek()
            if c == "":
                return out
            if c == "}":
                self.i += 1
                return out
            if c in ",;":
                self.i += 1
                continue
            if c == "]":  # a stray closer: skip it
                self.i += 1
                continue
            if c in "{[":  # a value where a key should be: read and drop it
                self._value()
                continue
            key = self._string() if (c in _OPEN_DQ or c in _OPEN_SQ) else self._bare_key()
            self._ws()
            if self._peek() in (":", "="):
                self.i += 1
                out[str(key)] = self._value()
            elif self._peek() == "":
                return out
            else:  # a key without a value: skip the token
                continue

    def _array(self) -> list:
        self.i += 1
        out: list = []
        while True:
            self._ws()
            c = self._peek()
            if c == "":
                return out
            if c == "]":
                self.i += 1
                return out
            if c == ",":
                self.i += 1
                continue
            if c == "}":
                self.i += 1
                continue
            before = self.i
            out.append(self._value())
            if self.i == before:
                self.i += 1

    def _closes_here(self, j: int) -> bool:
        """Whether a quote at j ends the string: what follows it is structure (, } ] :) or the end."""
        k = j + 1
        while k < len(self.s) and self.s[k] in " \t\r":
            k += 1
        if k >= len(self.s):
            return True
        nxt = self.s[k]
        if nxt in ",}]:":
            return True
        if nxt == "\n":  # a newline then a next key or a closer (missing comma)
            rest = self.s[k:].lstrip()
            return not rest or rest[0] in ",}]\"'“”‘’" or re.match(r"[A-Za-z_][\w ]*:", rest) is not None
        return False

    def _string(self) -> str:
        quote = self.s[self.i]
        closers = _OPEN_DQ if quote in _OPEN_DQ else _OPEN_SQ
        self.i += 1
        out = []
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c == "\\" and self.i + 1 < len(s):
                nxt = s[self.i + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", s[self.i + 2 : self.i + 6] or ""):
                    out.append(chr(int(s[self.i + 2 : self.i + 6], 16)))
                    self.i += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "", "b": "", "f": ""}.get(nxt, nxt))
                self.i += 2
                continue
            if c in closers and self._closes_here(self.i):
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1
        return _Cut("".join(out))  # cut off mid-string: keep what arrived, marked

    def _bare_key(self) -> str:
        m = re.compile(r"[^:=,{}\[\]\n]*").match(self.s, self.i)
        self.i = m.end()
        return m.group(0).strip()

    def _bare(self) -> Any:
        m = re.compile(r"[^,}\]\n]*").match(self.s, self.i)
        self.i = m.end()
        token = m.group(0).strip()
        literals = {"true": True, "false": False, "null": None, "none": None}
        if token.lower() in literals:
            return literals[token.lower()]
        try:
            return json.loads(token)
        except ValueError:
            return token


# --- 2. finding the plan inside what was read ------------------------------------------------------------------


def _norm_key(key: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, _Cut):
        return _clean(_trim_cut(value))
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, (list, tuple)):
        return _clean(" ".join(_as_text(v) for v in value))
    if isinstance(value, dict):  # e.g. {"scene": "...", "camera": "..."}: keep the words
        return _clean(" ".join(_as_text(v) for v in value.values()))
    return _clean(str(value))


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


# --- 3. "Title: ... / Cover prompt: ..." text --------------------------------------------------------------------

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
        value = _clean(value)
        if field not in out and _usable(field, value):
            out[field] = value
    return out


# --- 4. cleaning -----------------------------------------------------------------------------------------------


def _strip_fences(text: str) -> str:
    return re.sub(r"```[A-Za-z0-9_-]*", " ", text)


def _clean(text: str) -> str:
    """Plain one-paragraph text: no markdown emphasis, no wrapping quotes, single spaces."""
    text = str(text).replace("**", "").replace("__", "")
    text = re.sub(r"\s+", " ", text).strip()
    pairs = {'"': '"', "'": "'", "“": "”", "‘": "’"}
    if len(text) >= 2 and pairs.get(text[0]) == text[-1] and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text.strip(" ,")
