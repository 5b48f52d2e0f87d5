"""What the studio's buttons do, as plain functions of plain values (the page modules in popcorn/ui/ call these).

    plan_action(query, mode, k, llm, seed, candidates)            retrieve -> plan (x N, ranked) -> PlanOutput
    render_action(run_id, title, cover, video_prompt, video, seed) render -> compose -> score -> RenderOutput
    score_action(title, description, category)                    h alone -> ScoreOutput
    load_run(run_id)                                              a stored run, for the panels

Each takes `visitor` (popcorn.serve.access.visitor_id): a run belongs to the visitor who made it, and only they (or the
owner) can open, re-render or pick from it. Inputs are checked against the owner's policy (enabled backends, paid
rate limit, size limits) before any work. The run itself is the pipeline's: pipeline.make_plans and
pipeline.render_run (+ score_run), the same calls as `popcorn run`, so a studio run.json is the same record. The plan
step and the render run in a ZeroGPU slot when their backend needs a GPU (popcorn.studio.slots); retrieval and scoring
never hold one. What is left here: checking, storing, progress and the panels.
"""

from __future__ import annotations

import dataclasses
import html
import logging
from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import pandas as pd

from popcorn import pipeline
from popcorn.llm import default_llm, get_llm
from popcorn.serve import access, serving, warm, zerogpu
from popcorn.store import Store
from popcorn.studio import slots
from popcorn.studio.errors import Cancelled, StudioError, from_error_dict, studio_error, user_message
from popcorn.studio.progress import Sink, StageProgress, cancellable
from popcorn.studio.runs import get_store, keep_run, new_run_id, run_to_render, visible_run
from popcorn.studio.views import (candidates_table, neighbours_table, plain_markdown, popularity_card,
                                  reasoning_markdown, references_table, why_markdown)
from popcorn.types import INPUT, PLAN, RENDER, RETRIEVE, SCORE, Plan, Run, Settings, StageError
from popcorn.video import get_generator

log = logging.getLogger("popcorn.studio")

_WARM: set[str] = set()  # what this process has loaded once already (corpus/index, each LLM, predictor, generators)


class PlanOutput(NamedTuple):
    title: str
    cover_prompt: str
    video_prompt: str
    references: pd.DataFrame
    reasoning: str
    candidates: pd.DataFrame
    run_id: str
    why: str


class RenderOutput(NamedTuple):
    video: str
    cover: str
    card: str
    details: dict  # {"score", "baseline", "timings"}: the card's numbers, for API users
    neighbours: pd.DataFrame
    files: list[str]
    run_id: str
    notes: str


class ScoreOutput(NamedTuple):
    score: dict
    baseline: dict
    card: str


class LoadedRun(NamedTuple):
    query: str
    plan: PlanOutput
    render: RenderOutput | None
    status: str
    error: str


@contextmanager
def _errors(store: Store, run: pipeline.Run) -> Iterator[None]:
    """StageError -> StudioError with the user message; the run is kept as failed/cancelled with that message."""
    try:
        yield
    except Cancelled as exc:
        store.save_run(run.to_dict(), status="cancelled", error=user_message(exc))
        raise StudioError(f"Cancelled during stage {exc.stage}. Nothing was lost: press the button to start over.",
                          exc.stage) from None
    except StageError as exc:
        message = user_message(exc)
        log.warning("run %s: %s", run.id, message)
        store.save_run(run.to_dict(), status="failed", error=message)
        raise StudioError(message, exc.stage) from None
    except Exception as exc:  # not a StageError: a bug; the traceback goes to the log, a message to the user
        log.exception("run %s failed", run.id)
        message = f"Stage studio failed: {type(exc).__name__}: {exc}. See the server log; try again or report it."
        store.save_run(run.to_dict(), status="failed", error=message)
        raise StudioError(message, "studio") from None


def _mode(mode: str) -> str:
    value = str(mode or "pe").strip().lower()
    return {"prompt enhancement": "pe"}.get(value, value.split(":")[0].strip())


