"""The runs of a batch: every (prompt, mode, llm, video, seed), each with a deterministic key.

A run's id is a hash of what decides its result, so the same grid always names the same runs: a re-run finds them
in the store, and two processes (accelerate shards) agree on every name without talking to each other. The video
model is part of it even for the plan: the pipeline fits the plan's video prompt to the video model's text budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import product

from popcorn import pipeline
from popcorn.experiments.prompts_file import Prompt
from popcorn.types import StageError


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

    @property
    def key(self) -> str:
        """The run's id in the store. Retrieval settings only matter in PE."""
        pe = self.mode == "pe"
        return "b" + _digest({"query": self.prompt.query, "mode": self.mode, "llm": self.llm, "video": self.video,
                              "seed": self.seed, "k": self.k if pe else 0, "router": self.router if pe else ""})

    def settings(self) -> pipeline.Settings:
        return pipeline.Settings(query=self.prompt.query, mode=self.mode, llm=self.llm, video=self.video,
                                 k=self.k, router=self.router, seed=self.seed)

    def meta(self) -> dict:
        """What the report needs beside the pipeline's own settings (kept in the run's settings under 'batch')."""
        return {"key": self.key, "prompt_index": self.prompt_index,
                "type": self.prompt.type, "category": self.prompt.category}


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
               k: int = 10, router: str = "ours") -> list[RunSpec]:
    """Every run of the batch in a fixed order: prompt, mode, llm, seed, video."""
    for mode in modes:
        if mode not in pipeline.MODES:
            raise StageError("input", f"unknown mode {mode!r}", f"use {', '.join(pipeline.MODES)}")
    if not prompts:
        raise StageError("input", "the batch has no prompts", "give a prompt file with one query per line")
    specs = [RunSpec(i, p, mode, llm, video, seed, k, router)
             for (i, p), mode, llm, seed, video in product(enumerate(prompts), modes, llms, seeds, videos)]
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys), "run keys must be unique"
    return specs

