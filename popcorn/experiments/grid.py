"""The runs of a batch: every (prompt, mode, llm, video, seed, K), each with a deterministic key.

A run's id is a hash of everything that changes its result (`RunSpec.setting()`): the query and the prompt file's
category (the score's category), mode, LLM, video model, seed, the router (PE's references; the score's category
when the prompt file gives none), K (PE only: Basic retrieves nothing, so a K sweep shares one Basic run per prompt),
the clip length (POPCORN_CLIP_SECONDS when the grid is built) and the judge split's seed. So the same grid always
names the same runs: a re-run finds them in the store, two processes (accelerate shards) agree on every name without
talking to each other, and two settings in one folder are two sets of runs, never one overwriting the other. The
video model is part of it even for the plan: the pipeline fits the plan's video prompt to the video model's budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import product

from popcorn import pipeline
from popcorn.experiments.prompts_file import Prompt
from popcorn.retrieval import split
from popcorn.types import REFERENCE_MODES, StageError


@dataclass(frozen=True)
class RunSpec:
    prompt_index: int
    prompt: Prompt
    mode: str
    llm: str
    video: str
    seed: int
    k: int = 10
    router: str = "ours"
    clip_seconds: float = 3.0

    def setting(self) -> dict:
        """Everything that changes the run's output; its digest is the key. K only matters where references are shown."""
        return {"query": self.prompt.query, "category": self.prompt.category, "mode": self.mode, "llm": self.llm,
                "video": self.video, "seed": self.seed, "k": self.k if self.mode in REFERENCE_MODES else 0,
                "router": self.router, "clip_seconds": self.clip_seconds, "split_seed": split.SEED}

    @property
    def key(self) -> str:
        """The run's id in the store."""
        return "b" + _digest(self.setting())

    def settings(self) -> pipeline.Settings:
        return pipeline.Settings(query=self.prompt.query, mode=self.mode, llm=self.llm, video=self.video,
                                 k=self.k, router=self.router, seed=self.seed, category=self.prompt.category)

    def meta(self) -> dict:
        """What the report needs beside the pipeline's own settings (kept in the run's settings under 'batch')."""
        return {"key": self.key, "prompt_index": self.prompt_index, "type": self.prompt.type,
                "category": self.prompt.category, "k": self.k if self.mode in REFERENCE_MODES else None,
                "router": self.router, "clip_seconds": self.clip_seconds, "split_seed": split.SEED}


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def split_names(text: str | list[str], what: str) -> list[str]:
    """'a,b' -> ['a', 'b'] (order kept, repeats dropped); an empty list is an input error."""
    items = text if isinstance(text, list) else str(text).split(",")
    names = list(dict.fromkeys(n.strip() for n in items if n and n.strip()))
    if not names:
        raise StageError("input", f"no {what} given", f"pass --{what} as a comma-separated list")
    return names


def build_grid(prompts: list[Prompt], modes: list[str], llms: list[str], videos: list[str], seeds: list[int],
               k: int | list[int] = 10, router: str = "ours", clip_seconds: float | None = None) -> list[RunSpec]:
    """Every run of the batch in a fixed order: prompt, mode, llm, seed, video, K. `k`: one K or a sweep
    ([10, 50, 100]); Basic runs once per (prompt, llm, seed, video) whatever the sweep."""
    from popcorn.video.base import default_seconds

    ks = list(dict.fromkeys(int(x) for x in ([k] if isinstance(k, int) else k)))
    if not ks or any(x < 1 for x in ks):
        raise StageError("input", f"K must be positive integers, got {k!r}", "e.g. --k 10 or --k 10,50,100")
    seconds = float(clip_seconds) if clip_seconds is not None else default_seconds()
    for mode in modes:
        if mode not in pipeline.MODES:
            raise StageError("input", f"unknown mode {mode!r}", f"use {', '.join(pipeline.MODES)}")
    if not prompts:
        raise StageError("input", "the batch has no prompts", "give a prompt file with one query per line")
    specs = [RunSpec(i, p, mode, llm, video, seed, k_value, router, seconds)
             for (i, p), mode, llm, seed, video in product(enumerate(prompts), modes, llms, seeds, videos)
             for k_value in (ks if mode in REFERENCE_MODES else ks[:1])]
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys), "run keys must be unique"
    return specs

