"""The studio's two calls of the pipeline that may need a GPU, as functions of plain values (they may run in a ZeroGPU
worker process): `write_plans` (the plan step of pipeline.make_plans, which the studio has run here) and
`render_video` (pipeline.render_run without its score step). Each gets a run record (run.to_dict(): its id, settings
and what earlier steps filled in: the references for a plan, the plan for a render), reports progress and checks
Cancel through its zerogpu.Channel, and returns run.to_dict() as the pipeline left it; a failure comes back as that
record with an "error" key added instead of raising, so it crosses the process boundary intact.

`write_plans_in_slot` / `render_video_in_slot` are the same functions wrapped in zerogpu.gpu (spaces.GPU) with a
duration computed from the model and the settings; the studio calls them only for backends that need a GPU
(zerogpu.needs_gpu).
"""

from __future__ import annotations

from pathlib import Path

from popcorn import pipeline
from popcorn.serve import zerogpu
from popcorn.serve.zerogpu import Channel
from popcorn.studio.errors import error_dict
from popcorn.studio.progress import StageProgress
from popcorn.types import Run, Settings, StageError


def _report(channel: Channel):
    """progress(stage, fraction, message) that stops at Cancel and writes each report to the channel."""
    guard = StageProgress(None, (), channel)

    def progress(stage: str, fraction: float, message: str) -> None:
        guard.check(stage)
        channel.report(stage, fraction, message)

    return progress


def write_plans(record: dict, channel: Channel) -> dict:
    """pipeline.write_plans: the run's record with its plan(s) (or its "error")."""
    run = Run.from_dict(record)
    try:
        pipeline.write_plans(run, _report(channel))
    except StageError as exc:
        return {**run.to_dict(), "error": error_dict(exc)}
    return run.to_dict()


def render_video(record: dict, out_dir: str, channel: Channel) -> dict:
    """render -> compose into out_dir (the score is the caller's, outside the slot): the run's record with its video
    (or its "error")."""
    run = Run.from_dict(record)
    try:
        pipeline.render_run(run, Path(out_dir), _report(channel), with_score=False)
    except StageError as exc:
        return {**run.to_dict(), "error": error_dict(exc)}
    return run.to_dict()


def _plan_seconds(record: dict, channel: Channel) -> int:
    settings = record["settings"]
    return zerogpu.plan_seconds(settings["llm"], pipeline.llm_calls(Settings.from_dict(settings)),
                                settings.get("max_tokens", 0), settings.get("attempts", 3))


def _render_seconds(record: dict, out_dir: str, channel: Channel) -> int:
    settings = record["settings"]
    return zerogpu.render_seconds(settings["video"], None, settings.get("memory_mode", "auto"))


write_plans_in_slot = zerogpu.gpu(duration=_plan_seconds)(write_plans)
render_video_in_slot = zerogpu.gpu(duration=_render_seconds)(render_video)
