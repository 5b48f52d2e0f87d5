"""One run of F(x) = h(g(f(x))), as named steps:

    retrieve  (PE only) route the query to categories, fetch popular + unpopular MicroLens references
    plan      f: the LLM writes title, cover prompt and video prompt (Basic or PE prompt) in a bounded schema fitted to
              the video model's text encoder; a failed answer is drawn again with a fresh seed (up to `attempts`)
    render    g: a text-to-video generator renders the video prompt (a storyboard preview when no model can run)
    compose   the title is overlaid; MP4 + cover + metadata are written
    score     h: predicted popularity of the result, next to the human-matched MicroLens baseline

Each step is a plain function with typed inputs and outputs. `run()` chains them, times each, reports progress through
one callback `progress(stage, fraction, message)`, and writes run.json. Failures are StageError naming the step.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from popcorn.llm import prompts
from popcorn.types import Plan, Retrieval, StageError

STAGES = ("retrieve", "plan", "render", "compose", "score")
MODES = ("basic", "pe")

Progress = Callable[[str, float, str], None]


def _quiet(stage: str, fraction: float, message: str) -> None:
    pass


@dataclass
class Settings:
    query: str
    mode: str = "pe"
    llm: str = "local"
    video: str = "storyboard"
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
    # the score's category (h's input): a prompt file's category; "" = routed from the query (see score_category)
    category: str = ""

    def check(self) -> None:
        if not prompts.clean_query(self.query):
            raise StageError("input", "the query is empty", "type a one-line idea for the video")
        if self.mode not in MODES:
            raise StageError("input", f"unknown mode {self.mode!r}", f"use one of {MODES}")
        if not 1 <= self.candidates <= 16:
            raise StageError("input", f"candidates={self.candidates} is out of range", "use 1 to 16")
        if not 1 <= self.attempts <= 10:
            raise StageError("input", f"attempts={self.attempts} is out of range", "use 1 to 10")
        from popcorn.video.base import check_memory_mode, check_speed

        try:  # the video stage's own checks, asked before any work is done
            self.memory_mode, self.speed = check_memory_mode(self.memory_mode), check_speed(self.speed)
        except StageError as exc:
            raise StageError("input", exc.message, exc.hint) from None


@dataclass
class Run:
    """Everything one run produced; `to_dict()` is run.json."""

    settings: Settings
    id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6])
    retrieval: Retrieval | None = None
    plan: Plan | None = None
    candidates: list[dict] = field(default_factory=list)  # best-of-N: plans with their predicted scores, best first
    plan_info: dict = field(default_factory=dict)  # how the plan was written: budget, attempts, tokens, seconds
    video: dict = field(default_factory=dict)  # what compose wrote (paths, size, fps, preview flag, notes)
    score: dict = field(default_factory=dict)  # h of the result
    baseline: dict = field(default_factory=dict)  # the human-matched MicroLens video(s)
    timings: dict = field(default_factory=dict)  # stage -> seconds
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "settings": self.settings.__dict__,
            "plan": {**self.plan.to_dict(), **self.plan_info} if self.plan else None,
            "retrieval": self.retrieval.to_dict() if self.retrieval else None,
            "candidates": self.candidates,
            "video": self.video,
            "score": self.score,
            "baseline": self.baseline,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------------------ steps


def retrieve(query: str, k: int = 10, router: str = "ours", *, quick: bool = False) -> Retrieval:
    """PE references for one query. `quick`: one interactive plan, which may route on a sample while the whole index
    is not built yet (popcorn.retrieval.index.QuickRetriever); a batch never does."""
    from popcorn.retrieval.index import get_retriever

    return get_retriever(quick=quick).retrieve(query, k, router=router)


def quick_note(retrieval: Retrieval | None) -> str:
    """What a run's notes say when its references came from a quick retrieval, else ""."""
    if retrieval is None or retrieval.index == "full":
        return ""
    return (f"retrieval {retrieval.index} (the whole index was not built yet; `python -m popcorn index` builds it, "
            "and later plans use it)")


