"""The stage names and the plain records that flow between the stages of F(x) = h(g(f(x))).

retrieve -> Retrieval, plan (f) -> Plan, render (g) -> Clip, compose -> Clip (titled), score (h) -> Score;
Settings in, Run out (run.json). Every record is a dataclass with `to_dict()` so it can go to JSON (run.json, the CLI,
the store) as it is, and back with `from_dict()`.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The one set of stage names: progress, errors (StageError.stage), timings (Run.timings) and the batch's failure
# records all use these. "input" is the check of what was asked, before any work; the other five are the steps of
# one run, in order (STEPS: the ones that report progress and are timed).
STAGES = ("input", "retrieve", "plan", "render", "compose", "score")
INPUT, RETRIEVE, PLAN, RENDER, COMPOSE, SCORE = STAGES
STEPS = STAGES[1:]
# names older code gave a stage, read as the stage they belong to
FORMER_NAMES = {"llm": PLAN, "corpus": RETRIEVE, "embed": RETRIEVE, "report": INPUT}
# the one failure that belongs to no run: the user study's (popcorn.study.StudyError)
OUTSIDE_RUNS = ("study",)

MODES = ("basic", "pe", "plus")  # plus: PE, then title drafts ranked by h (popcorn/llm/plus.py)
REFERENCE_MODES = ("pe", "plus")  # the modes that retrieve MicroLens references and show them to the LLM
UNSURE_MARGIN = 0.2  # a best category less than 20% ahead of the next is a guess: run notes and the studio say so


class StageError(RuntimeError):
    """A failure of one named stage (one of STAGES; a former name is read as the stage it belongs to), with a hint
    for the user. Never carries secrets. tests/test_run_record.py checks that the code names no other stage (an error
    path itself never refuses a name: it must report the failure it was raised for)."""

    def __init__(self, stage: str, message: str, hint: str = "", raw: str | None = None):
        stage = FORMER_NAMES.get(stage, stage)
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
    index: str = "full"  # or "quick: searched the routed categories' N of M titles" (popcorn.retrieval.index.QuickRetriever)
    margin: float | None = None  # (best - next) / best category score: small means the route is a guess
    deciding_signal: str = ""  # the router's signal that put the best category ahead (popcorn.retrieval.routing)
    gloss: str = ""  # the English reading of an idea in another language that routing and references read (llm/gloss)

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
                   deciding_signal=str(d.get("deciding_signal", "")), gloss=str(d.get("gloss", "")))

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "router": self.router,
            "index": self.index,
            "matched_categories": list(self.matched_categories),
            "margin": self.margin,
            "deciding_signal": self.deciding_signal,
            "gloss": self.gloss,
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


@dataclass
class Settings:
    """What one run is asked to do (pipeline.check tells whether it can)."""

    query: str
    mode: str = "pe"
    llm: str = "local"
    video: str = "storyboard"  # the video model: it renders the plan, and its text encoder bounds the video prompt
    k: int = 10
    router: str = "ours"
    seed: int = 0
    memory_mode: str = "auto"  # video: see popcorn/video/base.py
    speed: str = "auto"  # video: see popcorn/video/speed.py
    # a diffusers text-to-image model (hub id or folder) for cover.png; "" = the clip's best frame
    cover_model: str = field(default_factory=lambda: os.environ.get("POPCORN_COVER_MODEL", ""))
    candidates: int = 1
    max_tokens: int = 0  # 0: from the plan schema's bounds (an answer can never need more)
    temperature: float = 0.7
    attempts: int = 3  # fresh samples of a plan before its failure is reported
    # the score's category (h's input): a prompt file's category; "" = routed from the query (pipeline.score_category)
    category: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Settings":
        """The settings of a run.json (keys this version does not know, e.g. the batch's, are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{"query": "", **{k: v for k, v in (d or {}).items() if k in known}})


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


@dataclass
class Run:
    """Everything one run produced; `to_dict()` is run.json, `from_dict()` reads it back (older run.json files too)."""

    settings: Settings
    id: str = field(default_factory=new_run_id)
    retrieval: Retrieval | None = None
    plan: Plan | None = None
    candidates: list[dict] = field(default_factory=list)  # best-of-N: plans with their predicted scores, best first
    plan_info: dict = field(default_factory=dict)  # how the plan was written: budget, attempts, tokens, seconds
    video: dict = field(default_factory=dict)  # what compose wrote (paths, size, fps, preview flag, notes)
    score: dict = field(default_factory=dict)  # h of the result
    baseline: dict = field(default_factory=dict)  # the human-matched MicroLens video(s)
    timings: dict = field(default_factory=dict)  # stage (one of STEPS) -> seconds
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "settings": dict(self.settings.__dict__),
            "plan": {**self.plan.to_dict(), **self.plan_info} if self.plan else None,
            "retrieval": self.retrieval.to_dict() if self.retrieval else None,
            "candidates": self.candidates,
            "video": self.video,
            "score": self.score,
            "baseline": self.baseline,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Run":
        """A run from its run.json (or a store row, which has the same keys and more). The plan's keys that are not
        Plan fields (budget, attempts, usage, ...) come back as plan_info."""
        plan = Plan.from_dict(d["plan"]) if d.get("plan") else None
        own = set(plan.to_dict()) if plan else set()
        return cls(
            settings=Settings.from_dict({"query": d.get("query", ""), **(d.get("settings") or {})}),
            id=str(d["id"]) if d.get("id") else new_run_id(),
            retrieval=Retrieval.from_dict(d["retrieval"]) if d.get("retrieval") else None,
            plan=plan,
            candidates=list(d.get("candidates") or []),
            plan_info={k: v for k, v in (d.get("plan") or {}).items() if k not in own},
            video=dict(d.get("video") or {}),
            score=dict(d.get("score") or {}),
            baseline=dict(d.get("baseline") or {}),
            timings=dict(d.get("timings") or {}),
            notes=list(d.get("notes") or []),
        )
