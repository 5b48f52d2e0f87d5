"""A lenient JSON reader for what LLMs really write.

Answers arrive fenced in ```json, wrapped in prose, with single or smart quotes, unquoted keys, trailing or missing
commas, unescaped inner quotes, comments, Python literals, double-encoded as a JSON string, or cut off mid-string.
`json_spans` finds where JSON may start; `read_json_at` reads the value there with json first, else with `Lenient`,
which repairs the shapes above and closes whatever was left open at the end (a string cut off is marked `Cut`).
"""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.S)


def unwrap_json_string(text: str) -> str:
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


def json_spans(text: str):
    """(start, stop) spans that may hold JSON: inside each fenced block first, then from each "{" on."""
    for m in _FENCE.finditer(text):
        if "{" in m.group(2):
            yield m.start(2), m.end(2)
    for m in list(re.finditer(r"\{", text))[:8]:
        yield m.start(), len(text)


def read_json_at(text: str, start: int, stop: int) -> tuple[Any, int]:
    """The JSON value that starts at text[start] (strict first, then lenient) and where it ends."""
    start = text.index("{", start) if "{" in text[start:stop] else start
    try:
        return json.JSONDecoder().raw_decode(text[:stop], start)
    except (ValueError, RecursionError):
        pass
    reader = Lenient(text[:stop], start)
    try:
        return reader.read(), reader.i
    except (ValueError, RecursionError):
        return None, start


class Cut(str):
    """A string value the answer stopped in the middle of."""


_OPEN_DQ = '"“”„'
_OPEN_SQ = "'‘’"


class Lenient:
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
        return Cut("".join(out))  # cut off mid-string: keep what arrived, marked

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