def plan(query: str, mode: str, llm: str, retrieval: Retrieval | None = None, *, seed: int | None = None,
         max_tokens: int = 0, temperature: float = 0.7, video: str = "storyboard", attempts: int = 3,
         progress: Callable[[float, str], None] | None = None) -> Plan:
    """f(x): one plan from the LLM (see write_plan, which also says how the plan was written)."""
    return write_plan(query, mode, llm, retrieval, seed=seed, max_tokens=max_tokens, temperature=temperature,
                      video=video, attempts=attempts, progress=progress)[0]


def write_plan(query: str, mode: str, llm: str, retrieval: Retrieval | None = None, *, seed: int | None = None,
               max_tokens: int = 0, temperature: float = 0.7, video: str = "storyboard", attempts: int = 3,
               progress: Callable[[float, str], None] | None = None) -> tuple[Plan, dict]:
    """f(x): one plan from the LLM, and how it was written: {"budget", "attempts", "usage"}.

    The answer is constrained to a bounded schema (plan_schema: short reasoning fields, then the plan; the video
    prompt capped by the video model's text-encoder budget, words asked for in the prompt). An answer that was cut
    off (finish_reason "length"), cannot be read, leaves a field empty or overruns the budget is drawn again with a
    fresh seed, never sent back for repair; after `attempts` failures the plan stage fails with the last raw answer.

    progress(fraction, message) hears how far the answer has grown (at most twice a second); an exception it raises
    (Cancel) stops the LLM mid-answer."""
    from popcorn.llm import get_llm
    from popcorn.llm.parse import TITLE_LIMIT, longest_sentences, max_chars, plan_schema, shorten_title
    from popcorn.video.budget import budget as video_budget
    from popcorn.video.budget import estimate_tokens

    backend = get_llm(llm)
    ok, reason = backend.available()
    if not ok:
        raise StageError("plan", f"LLM {llm!r} cannot run here: {reason}", "pick another LLM (python -m popcorn llms)")
    fit = video_budget(video)
    words = (fit.words_min, fit.words_max)
    if mode == "pe":
        if retrieval is None:
            raise StageError("plan", "PE mode needs the retrieved references", "run the retrieve step first")
        messages = prompts.pe_messages(query, retrieval, words)
    else:
        messages = prompts.basic_messages(query, words)
    schema = plan_schema(mode, fit.max_chars)
    # every string is bounded, so the answer is too: ~1 token per 2 characters at worst for prose, plus the keys
    limit = max_tokens or (max_chars(schema) // 2 + 80)

    on_text = _growth_reporter(progress, expected_chars=max_chars(schema) * 2 // 3) if progress is not None else None
    base_seed = seed if seed is not None else int.from_bytes(os.urandom(3), "little")
    tries: list[dict] = []
    last_raw, last_problem = "", ""
    attempts = max(1, attempts)
    for attempt in range(attempts):
        attempt_seed = base_seed + 1000 * attempt  # a fresh sample, reproducible from the run's seed
        completion = backend.complete(messages, json_schema=schema, max_tokens=limit, temperature=temperature,
                                      seed=attempt_seed, on_text=on_text)
        usage = completion.usage or {}
        record = {"seed": attempt_seed, "finish_reason": usage.get("finish_reason"),
                  **{k: usage[k] for k in ("capped_fields", "redrawn_fields") if usage.get(k)},
                  **{k: usage[k] for k in ("prompt_tokens", "prompt_eval_tokens", "completion_tokens", "prompt_eval_s",
                                           "generation_s", "seconds") if k in usage}}
        tries.append(record)
        last_raw = completion.text
        problem, fields = _check_answer(completion.text, usage.get("finish_reason"), fit)
        if problem and fields and attempt + 1 == attempts:
            # the last draw only overran the budget (the one problem that comes with fields): keep its whole
            # sentences that fit rather than fail
            fields["video_prompt"] = longest_sentences(fields["video_prompt"], fit.fits)
            record["trimmed_to_budget"] = True
            problem = "" if fields["video_prompt"] else problem
        record["problem"] = problem
        if problem:
            last_problem = problem
            if progress is not None:
                progress(0.0, f"attempt {attempt + 1} failed ({problem}); drawing a fresh answer")
            continue
        title = shorten_title(fields["title"], TITLE_LIMIT)
        reasoning = "\n\n".join(r for r in (completion.reasoning, fields.get("reasoning", "")) if r)
        the_plan = Plan(
            title=title, cover_prompt=fields["cover_prompt"], video_prompt=fields["video_prompt"],
            reasoning=reasoning, mode=mode, llm=llm, query=prompts.clean_query(query),
            matched_categories=list(retrieval.matched_categories) if retrieval else [],
            category_scores=list(retrieval.category_scores) if retrieval else [],
            references=list(retrieval.references) if retrieval else [],
        )
        info = {
            "budget": {**fit.to_dict(), "estimated_tokens": estimate_tokens(the_plan.video_prompt),
                       "words": len(the_plan.video_prompt.split())},
            # written whole: not cut here, nor at its cap by a backend that writes field by field (local)
            "title_whole": title == fields["title"].strip() and "title" not in (usage.get("capped_fields") or []),
            "attempts": tries,
            "usage": _sum_usage(tries),
        }
        return the_plan, info
    raise StageError(
        "plan",
        f"the LLM {llm!r} gave no usable plan in {len(tries)} attempt(s): {last_problem}",
        "try again (each attempt draws a fresh answer), raise the attempts, or pick a larger LLM",
        raw=last_raw,
    )


def _check_answer(text: str, finish_reason: str | None, fit) -> tuple[str, dict]:
    """(what is wrong with an answer, or "", and the fields read from it). Fields come with a problem only when the
    video prompt is over the budget: every other problem leaves nothing to keep."""
    from popcorn.llm.parse import read_plan

    if finish_reason == "length":
        return "the answer was cut off at max_tokens (finish_reason 'length')", {}
    try:
        fields = read_plan(text)
    except StageError as exc:
        return exc.message, {}
    empty = [k for k in ("title", "cover_prompt", "video_prompt") if not fields.get(k, "").strip()]
    if empty:
        return "empty field(s): " + ", ".join(empty), {}
    if not fit.fits(fields["video_prompt"]):
        return (f"the video prompt is over the {fit.video} budget ({len(fields['video_prompt'].split())} words, "
                f"{fit.tokens or fit.words_max} {'tokens' if fit.tokens else 'words'})"), fields
    return "", fields


def _sum_usage(tries: list[dict]) -> dict:
    total: dict = {"attempts": len(tries)}
    for key in ("prompt_tokens", "prompt_eval_tokens", "completion_tokens", "prompt_eval_s", "generation_s", "seconds"):
        values = [t[key] for t in tries if isinstance(t.get(key), (int, float))]
        if values:
            total[key] = round(sum(values), 3) if isinstance(values[0], float) else sum(values)
    return total


def _growth_reporter(progress: Callable[[float, str], None], expected_chars: int, every_s: float = 0.5):
    """on_text for an LLM: the answer's length as a fraction of what a full answer would be, twice a second."""
    last = [0.0]

    def on_text(text: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s:
            last[0] = now
            progress(min(0.95, len(text) / expected_chars), f"writing the plan ({len(text)} characters)")

    return on_text


def render(the_plan: Plan, video: str, *, seed: int = 0, memory_mode: str = "auto", speed: str = "auto",
           progress: Progress = _quiet):
    """g(p): the clip for the plan's video prompt."""
    from popcorn.video import RenderRequest, get_generator

    generator = get_generator(video)
    ok, reason = generator.available()
    if not ok:
        raise StageError("render", f"video model {video!r} cannot run here: {reason}",
                         "pick another video model, or 'storyboard' for a preview")
    request, notes = generator.snap(RenderRequest(prompt=the_plan.video_prompt, seed=seed,
                                                            memory_mode=memory_mode, speed=speed))
    clip = generator.render(request, progress=lambda f, msg: progress("render", f, msg))
    clip.notes = list(notes) + list(clip.notes)
    return clip


def compose(clip, the_plan: Plan, out_dir: Path, cover_model: str = "") -> dict:
    from popcorn.compose import compose as compose_clip

    return compose_clip(clip, the_plan.title, Path(out_dir), cover_prompt=the_plan.cover_prompt,
                        cover_model=cover_model or None,
                        metadata={"title": the_plan.title, "video_prompt": the_plan.video_prompt})


def score(the_plan: Plan, video_path: str | None = None, *, category: str | None = None, category_source: str = "",
          rule: str = "same-inputs") -> tuple[dict, dict]:
    """h: the plan's predicted popularity under both judges, and the human-matched baseline for its query.

    Same inputs for every arm of a prompt (rule "same-inputs", popcorn/popularity/judges.py): `category` and its
    source come from score_category(), and the human-matched video from the query and that category alone. Rule
    "confounded" re-scores as before issue 23 (each arm's own category: PE's routed, Basic's inferred from the title)."""
    from popcorn.popularity import judges

    query = the_plan.query or the_plan.title
    if rule == judges.CONFOUNDED:
        own = the_plan.matched_categories[0] if the_plan.matched_categories else None
        return judges.score_confounded(the_plan.title, the_plan.video_prompt, query, own, video=video_path)
    if rule != judges.SAME_INPUTS:
        raise StageError("score", f"unknown scoring rule {rule!r}", f"use one of {judges.RULES}")
    if category is None and the_plan.matched_categories:  # a plan scored alone (the studio's Score page)
        category, category_source = the_plan.matched_categories[0], category_source or "given with the plan"
    return judges.score_same_footing(the_plan.title, the_plan.video_prompt, query, category, category_source,
                                     video=video_path)


def score_category(settings: Settings, retrieval: Retrieval | None = None) -> tuple[str | None, str]:
    """The category h gets, one source for every arm of a prompt: the prompt file's (Settings.category) where given
    and known to MicroLens, else the category routed from the query with the run's router (a PE run's own routing
    when it came from the whole index: the same router on the same query gives the same answer)."""
    from popcorn.retrieval.corpus import load_corpus

    known = {c.casefold(): c for c in load_corpus().categories()}
    given = (settings.category or "").strip()
    if given and given.casefold() in known:
        return known[given.casefold()], "prompt file"
    routed = retrieval if retrieval is not None and retrieval.index == "full" else None
    if routed is None:
        routed = retrieve(settings.query, 1, settings.router, quick=True)
    source = f"routed from the query (router {settings.router})"
    if routed.index != "full":
        source += f", {routed.index}"
    if given:
        source += f"; the prompt file's {given!r} is not a MicroLens category"
    return (routed.matched_categories[0] if routed.matched_categories else None), source


def rank(plans: list[Plan]) -> list[dict]:
    """Best-of-N: each plan with its predicted popularity, highest first (max E[h(g(f(x)))] before any GPU time)."""
    from popcorn.popularity import rank_plans

    return [{"plan": p.to_dict(), "score": s.to_dict()} for p, s in rank_plans(plans)]


# ------------------------------------------------------------------------------------------------------------ runs


class _Timer:
    def __init__(self, run: Run, stage: str, progress: Progress):
        self.run, self.stage, self.progress = run, stage, progress

    def __enter__(self):
        self.start = time.perf_counter()
        self.progress(self.stage, 0.0, f"{self.stage}...")
        return self

    def __exit__(self, exc_type, exc, tb):
        self.run.timings[self.stage] = time.perf_counter() - self.start
        if exc is None:
            self.progress(self.stage, 1.0, f"{self.stage} done")
        elif not isinstance(exc, StageError):  # unexpected failures still name their stage
            raise StageError(self.stage, f"{type(exc).__name__}: {exc}", "see the log; try again or report it") from exc
        return False


def _prepare_llm_meanwhile(name: str) -> None:
    """Start the LLM's own preparation (a local model's GGUF assembled, verified and loaded: mostly disk and a hash)
    on a thread while retrieval works beside it (on a new cache, embedding the corpus), instead of after it. The
    plan step takes the same locks, so it waits for this or finds the model ready; a failure here is left to the plan
    step, which does the same work again and reports it with its stage. Only backends with a `warm` step (local
    models) have anything to prepare."""
    from popcorn.llm import get_llm

    try:
        warm = getattr(get_llm(name), "warm", None)
    except StageError:
        return
    if warm is None:
        return

    def prepare():
        try:
            warm()
        except Exception:  # reported by the plan step
            pass

    thread = threading.Thread(target=prepare, name="popcorn-llm-prepare", daemon=True)
    thread.start()


def make_plans(settings: Settings, progress: Progress = _quiet, run: Run | None = None, *,
               quick: bool = False) -> Run:
    """retrieve -> plan (x N candidates, ranked by h when N > 1). Fills and returns a Run. `quick`: see retrieve."""
    settings.check()
    run = run or Run(settings)
    if len(settings.query) > prompts.MAX_QUERY_CHARS:
        run.notes.append(f"the query was cut to {prompts.MAX_QUERY_CHARS} characters")
    if settings.mode == "pe":
        _prepare_llm_meanwhile(settings.llm)
        with _Timer(run, "retrieve", progress):
            run.retrieval = retrieve(settings.query, settings.k, settings.router, quick=quick)
        if quick_note(run.retrieval):
            run.notes.append(quick_note(run.retrieval))
    with _Timer(run, "plan", progress):
        plans, infos = [], []
        for i in range(settings.candidates):
            progress("plan", i / settings.candidates, f"plan {i + 1} of {settings.candidates}")
            the_plan, info = write_plan(
                settings.query, settings.mode, settings.llm, run.retrieval, seed=settings.seed + i,
                max_tokens=settings.max_tokens, temperature=settings.temperature, video=settings.video,
                attempts=settings.attempts,
                progress=lambda f, msg, i=i: progress("plan", (i + f) / settings.candidates, msg))
            plans.append(the_plan)
            infos.append(info)
            failed = len(info["attempts"]) - 1
            if failed:
                run.notes.append(f"plan {i + 1}: {failed} answer(s) drawn again ("
                                 + "; ".join(t["problem"] for t in info["attempts"] if t.get("problem")) + ")")
    if settings.candidates > 1:
        with _Timer(run, "score", progress):
            run.candidates = rank(plans)
        best = next(i for i, p in enumerate(plans) if p.to_dict() == run.candidates[0]["plan"])
        run.plan, run.plan_info = Plan.from_dict(run.candidates[0]["plan"]), infos[best]
    else:
        run.plan, run.plan_info = plans[0], infos[0]
    return run


def render_run(run: Run, out_dir: Path, progress: Progress = _quiet, with_score: bool = True) -> Run:
    """render -> compose -> score for a run that has a plan; writes out_dir/video.mp4, cover.png, run.json."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _Timer(run, "render", progress):
        clip = render(run.plan, run.settings.video, seed=run.settings.seed, memory_mode=run.settings.memory_mode,
                      speed=run.settings.speed, progress=progress)
    with _Timer(run, "compose", progress):
        run.video = compose(clip, run.plan, out_dir, cover_model=run.settings.cover_model)
    if with_score:
        score_run(run, progress)
    write_run_json(run, out_dir)
    return run


def score_run(run: Run, progress: Progress = _quiet, rule: str = "same-inputs") -> Run:
    """score a run's plan (and its video, when rendered): fills run.score and run.baseline (see score)."""
    with _Timer(run, "score", progress):
        category, source = score_category(run.settings, run.retrieval)
        run.score, run.baseline = score(run.plan, run.video.get("video"), category=category, category_source=source,
                                        rule=rule)
    return run


def run(settings: Settings, out_dir: Path, progress: Progress = _quiet, *, quick: bool = False) -> Run:
    """The whole of F(x) for one query (`quick`: see retrieve)."""
    the_run = make_plans(settings, progress, quick=quick)
    return render_run(the_run, out_dir, progress)


def write_run_json(the_run: Run, out_dir: Path) -> Path:
    path = Path(out_dir) / "run.json"
    path.write_text(json.dumps(the_run.to_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    return path