def _first_use(stages: dict[str, str], llm: str = "") -> dict[str, str]:
    """The stages' loading notes, less those this process has loaded already: here, or in the warm-up (whose status
    line the page shows: the two must agree). The warm-up loads the default LLM only."""
    loaded = {step["name"] for step in warm.status()["steps"] if step["state"] == "done"}
    warmed = {RETRIEVE: "index", SCORE: "predictor", PLAN: "llm" if llm == default_llm() else None}
    return {stage: note for stage, note in stages.items()
            if stage + ":" + note not in _WARM and warmed.get(stage) not in loaded}


def _warm(notes: dict[str, str]) -> None:
    _WARM.update(stage + ":" + note for stage, note in notes.items())


def _checked(fn: Callable, *args):
    """A policy check; its StageError becomes the message the page shows."""
    try:
        return fn(*args)
    except StageError as exc:
        raise studio_error(exc) from None


def _in_slot(body: Callable, slot: Callable, backend, channel, reporter: StageProgress, *args) -> Callable:
    """A pipeline step as `step(run, progress)`: body(run record, *args, channel) here, or `slot` (the same body in a
    ZeroGPU slot) when the backend needs a GPU. Its progress is relayed from the channel; the run is filled in place
    with the record the step returned, and its error raised here."""
    fn = slot if zerogpu.needs_gpu(backend) else body

    def step(run: Run, progress=None) -> Run:
        out = zerogpu.call(fn, run.to_dict(), *args, channel, channel=channel, progress=reporter.show)
        error = out.pop("error", None)
        vars(run).update(vars(Run.from_dict(out)))
        if error:
            raise from_error_dict(error)
        return run

    return step


# ------------------------------------------------------------------------------------------------------------ plan


def _plan_settings(query, mode, k, llm, seed, candidates, visitor: str, video: str = "storyboard") -> Settings:
    query = _checked(access.check_text, "query", query)
    llm = _checked(access.check_backend, "llm", str(llm or "local").strip())
    # the video model the plan is written for: its text encoder's budget bounds the video prompt (popcorn/video/budget)
    video = _checked(access.check_backend, "video", str(video or "storyboard").strip())
    try:
        settings = Settings(query=query, mode=_mode(mode), llm=llm, k=int(k or 10), video=video,
                            seed=access.check_seed(seed), candidates=int(candidates or 1))
    except (TypeError, ValueError) as exc:
        raise StudioError(f"Stage input failed: {exc}. Use whole numbers for K, seed and candidates.",
                          INPUT) from None
    except StageError as exc:
        raise studio_error(exc) from None
    if settings.k not in (10, 50, 100):
        raise StudioError(f"Stage input failed: K={settings.k} is not offered. Use 10, 50 or 100.", INPUT)
    from popcorn.studio import MAX_CANDIDATES

    if not 1 <= settings.candidates <= MAX_CANDIDATES:
        raise StudioError(f"Stage input failed: {settings.candidates} candidate plans asked. Use 1 to "
                          f"{MAX_CANDIDATES}.", INPUT)
    _checked(pipeline.check, settings)
    _checked(access.charge_paid, visitor, settings.llm, pipeline.llm_calls(settings))  # each answer is a paid call
    return settings


def plan_action(query: str, mode: str = "pe", k: int = 10, llm: str = "local", seed: int = 0, candidates: int = 1,
                video: str = "storyboard", *, progress: Sink | None = None, cancel_key: str | None = None,
                visitor: str = "") -> PlanOutput:
    """pipeline.make_plans: retrieve (PE) -> plan, N candidates ranked by predicted popularity, each fitted to the
    video model's prompt budget; the run is stored as 'planned'."""
    settings = _plan_settings("" if query is None else query, mode, k, llm, seed, candidates, visitor, video)
    store = get_store()
    run = Run(settings, id=new_run_id())
    steps = pipeline.plan_steps(settings)
    notes = _first_use({RETRIEVE: "first use: loading the MicroLens corpus, embeddings and index",
                        PLAN: f"first use: loading the LLM {settings.llm}",
                        SCORE: "first use: loading the popularity predictor"}, settings.llm)
    store.save_run(run.to_dict(), status="planning", visitor=visitor)
    with cancellable(cancel_key) as channel, _errors(store, run):
        reporter = StageProgress(progress, steps, channel, notes)
        backend = get_llm(settings.llm)
        write = _in_slot(slots.write_plans, slots.write_plans_in_slot, backend, channel, reporter)
        here = not (zerogpu.active() and zerogpu.needs_gpu(backend))  # the gloss (PE, an idea in another language) runs here
        with reporter.ticking():
            pipeline.make_plans(settings, reporter, run=run, quick=True, write=write, gloss=here)
    _warm({s: n for s, n in notes.items() if s in steps})
    return _plan_output(keep_run(store, run, "planned"))


