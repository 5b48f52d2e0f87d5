"""One run of F(x) = h(g(f(x))), as named steps:

    retrieve  (PE only) route the query to categories, fetch popular + unpopular MicroLens references
    plan      f: the LLM writes title, cover prompt and video prompt (Basic or PE prompt) in a bounded schema fitted to
              the video model's text encoder; a failed answer is drawn again with a fresh seed (up to `attempts`)
    render    g: a text-to-video generator renders the video prompt (a storyboard preview when no model can run)
    compose   the title is overlaid; MP4 + cover + metadata are written
    score     h: predicted popularity of the result, next to the human-matched MicroLens baseline

Each step is a plain function with typed inputs and outputs (the records of popcorn/types.py). `make_plans` (retrieve
-> plan) and `render_run` (render -> compose -> score) are the only plan and render paths: `run()`, the CLI, the
studio, a ZeroGPU slot and the batch all call them. They time each step, report progress through one callback
`progress(stage, fraction, message)` and write run.json. The stage names are types.STAGES ("input" is `check`, before
any work); every failure is a StageError naming one of them.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from popcorn.compose import compose as compose_clip
from popcorn.llm import get_llm, plus, prompts
from popcorn.llm.gloss import english_gloss, needs_gloss, reads_gloss
from popcorn.llm.parse import TITLE_LIMIT, longest_sentences, max_chars, plan_schema, read_plan, shorten_title
from popcorn.types import (COMPOSE, INPUT, MODES, PLAN, REFERENCE_MODES, RENDER, RETRIEVE, SCORE, STAGES, STEPS,
                           UNSURE_MARGIN, Plan, Retrieval, Run, Settings, StageError)
from popcorn.video import RenderRequest, get_generator
from popcorn.video.base import check_memory_mode, check_speed
from popcorn.text import count_words
from popcorn.video.budget import budget as video_budget
from popcorn.video.budget import estimate_tokens

__all__ = ["MODES", "PLAN_INFO", "STAGES", "STEPS", "TITLE_LIMIT", "Plan", "Progress", "Retrieval", "Run", "Settings",
           "StageError", "check", "compose", "fit_title", "llm_calls", "make_plans", "plan_steps", "quick_note", "rank", "render",
           "render_run", "render_steps", "retrieve", "run", "score", "score_category", "score_run", "unsure_note",
           "write_plan", "write_plans", "write_run_json"]

Progress = Callable[[str, float, str], None]
# what run.json's plan holds beside the Plan's own fields: how it was written (write_plan's second value)
PLAN_INFO = ("budget", "title_whole", "attempts", "usage", "drafts")  # drafts: PE+ only (popcorn/llm/plus.py)


def _quiet(stage: str, fraction: float, message: str) -> None:
    pass


def check(settings: Settings) -> Settings:
    """The input stage: refuse what cannot run before any work is done (StageError('input', ...)); returns the
    settings with the video options normalised."""
    if not prompts.clean_query(settings.query):
        raise StageError(INPUT, "the query is empty", "type a one-line idea for the video")
    if settings.mode not in MODES:
        raise StageError(INPUT, f"unknown mode {settings.mode!r}", f"use one of {MODES}")
    if not 1 <= settings.candidates <= 16:
        raise StageError(INPUT, f"candidates={settings.candidates} is out of range", "use 1 to 16")
    if not 1 <= settings.attempts <= 10:
        raise StageError(INPUT, f"attempts={settings.attempts} is out of range", "use 1 to 10")
    try:  # the video stage's own checks, asked before any work is done
        settings.memory_mode, settings.speed = check_memory_mode(settings.memory_mode), check_speed(settings.speed)
    except StageError as exc:
        raise StageError(INPUT, exc.message, exc.hint) from None
    return settings


def plan_steps(settings: Settings) -> tuple[str, ...]:
    """The steps make_plans goes through for these settings, in order (for a progress bar)."""
    return ((RETRIEVE,) if settings.mode in REFERENCE_MODES else ()) + (PLAN,) + ((SCORE,) if settings.candidates > 1 else ())


def llm_calls(settings: Settings) -> int:
    """How many LLM answers a plan of these settings asks for at most: one per candidate, two in PE+ (the plan, then
    its title drafts), and one more where PE asks for an English reading of an idea the encoder cannot read (none when
    this process has it already). What a paid backend's limits and a GPU slot's duration count."""
    gloss = settings.mode in REFERENCE_MODES and needs_gloss(settings.query, known_words())
    return settings.candidates * (2 if settings.mode == "plus" else 1) + int(gloss)


def known_words() -> frozenset:
    """The default encoder's whole-word vocabulary (needs_gloss); read once per process, no model loaded."""
    from popcorn.retrieval.embed import get_embedder

    return get_embedder().known_words()


