"""The plain records that flow between the stages of F(x) = h(g(f(x))).

retrieve -> Retrieval, plan (f) -> Plan, render (g) -> Clip, compose -> Clip (titled), score (h) -> Score.
Every record is a dataclass with `to_dict()` so it can go to JSON (run.json, the CLI, the store) as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class StageError(RuntimeError):
    """A failure of one named stage, with a hint for the user. Never carries secrets."""

    def __init__(self, stage: str, message: str, hint: str = "", raw: str | None = None):
        self.stage = stage
        self.message = message
        self.hint = hint
        self.raw = raw  # e.g. the LLM's unparseable output, kept for display
        text = f"[{stage}] {message}"
        if hint:
            text += f" -- {hint}"
        super().__init__(text)


@dataclass
class Reference:
    """A MicroLens video shown to the LLM as an example (PE mode)."""

    video_id: int
    title: str
    category: str
    comments: int
    label: str  # "popular" | "unpopular"
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CategoryScore:
    category: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Retrieval:
    """What Prompt Enhancement retrieved for one query."""

    query: str
    matched_categories: list[str]
    category_scores: list[CategoryScore]  # the top candidates and their scores: why a category was chosen
    references: list[Reference]
    router: str = "ours"
    index: str = "full"  # or "quick: routed on N of M titles" (popcorn.retrieval.index.QuickRetriever)
    margin: float | None = None  # (best - next) / best category score: small means the route is a guess
    deciding_signal: str = ""  # the router's signal that put the best category ahead (popcorn.retrieval.routing)

    @property
    def popular(self) -> list[Reference]:
        return [r for r in self.references if r.label == "popular"]

    @property
    def unpopular(self) -> list[Reference]:
        return [r for r in self.references if r.label == "unpopular"]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Retrieval":
        return cls(query=str(d.get("query", "")), matched_categories=list(d.get("matched_categories") or []),
                   category_scores=[CategoryScore(**c) for c in d.get("category_scores") or []],
                   references=[Reference(**r) for r in d.get("references") or []], router=d.get("router", "ours"),
                   index=str(d.get("index", "full")), margin=d.get("margin"),
                   deciding_signal=str(d.get("deciding_signal", "")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "router": self.router,
            "index": self.index,
            "matched_categories": list(self.matched_categories),
            "margin": self.margin,
            "deciding_signal": self.deciding_signal,
            "category_scores": [c.to_dict() for c in self.category_scores],
            "references": [r.to_dict() for r in self.references],
        }


@dataclass
class Plan:
    """f(x): what the LLM wrote for one query."""

    title: str
    cover_prompt: str
    video_prompt: str
    reasoning: str = ""
    mode: str = "basic"  # "basic" | "pe"
    llm: str = ""
    query: str = ""
    matched_categories: list[str] = field(default_factory=list)
    category_scores: list[CategoryScore] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "cover_prompt": self.cover_prompt,
            "video_prompt": self.video_prompt,
            "reasoning": self.reasoning,
            "mode": self.mode,
            "llm": self.llm,
            "query": self.query,
            "matched_categories": list(self.matched_categories),
            "category_scores": [c.to_dict() for c in self.category_scores],
            "references": [r.to_dict() for r in self.references],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Plan":
        return cls(
            title=str(d.get("title", "")),
            cover_prompt=str(d.get("cover_prompt", "")),
            video_prompt=str(d.get("video_prompt", "")),
            reasoning=str(d.get("reasoning", "") or ""),
            mode=str(d.get("mode", "basic")),
            llm=str(d.get("llm", "")),
            query=str(d.get("query", "")),
            matched_categories=list(d.get("matched_categories", []) or []),
            category_scores=[CategoryScore(**c) for c in d.get("category_scores", []) or []],
            references=[Reference(**r) for r in d.get("references", []) or []],
        )