def _plan_output(record: dict) -> PlanOutput:
    plan = record.get("plan") or {}
    return PlanOutput(
        title=plan.get("title", ""), cover_prompt=plan.get("cover_prompt", ""),
        video_prompt=plan.get("video_prompt", ""), references=references_table(record.get("retrieval")),
        reasoning=reasoning_markdown(plan), candidates=candidates_table(record.get("candidates")),
        run_id=record["id"], why=why_markdown(record.get("retrieval"), record.get("notes"),
                                              (record.get("settings") or {}).get("mode", "pe")),
    )


# ------------------------------------------------------------------------------------------------------------ render


def _edited_run(run_id: str, title: str, cover_prompt: str, video_prompt: str, video_model: str, seed: int,
                visitor: str) -> Run:
    """The run to render: the visitor's stored run with the edited plan (a copy under a new id if it was rendered
    already), or, with no run id, a new run of the given plan alone."""
    notes = []
    title = " ".join(_checked(access.check_text, "title", title).split())
    cover_prompt = _checked(access.check_text, "cover_prompt", cover_prompt)
    video_prompt = _checked(access.check_text, "video_prompt", video_prompt)
    video_model = _checked(access.check_backend, "video", str(video_model or "storyboard").strip())
    seed = _checked(access.check_seed, seed)
    if not title:
        raise StudioError("Stage input failed: the title is empty. Write a title (at most 50 characters) or press "
                          "Plan.", INPUT)
    if not " ".join(video_prompt.split()):
        raise StudioError("Stage input failed: the video prompt is empty. Describe the ~3 s scene or press Plan.",
                          INPUT)
    if pipeline.fit_title(title) != title:
        title = pipeline.fit_title(title)
        notes.append(f"the title was cut to {pipeline.TITLE_LIMIT} characters: {title}")
    record = visible_run(run_id, visitor, INPUT) if str(run_id or "").strip() else None
    base = Plan.from_dict(record["plan"]) if record and record.get("plan") else Plan("", "", "", query=title)
    plan = dataclasses.replace(base, title=title, cover_prompt=cover_prompt, video_prompt=video_prompt)
    run = run_to_render(record, plan, Settings(query=title, mode="basic", llm=""), notes)
    run.settings.video, run.settings.seed = video_model, seed
    if zerogpu.active() and run.settings.speed != "plain":
        run.settings.speed = "plain"  # compiled kernels would not outlive one ZeroGPU worker
    _checked(access.charge_paid, visitor, run.settings.video)
    return run