def render_steps(with_score: bool = True) -> tuple[str, ...]:
    """The steps render_run goes through, in order."""
    return (RENDER, COMPOSE) + ((SCORE,) if with_score else ())


def fit_title(title: str) -> str:
    """A title cut to TITLE_LIMIT characters at a phrase break (as a plan's own title is), whitespace collapsed."""
    title = " ".join(str(title or "").split())
    return shorten_title(title, TITLE_LIMIT) if len(title) > TITLE_LIMIT else title


# ------------------------------------------------------------------------------------------------------------ steps


def retrieve(query: str, k: int = 10, router: str = "ours", *, quick: bool = False, gloss: str = "") -> Retrieval:
    """PE references for one query. `quick`: one interactive plan, which may route on a sample while the whole index
    is not built yet (popcorn.retrieval.index.QuickRetriever); a batch never does. `gloss`: an English reading of the
    query that routing and references read instead (popcorn/llm/gloss.py)."""
    from popcorn.retrieval.index import get_retriever  # heavy (faiss), and only PE retrieves

    return get_retriever(quick=quick).retrieve(query, k, router=router, gloss=gloss)


def gloss_for(settings: Settings, run: Run, allowed: bool = True) -> str:
    """The English gloss PE routes the idea on (popcorn/llm/gloss.py), or "" where it is routed as typed: the encoder
    reads it (needs_gloss), or the gloss only echoes it (reads_gloss). A gloss that fails (or is not `allowed` here:
    an LLM that runs only in a ZeroGPU slot) leaves "" and a note: the idea is routed as typed, the plan goes on."""
    if not needs_gloss(settings.query, known_words()):
        return ""
    if not allowed:
        run.notes.append("the idea is routed as typed: this instance's LLM runs only in a GPU slot, so it writes no "
                         "English reading for routing")
        return ""
    key = (settings.llm, prompts.clean_query(settings.query))
    english = _GLOSSES.get(key)  # every arm and re-plan of an idea in this process reads one gloss (and pays once)
    if english is None:
        try:
            english = english_gloss(get_llm(settings.llm), settings.query)
        except Exception as exc:  # noqa: BLE001  (any backend failure: routing on the idea as typed still works)
            reason = exc.message if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            run.notes.append(f"the idea could not be read in English for routing ({reason}); routed as typed")
            return ""
        if len(_GLOSSES) >= GLOSS_MEMORY:
            _GLOSSES.pop(next(iter(_GLOSSES)))  # the oldest
        _GLOSSES[key] = english
    return english if reads_gloss(settings.query, english) else ""


def gloss_beside_retrieval(settings: Settings, run: Run, allowed: bool = True, quick: bool = False) -> str:
    """gloss_for on a thread while the retriever gets ready (the whole index loaded or built; a quick one has nothing to
    do before the route, which waits for the gloss), so the LLM's load and the index's overlap."""
    from popcorn.retrieval.index import get_retriever  # heavy (faiss), and only PE retrieves

    if not allowed or not needs_gloss(settings.query, known_words()):
        return gloss_for(settings, run, allowed)  # no LLM answer to wait for
    read: dict[str, str] = {}
    thread = threading.Thread(target=lambda: read.update(english=gloss_for(settings, run, allowed)),
                              name="popcorn-gloss", daemon=True)
    thread.start()
    try:
        get_retriever(quick=quick)
    finally:
        thread.join()
    return read.get("english", "")


GLOSS_MEMORY = 256  # glosses kept per process, by (LLM, idea)
_GLOSSES: dict[tuple[str, str], str] = {}


def gloss_note(retrieval: Retrieval | None) -> str:
    """What a run's notes say when routing and references read an English gloss of the idea, else ""."""
    if retrieval is None or not retrieval.gloss:
        return ""
    return f"the category and references were found for the LLM's English reading of the idea: \"{retrieval.gloss}\""


def quick_note(retrieval: Retrieval | None) -> str:
    """What a run's notes say when its references came from a quick retrieval, else ""."""
    if retrieval is None or retrieval.index == "full":
        return ""
    return (f"retrieval {retrieval.index} (the whole index was not built yet; the route and references are the ones "
            "it gives; `python -m popcorn index` builds it, so later plans embed nothing)")


