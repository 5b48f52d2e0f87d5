"""The two pieces of studio work that may need a GPU, as functions of plain values (they may run in a ZeroGPU
worker process): the LLM's plans, and render + compose. Each reports progress and checks Cancel through its
zerogpu.Channel, and returns plain values: {"error": {...}} instead of raising, so a failure crosses the process
boundary intact.

`plan_in_slot` / `render_in_slot` are the same functions wrapped in zerogpu.gpu (spaces.GPU) with a duration computed
from the model and the settings; the studio calls them only for backends that need a GPU (zerogpu.needs_gpu).
"""

from __future__ import annotations

from pathlib import Path

from popcorn import pipeline
from popcorn.serve import zerogpu
from popcorn.studio.errors import error_dict
from popcorn.studio.progress import StageProgress
from popcorn.types import Plan, Retrieval, StageError
from popcorn.serve.zerogpu import Channel


def _report(channel: Channel):
    """progress(stage, fraction, message) that stops at Cancel and writes each report to the channel."""
    guard = StageProgress(None, (), channel)

    def progress(stage: str, fraction: float, message: str) -> None:
        guard.check(stage)
        channel.report(stage, fraction, message)

    return progress


def plan_candidates(settings: dict, retrieval: dict | None, channel: Channel) -> dict:
    """f(x) x N: {"plans": [plan dict, ...]} (candidate i uses seed + i), or {"error": ...}."""
    progress = _report(channel)
    try:
        s = pipeline.Settings(**settings)
        found = Retrieval.from_dict(retrieval) if retrieval else None
        plans = []
        for i in range(s.candidates):
            progress("plan", i / s.candidates, f"plan {i + 1} of {s.candidates}")
            plans.append(pipeline.plan(
                s.query, s.mode, s.llm, found, seed=s.seed + i, max_tokens=s.max_tokens, temperature=s.temperature,
                progress=lambda f, msg, i=i: progress("plan", (i + f) / s.candidates, msg)).to_dict())
        return {"plans": plans}
    except StageError as exc:
        return {"error": error_dict(exc)}


def render_clip(settings: dict, plan: dict, out_dir: str, channel: Channel) -> dict:
    """g + compose into out_dir: {"video", "timings", "notes"} (run.py's fields), or {"error": ...}."""
    run = pipeline.Run(pipeline.Settings(**settings), plan=Plan.from_dict(plan))
    try:
        pipeline.render_run(run, Path(out_dir), _report(channel), with_score=False)
    except StageError as exc:
        return {"error": error_dict(exc)}
    return {"video": run.video, "timings": run.timings, "notes": run.notes}


def _plan_seconds(settings: dict, retrieval: dict | None, channel: Channel) -> int:
    return zerogpu.plan_seconds(settings["llm"], settings.get("candidates", 1), settings.get("max_tokens", 0),
                                settings.get("attempts", 3))


def _render_seconds(settings: dict, plan: dict, out_dir: str, channel: Channel) -> int:
    return zerogpu.render_seconds(settings["video"], None, settings.get("memory_mode", "auto"))


plan_in_slot = zerogpu.gpu(duration=_plan_seconds)(plan_candidates)
render_in_slot = zerogpu.gpu(duration=_render_seconds)(render_clip)