def render_action(run_id: str, title: str, cover_prompt: str, video_prompt: str, video_model: str = "storyboard",
                  seed: int = 0, *, progress: Sink | None = None, cancel_key: str | None = None,
                  visitor: str = "", holder: str | None = None) -> RenderOutput:
    """render -> compose -> score the (edited) plan; files go to <home>/runs/<id>/, the run is stored as 'done'.
    The files returned are copies only `holder` (the browser that asked; default the visitor) may fetch."""
    run = _edited_run(run_id, title, cover_prompt, video_prompt, video_model, seed, visitor)
    store = get_store()
    first = _first_use({RENDER: f"first use: loading the video model {run.settings.video}",
                        SCORE: "first use: loading the popularity predictor"})
    store.save_run(run.to_dict(), status="rendering", visitor=visitor)
    out_dir = store.run_dir(run.id)
    error = ""
    with cancellable(cancel_key) as channel:
        reporter = StageProgress(progress, pipeline.render_steps(), channel, first)
        with reporter.ticking():
            with _errors(store, run):
                render = _in_slot(slots.render_video, slots.render_video_in_slot, get_generator(run.settings.video),
                                  channel, reporter, str(out_dir))
                render(run)  # pipeline.render_run(run, out_dir, with_score=False), here or in a GPU slot
            try:  # the video is made: a failing score is reported beside it, not instead of it
                pipeline.score_run(run, reporter)
            except Cancelled:
                run.notes.append("scoring was cancelled")
            except StageError as exc:
                error = user_message(exc)
                log.warning("run %s: %s", run.id, error)
    _warm({stage: note for stage, note in first.items() if stage != SCORE or run.score})
    keep_run(store, run, "done", error=error)
    return _render_output(store.get_run(run.id), visitor if holder is None else holder)


def _render_output(record: dict, holder: str) -> RenderOutput:
    """The panels of a rendered run; the files are the visitor's own copies (popcorn.serve.serving), never store paths."""
    video = record.get("video") or {}
    category = ((record.get("plan") or {}).get("matched_categories") or [None])[0]
    served = serving.publish(record, holder)
    files = [served[kind] for kind in ("run_json", "video") if kind in served]
    lines = []
    if video.get("is_preview"):
        lines.append("🎞️ **Storyboard preview** — not a model render (no video model could run here).")
    lines += [f"ℹ️ {plain_markdown(n)}" for n in (record.get("notes") or []) + (video.get("notes") or [])]
    timings = record.get("timings") or {}
    if timings:
        lines.append("⏱️ " + " · ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items()))
    card = popularity_card(record.get("score"), record.get("baseline"), category)
    if record.get("error"):
        card = f"<div class='pc-card pc-error'>⚠️ {html.escape(record['error'])}</div>"
    return RenderOutput(
        video=served.get("video", ""), cover=served.get("cover", ""), card=card,
        details={"score": record.get("score") or {}, "baseline": record.get("baseline") or {},
                 "timings": record.get("timings") or {}},
        neighbours=neighbours_table(record.get("score")), files=files, run_id=record["id"],
        notes="\n\n".join(lines),
    )


# ------------------------------------------------------------------------------------------------------------ score


def score_action(title: str, description: str = "", category: str = "") -> ScoreOutput:
    """h alone: the predicted popularity of a title (+ description, category) and its human-matched baseline."""
    title = " ".join(_checked(access.check_text, "title", title).split())
    description = _checked(access.check_text, "description", description)
    category = _checked(access.check_text, "category", category).strip()
    if not title:
        raise StudioError("Stage input failed: the title is empty. Give the title to score.", "input")
    plan = Plan(title=title, cover_prompt="", video_prompt=description, query=title,
                matched_categories=[category] if category else [])
    try:
        score, baseline = pipeline.score(plan)
    except StageError as exc:
        raise studio_error(exc) from None
    except Exception as exc:
        log.exception("score failed")
        raise StudioError(f"Stage score failed: {type(exc).__name__}: {exc}. See the server log.", "score") from None
    return ScoreOutput(score=score, baseline=baseline, card=popularity_card(score, baseline, category or None))


# ------------------------------------------------------------------------------------------------------------ open


def load_run(run_id: str, visitor: str = "", holder: str | None = None) -> LoadedRun:
    """Everything the panels show for one of the visitor's runs (render is None when it was never rendered)."""
    record = visible_run(run_id, visitor)
    rendered = _render_output(record, visitor if holder is None else holder) if (record.get("video") or {}).get("video") else None
    return LoadedRun(record.get("query", ""), _plan_output(record), rendered, record["status"], record["error"])


def empty_render(run_id: str = "", notes: str = "") -> RenderOutput:
    """The render panels of a run that has no video yet."""
    return RenderOutput(None, None, popularity_card(None, None), {}, neighbours_table(None), [], run_id, notes)