def unsure_note(retrieval: Retrieval | None) -> str:
    """A note when the route is a guess (its best category leads the next by less than UNSURE_MARGIN): on queries the
    router was never tuned on, such routes were right 0.50 of the time against 0.94 (bench/RESULTS.md)."""
    if retrieval is None or retrieval.margin is None or retrieval.margin >= UNSURE_MARGIN:
        return ""
    runners = [c.category for c in retrieval.category_scores[:2]]
    return (f"the category is a close call between {' and '.join(runners)}: the references come from "
            f"{', '.join(retrieval.matched_categories)}; if the idea belongs elsewhere, name it in the idea")


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
    backend = get_llm(llm)
    ok, reason = backend.available()
    if not ok:
        raise StageError(PLAN, f"LLM {llm!r} cannot run here: {reason}", "pick another LLM (python -m popcorn llms)")
    fit = video_budget(video)
    words = (fit.words_min, fit.words_max)
    if mode in REFERENCE_MODES:
        if retrieval is None:
            raise StageError(PLAN, f"{mode} mode needs the retrieved references", "run the retrieve step first")
        messages = prompts.pe_messages(query, retrieval, words)
    else:
        messages = prompts.basic_messages(query, words)
    schema = plan_schema(mode, fit.max_chars, fit.words_min)
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
            # the last draw's only problem is the video prompt's length (the one problem that comes with fields):
            # keep its whole sentences that fit, or extend it with the plan's cover prompt, rather than fail
            if fit.long_enough(fields["video_prompt"]):
                fields["video_prompt"] = longest_sentences(fields["video_prompt"], fit.fits)
                record["trimmed_to_budget"] = True
            else:
                fields["video_prompt"] = _extend(fields["video_prompt"], fields["cover_prompt"], fit)
                record["extended_to_minimum"] = True
            problem = "" if fields["video_prompt"] and fit.long_enough(fields["video_prompt"]) else problem
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
                       "words": count_words(the_plan.video_prompt)},
            # written whole: not cut here, nor at its cap by a backend that writes field by field (local)
            "title_whole": title == fields["title"].strip() and "title" not in (usage.get("capped_fields") or []),
            "attempts": tries,
            "usage": _sum_usage(tries),
        }
        if mode == "plus":
            the_plan, info["drafts"], drafted = _plus_title(backend, messages, the_plan, retrieval, temperature,
                                                            attempt_seed, progress)
            info["usage"] = {**_sum_usage([*tries, drafted]), "attempts": len(tries)}
        return the_plan, info
    raise StageError(
        PLAN,
        f"the LLM {llm!r} gave no usable plan in {len(tries)} attempt(s): {last_problem}",
        "try again (each attempt draws a fresh answer), raise the attempts, or pick a larger LLM",
        raw=last_raw,
    )


def _check_answer(text: str, finish_reason: str | None, fit) -> tuple[str, dict]:
    """(what is wrong with an answer, or "", and the fields read from it). Fields come with a problem only when the
    video prompt is over the budget: every other problem leaves nothing to keep."""
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
    if not fit.long_enough(fields["video_prompt"]):
        return (f"the video prompt is under the budget's minimum ({count_words(fields['video_prompt'])} words, "
                f"at least {fit.words_min})"), fields
    return "", fields


def _extend(video_prompt: str, cover_prompt: str, fit) -> str:
    """A last draw's video prompt under the minimum, extended with the plan's own cover prompt (the opening frame it
    describes), or "" when even that stays under the minimum or over the budget."""
    extended = f"{video_prompt.rstrip()} Opening frame: {cover_prompt.strip()}"
    return extended if fit.long_enough(extended) and fit.fits(extended) else ""


def _plus_title(backend, messages: list[dict], the_plan: Plan, retrieval: Retrieval, temperature: float, seed: int,
                progress: Callable[[float, str], None] | None) -> tuple[Plan, list[dict], dict]:
    """PE+'s step after PE's plan (popcorn/llm/plus.py): title drafts in the same conversation, near-copies of the
    references dropped, the rest and PE's own title ranked by h. Returns (the plan with the chosen title, the drafts,
    the drafts' usage). A drafts answer that cannot be read leaves PE's title: PE+ never fails where PE succeeds."""
    if progress is not None:
        progress(0.95, f"drafting {plus.TITLE_DRAFTS} more titles")
    completion = backend.complete(plus.drafts_messages(messages, the_plan), json_schema=plus.drafts_schema(),
                                  max_tokens=plus.TITLE_DRAFTS * 40 + 40, temperature=temperature, seed=seed + 7)
    best, rows = plus.pick_title(the_plan, plus.read_drafts(completion.text), retrieval)
    usage = completion.usage or {}
    return best, rows, {k: usage[k] for k in ("prompt_tokens", "prompt_eval_tokens", "completion_tokens",
                                              "prompt_eval_s", "generation_s", "seconds") if k in usage}


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
    generator = get_generator(video)
    ok, reason = generator.available()
    if not ok:
        raise StageError(RENDER, f"video model {video!r} cannot run here: {reason}",
                         "pick another video model, or 'storyboard' for a preview")
    request, notes = generator.snap(RenderRequest(prompt=the_plan.video_prompt, seed=seed,
                                                            memory_mode=memory_mode, speed=speed))
    clip = generator.render(request, progress=lambda f, msg: progress(RENDER, f, msg))
    clip.notes = list(notes) + list(clip.notes)
    return clip


def compose(clip, the_plan: Plan, out_dir: Path, cover_model: str = "") -> dict:
    return compose_clip(clip, the_plan.title, Path(out_dir), cover_prompt=the_plan.cover_prompt,
                        cover_model=cover_model or None,
                        metadata={"title": the_plan.title, "video_prompt": the_plan.video_prompt})


def score(the_plan: Plan, video_path: str | None = None, *, category: str | None = None, category_source: str = "",
          rule: str = "same-inputs") -> tuple[dict, dict]:
    """h: the plan's predicted popularity under both judges, and the human-matched baseline for its query.

    Same inputs for every arm of a prompt (rule "same-inputs", popcorn/popularity/judges.py): `category` and its
    source come from score_category(), and the human-matched video from the query and that category alone. Rule
    "confounded" re-scores as before issue 23 (each arm's own category: PE's routed, Basic's inferred from the title)."""
    from popcorn.popularity import judges  # heavy (scikit-learn, scipy): the score step only

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
    and known to MicroLens, else the category routed from the query as typed with the run's router (a PE run's own
    routing when it came from the whole index and read no gloss: the same router on the same text gives the same
    answer; a gloss is the arm's own LLM's reading, so h would get another category for every LLM, and none for
    Basic)."""
    from popcorn.retrieval.corpus import load_corpus  # pandas: the score step only

    known = {c.casefold(): c for c in load_corpus().categories()}
    given = (settings.category or "").strip()
    if given and given.casefold() in known:
        return known[given.casefold()], "prompt file"
    routed = retrieval if retrieval is not None and retrieval.index == "full" and not retrieval.gloss else None
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
    from popcorn.popularity import rank_plans  # heavy (scikit-learn, scipy): only with several candidates

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


PRIMING_IDEA = "an idea"  # any idea: the fixed instructions a plan's prompt opens with are the same for all


def _prepare_llm_meanwhile(settings: Settings) -> None:
    """Start the LLM's own preparation on a thread while retrieval works beside it (on a new cache, embedding the
    routed categories' titles), instead of after it: a local model's GGUF assembled, verified and loaded, then the
    fixed instructions of this mode's prompt (for this video model's word range) evaluated or read from disk
    (`prime`; ~400 tokens, ~11 s of a first plan on a 2-core AVX2 machine, on its critical path when it waited for
    the references). The plan step takes the same locks, so it waits for this or finds it done; a failure here is
    left to the plan step, which does the same work again and reports it with its stage. Only backends with a `warm`
    step (local models) have anything to prepare."""
    try:
        backend = get_llm(settings.llm)
    except StageError:
        return
    warm, prime = getattr(backend, "warm", None), getattr(backend, "prime", None)
    if warm is None:
        return

    def prepare():
        try:
            warm()
            if prime is not None:
                fit = video_budget(settings.video)
                placeholder = Retrieval(query=PRIMING_IDEA, matched_categories=[], category_scores=[], references=[])
                prime(prompts.pe_messages(PRIMING_IDEA, placeholder, (fit.words_min, fit.words_max)))
        except Exception:  # reported by the plan step
            pass

    thread = threading.Thread(target=prepare, name="popcorn-llm-prepare", daemon=True)
    thread.start()


def write_plans(run: Run, progress: Progress = _quiet) -> Run:
    """The plan step: settings.candidates plans (candidate i drawn with seed + i) for the run's query and references.
    Fills run.plan and run.plan_info with the first; with several, run.candidates holds each as {"plan", "info"} until
    make_plans ranks them. Plain values in and out (run.to_dict() crosses a process boundary whole), so make_plans can
    have it run elsewhere (the studio: in a ZeroGPU slot when the LLM needs a GPU)."""
    s = run.settings
    written = []
    for i in range(s.candidates):
        progress(PLAN, i / s.candidates, f"plan {i + 1} of {s.candidates}")
        the_plan, info = write_plan(
            s.query, s.mode, s.llm, run.retrieval, seed=s.seed + i, max_tokens=s.max_tokens, temperature=s.temperature,
            video=s.video, attempts=s.attempts,
            progress=lambda f, msg, i=i: progress(PLAN, (i + f) / s.candidates, msg))
        written.append((the_plan, info))
        failed = len(info["attempts"]) - 1
        if failed:
            run.notes.append(f"plan {i + 1}: {failed} answer(s) drawn again ("
                             + "; ".join(t["problem"] for t in info["attempts"] if t.get("problem")) + ")")
    run.plan, run.plan_info = written[0]
    run.candidates = [{"plan": p.to_dict(), "info": info} for p, info in written] if len(written) > 1 else []
    return run


def make_plans(settings: Settings, progress: Progress = _quiet, run: Run | None = None, *, quick: bool = False,
               write: Callable[[Run, Progress], Run] = write_plans, gloss: bool = True) -> Run:
    """check -> retrieve -> plan (x N candidates, ranked by h when N > 1): the one plan path (the CLI, the studio, the
    batch call it). Fills and returns `run` (a new Run when none is given).

    `quick`: an interactive plan (see retrieve); while it is made, the studio's warm-up steps aside (foreground).
    `write`: where the plan step runs: write_plans here, or a caller's function that has it run elsewhere and fills
    `run` in place with what it returned (the studio's ZeroGPU slot); retrieval and ranking stay here. `gloss`: PE may
    ask the LLM here for an English reading of the idea (gloss_for); False where it cannot run here."""
    from popcorn.retrieval.index import foreground  # heavy (faiss), and needed only when a plan is made

    check(settings)
    run = run or Run(settings)
    if len(settings.query) > prompts.MAX_QUERY_CHARS:
        run.notes.append(f"the query was cut to {prompts.MAX_QUERY_CHARS} characters")
    with foreground() if quick else nullcontext():
        if settings.mode in REFERENCE_MODES:
            _prepare_llm_meanwhile(settings)
            with _Timer(run, RETRIEVE, progress):
                english = gloss_beside_retrieval(settings, run, gloss, quick)
                run.retrieval = retrieve(settings.query, settings.k, settings.router, quick=quick, gloss=english)
            run.notes += [n for n in (gloss_note(run.retrieval), quick_note(run.retrieval), unsure_note(run.retrieval))
                          if n]
        with _Timer(run, PLAN, progress):
            write(run, progress)
    if run.candidates:
        written = [(Plan.from_dict(c["plan"]), c["info"]) for c in run.candidates]
        with _Timer(run, SCORE, progress):
            run.candidates = rank([p for p, _ in written])
        best = next(i for i, (p, _) in enumerate(written) if p.to_dict() == run.candidates[0]["plan"])
        run.plan, run.plan_info = written[best]
    return run


def render_run(run: Run, out_dir: Path, progress: Progress = _quiet, with_score: bool = True) -> Run:
    """render -> compose -> score for a run that has a plan: the one render path (the CLI, the studio, a ZeroGPU slot
    and the batch call it); writes out_dir/video.mp4, cover.png, run.json. `with_score` False: the score step is left
    to score_run (the studio and the batch score outside the GPU slot, so a failing score never loses the video)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _Timer(run, RENDER, progress):
        clip = render(run.plan, run.settings.video, seed=run.settings.seed, memory_mode=run.settings.memory_mode,
                      speed=run.settings.speed, progress=progress)
    with _Timer(run, COMPOSE, progress):
        run.video = compose(clip, run.plan, out_dir, cover_model=run.settings.cover_model)
    if with_score:
        score_run(run, progress)
    write_run_json(run, out_dir)
    return run


def score_run(run: Run, progress: Progress = _quiet, rule: str = "same-inputs") -> Run:
    """score a run's plan (and its video, when rendered): fills run.score and run.baseline (see score)."""
    with _Timer(run, SCORE, progress):
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
