"""What the studio's buttons do, as plain functions (app.py only lays out widgets and wires them to these).

    plan_action(query, mode, k, llm, seed, candidates)           retrieve -> plan (x N, ranked) -> PlanOutput
    render_action(run_id, title, cover, video_prompt, video, seed) render -> compose -> score -> RenderOutput
    score_action(title, description, category)                   h alone -> ScoreOutput
    history(), load_run(run_id), pick_candidate(run_id, i), backend_choices(), cancel(key)

Values in and out are plain (str, int, dict, pandas DataFrame). Long actions take `progress`, any callable
`progress(fraction, desc=...)` (a gr.Progress fits), and report each pipeline stage by name. Every failure becomes a
StudioError whose text is "Stage <stage> failed: <message>. <hint>" -- never a traceback (that goes to the log).
Every run is kept in the SQLite store (popcorn/store.py) with its files under <home>/runs/<id>/.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import math
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pandas as pd

from popcorn import config, pipeline
from popcorn.store import Store
from popcorn.types import Plan, Retrieval, StageError

log = logging.getLogger("popcorn.studio")

MODE_CHOICES = [("PE (with MicroLens references)", "pe"), ("Basic (the idea alone)", "basic")]
K_CHOICES = [10, 50, 100]
MAX_CANDIDATES = 8

# example ideas: abstract and concrete, over several MicroLens categories (and one not in English)
EXAMPLES = [
    ("the quiet joy of a slow Sunday morning", "abstract"),
    ("courage to start over after failing", "abstract"),
    ("nostalgia for childhood summers at grandma's house", "abstract"),
    ("a golden retriever puppy sees the sea for the first time", "concrete"),
    ("15-second garlic butter noodles for a late-night snack", "concrete"),
    ("street basketball trick shot at sunset", "concrete"),
    ("day-to-night makeup transformation in one look", "concrete"),
    ("unboxing a tiny retro handheld game console", "concrete"),
    ("猫咪第一次看到雪", "concrete"),
]

REFERENCE_COLUMNS = ["label", "category", "comments", "similarity", "title"]
CANDIDATE_COLUMNS = ["rank", "predicted comments", "title", "video prompt"]
NEIGHBOUR_COLUMNS = ["title", "category", "comments", "similarity"]
HISTORY_COLUMNS = ["when", "run", "status", "mode", "LLM", "video", "title", "comments", "query"]
CHART_COLUMNS = ["video", "comments", "kind"]


class StudioError(Exception):
    """A failure the user can act on; str() is the message to show."""

    def __init__(self, message: str, stage: str = ""):
        super().__init__(message)
        self.stage = stage


class Cancelled(StageError):
    pass


def _sentence(text: str) -> str:
    text = " ".join(str(text or "").split()).rstrip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…)" else text + "."


def user_message(exc: StageError) -> str:
    """'Stage <stage> failed: <message>. <Hint>.'"""
    message = f"Stage {exc.stage} failed: {' '.join(str(exc.message).split()).rstrip('.')}."
    hint = _sentence(exc.hint)
    return f"{message} {hint}" if hint else message


# ------------------------------------------------------------------------------------------------------------ store


def apply_space_defaults(environ=None) -> dict:
    """On a Hugging Face Space with persistent storage (/data), keep runs and caches there unless told otherwise.

    Sets POPCORN_HOME=/data/popcorn and POPCORN_CACHE_DIR=/data/popcorn-cache when SPACE_ID is set, /data is a
    writable folder and the variables are unset; returns what it set.
    """
    import os

    environ = os.environ if environ is None else environ
    data = Path(environ.get("POPCORN_SPACE_STORAGE", "/data"))
    if not environ.get("SPACE_ID") or not data.is_dir() or not os.access(data, os.W_OK):
        return {}
    chosen = {}
    for name, folder in (("POPCORN_HOME", "popcorn"), ("POPCORN_CACHE_DIR", "popcorn-cache")):
        if not environ.get(name, "").strip():
            environ[name] = chosen[name] = str(data / folder)
    return chosen



_STORES: dict[Path, Store] = {}
_STORE_LOCK = threading.Lock()


def get_store() -> Store:
    """The store in config.home_dir() (POPCORN_HOME), opened and migrated once per folder."""
    home = config.home_dir()
    with _STORE_LOCK:
        if home not in _STORES:
            _STORES[home] = Store(home=home)
        return _STORES[home]


# ------------------------------------------------------------------------------------------------ progress, cancel

_CANCEL: dict[str, set[threading.Event]] = {}  # the running actions of each session (plan and render may overlap)
_CANCEL_LOCK = threading.Lock()
_WARM: set[str] = set()  # what this process has loaded once already (corpus/index, each LLM, predictor, generators)

Sink = Callable[..., object]  # sink(fraction, desc=...), e.g. gr.Progress


class StageProgress:
    """pipeline progress(stage, fraction, message) -> sink(overall fraction, desc='stage: message').

    The overall fraction spreads the action's stages evenly. A stage used for the first time in this process says what
    it is loading. When the cancel event is set, the next report raises Cancelled (the pipeline stops there).
    """

    def __init__(self, sink: Sink | None, stages: tuple[str, ...], cancel: threading.Event | None = None,
                 first_use: dict[str, str] | None = None):
        self.sink, self.stages, self.cancel = sink, tuple(stages), cancel
        self.first_use = first_use or {}

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(stage, "cancelled by the user", "press the button again to start over")
        fraction = min(1.0, max(0.0, float(fraction)))
        if stage in self.first_use and fraction < 1.0:
            message = f"{message} ({self.first_use[stage]})"
        i = self.stages.index(stage) if stage in self.stages else len(self.stages) - 1
        if self.sink is not None:
            self.sink((i + fraction) / max(1, len(self.stages)), desc=f"{stage}: {message}")


def cancel(key: str | None) -> str:
    """Ask every action running under `key` (a browser session) to stop at its next progress report."""
    with _CANCEL_LOCK:
        events = list(_CANCEL.get(str(key or ""), ()))
    if not events:
        return "Nothing to cancel."
    for event in events:
        event.set()
    return "Cancelling: the running stage stops at its next step."


@contextmanager
def _cancellable(key: str | None) -> Iterator[threading.Event]:
    """The cancel event of one action, findable under `key` while the action runs."""
    event, key = threading.Event(), str(key or "")
    if key:
        with _CANCEL_LOCK:
            _CANCEL.setdefault(key, set()).add(event)
    try:
        yield event
    finally:
        if key:
            with _CANCEL_LOCK:
                running = _CANCEL.get(key, set())
                running.discard(event)
                if not running:
                    _CANCEL.pop(key, None)


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


# ------------------------------------------------------------------------------------------------------------ backends


def _choices(rows: list[dict]) -> list[tuple[str, str]]:
    out = []
    for row in rows:
        if row["available"]:
            out.append((row["name"], row["name"]))
        else:
            reason = " ".join(str(row.get("reason", "")).split())
            out.append((f"{row['name']} (unavailable: {reason[:90]})", row["name"]))
    return out


def _default(rows: list[dict], preferred: str) -> str | None:
    names = [r["name"] for r in rows if r["available"]]
    return preferred if preferred in names else (names[0] if names else (rows[0]["name"] if rows else None))


def backend_choices() -> dict:
    """Dropdown choices for every registered LLM and video generator; an unusable one is labelled with why.

    {"llm": [(label, name)], "llm_default": name, "video": [...], "video_default": name}
    """
    from popcorn.llm import default_llm, list_backends
    from popcorn.video import list_generators

    llms, videos = list_backends(), list_generators()
    return {
        "llm": _choices(llms), "llm_default": _default(llms, default_llm()),
        "video": _choices(videos), "video_default": _default(videos, "storyboard"),
    }


def backend_info(kind: str, name: str) -> str:
    """One markdown line about the chosen backend (a typed one, e.g. local:/path.gguf, too): what it is, and why it
    cannot run here when it cannot."""
    from popcorn.llm import get_llm
    from popcorn.video import get_generator

    try:
        backend = get_llm(name) if kind == "llm" else get_generator(name)
        ok, reason = backend.available()
    except StageError as exc:
        return f"⚠️ unknown backend {html.escape(str(name))}: {html.escape(exc.message)}"
    except Exception as exc:  # an availability check that broke: shown as unavailable, with why
        ok, reason = False, f"{type(exc).__name__}: {exc}"
    text = html.escape(getattr(backend, "description", "") or str(name))
    return f"✅ {text}" if ok else f"⚠️ {text} — **cannot run here:** {html.escape(str(reason))}"


# ------------------------------------------------------------------------------------------------------------ tables


def references_table(retrieval: dict | None) -> pd.DataFrame:
    refs = (retrieval or {}).get("references") or []
    rows = [[r["label"], r["category"], int(r["comments"]), round(float(r["similarity"]), 3), r["title"]] for r in refs]
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def candidates_table(candidates: list[dict]) -> pd.DataFrame:
    rows = []
    for i, c in enumerate(candidates or [], 1):
        rows.append([i, _int(c.get("score", {}).get("predicted_comments")), c["plan"]["title"],
                     c["plan"]["video_prompt"]])
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def neighbours_table(score: dict | None) -> pd.DataFrame:
    rows = []
    for n in (score or {}).get("neighbours") or []:
        rows.append([n.get("title", ""), n.get("category", ""), _int(n.get("comments")),
                     round(float(n.get("similarity", 0.0) or 0.0), 3)])
    return pd.DataFrame(rows, columns=NEIGHBOUR_COLUMNS)


def _int(value) -> int | None:
    try:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(round(float(value)))
    except (TypeError, ValueError):
        return None


def why_markdown(retrieval: dict | None, notes: list[str] | None = None, mode: str = "pe") -> str:
    """Why these categories (the router's top candidates and scores), and any notes about the input."""
    lines = []
    if retrieval:
        matched = retrieval.get("matched_categories") or []
        scores = retrieval.get("category_scores") or []
        lines.append("**Matched categories:** " + (", ".join(html.escape(c) for c in matched) or "none"))
        if scores:
            lines.append("Router candidates: " + " · ".join(
                f"{html.escape(s['category'])} {float(s['score']):.2f}" for s in scores))
        refs = retrieval.get("references") or []
        popular = sum(1 for r in refs if r.get("label") == "popular")
        lines.append(f"{popular} popular and {len(refs) - popular} unpopular references were shown to the LLM.")
    elif mode == "basic":
        lines.append("Basic mode: the LLM saw the idea alone, no references.")
    for note in notes or []:
        lines.append(f"ℹ️ {html.escape(note)}")
    return "\n\n".join(lines)


def reasoning_markdown(plan: dict | None) -> str:
    text = (plan or {}).get("reasoning", "").strip()
    return html.escape(text) if text else "_The model gave no separate reasoning._"


# ------------------------------------------------------------------------------------------------------------ score


def _baseline_videos(baseline: dict | None) -> list[dict]:
    """The baseline's matched MicroLens videos (popcorn.popularity.human_baseline's "videos")."""
    return list((baseline or {}).get("videos") or [])


def chart_frame(score: dict | None, baseline: dict | None) -> pd.DataFrame:
    """Bars for the card's chart: yours (predicted) beside the baseline (actual and predicted)."""
    rows = []
    predicted = _int((score or {}).get("predicted_comments"))
    if predicted is not None:
        rows.append(["Your video", predicted, "predicted"])
    for video in _baseline_videos(baseline)[:1]:
        actual = _int(video.get("comments"))
        guess = _int(video.get("predicted_comments"))
        if guess is not None:
            rows.append(["Human baseline", guess, "predicted"])
        if actual is not None:
            rows.append(["Human baseline", actual, "actual"])
    return pd.DataFrame(rows, columns=CHART_COLUMNS)


def _ordinal(value) -> str:
    """A percentile (0-100) as '87th', '1st', '92nd'."""
    n = _int(value)
    if n is None:
        return "?"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _number(value) -> str:
    n = _int(value)
    return "?" if n is None else f"{n:,}"


def popularity_card(score: dict | None, baseline: dict | None, category: str | None = None) -> str:
    """HTML: predicted comments and percentiles, beside the human-matched MicroLens video (actual and predicted)."""
    score = score or {}
    if not score:
        return "<div class='pc-card pc-empty'>Render a plan to see its predicted popularity.</div>"
    cat = category or score.get("category") or ""
    in_cat = (f"<div class='pc-sub'>{_ordinal(score.get('percentile_category'))} percentile in "
              f"{html.escape(cat)}</div>" if score.get("percentile_category") is not None and cat else "")
    yours = (
        "<div class='pc-col pc-yours'><div class='pc-label'>Your video · predicted</div>"
        f"<div class='pc-big'>{_number(score.get('predicted_comments'))}</div><div class='pc-sub'>comments</div>"
        f"<div class='pc-sub'>{_ordinal(score.get('percentile_overall'))} percentile of MicroLens</div>{in_cat}</div>"
    )
    videos = _baseline_videos(baseline)
    if videos:
        v = videos[0]
        actual = v.get("comments")
        theirs = (
            "<div class='pc-col pc-baseline'><div class='pc-label'>Human-matched baseline</div>"
            f"<div class='pc-title'>“{html.escape(str(v.get('title', '')))}”</div>"
            f"<div class='pc-sub'>{html.escape(str(v.get('category', '') or ''))}</div>"
            f"<div class='pc-pair'><span><b>{_number(actual)}</b> actual</span>"
            f"<span><b>{_number(v.get('predicted_comments'))}</b> predicted comments</span></div></div>"
        )
    else:
        theirs = "<div class='pc-col pc-baseline'><div class='pc-label'>Human-matched baseline</div>none found</div>"
    return f"<div class='pc-card'>{yours}{theirs}{chart_html(chart_frame(score, baseline))}</div>"


def chart_html(chart: pd.DataFrame) -> str:
    """Horizontal bars on a log scale (comment counts span 0 to 10^5): one per row of chart_frame()."""
    if chart.empty:
        return ""
    top = math.log1p(max(1, int(chart["comments"].max())))
    bars = []
    for video, comments, kind in chart.itertuples(index=False):
        width = 2 + 98 * math.log1p(max(0, int(comments))) / top
        who = "yours" if video == "Your video" else kind
        bars.append(f"<div class='pc-bar-row'><span class='pc-bar-label'>{html.escape(video)} ({kind})</span>"
                    f"<span class='pc-bar-track'><span class='pc-bar pc-bar-{who}' style='width:{width:.0f}%'></span>"
                    f"</span><span class='pc-bar-value'>{int(comments):,}</span></div>")
    return f"<div class='pc-chart'><div class='pc-label'>Comments (log scale)</div>{''.join(bars)}</div>"


# ------------------------------------------------------------------------------------------------------------ actions


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


def _mode(mode: str) -> str:
    value = str(mode or "pe").strip().lower()
    return {"prompt enhancement": "pe"}.get(value, value.split(":")[0].strip())


def _first_use(stages: dict[str, str]) -> dict[str, str]:
    return {stage: note for stage, note in stages.items() if stage + ":" + note not in _WARM}


def _warm(notes: dict[str, str]) -> None:
    _WARM.update(stage + ":" + note for stage, note in notes.items())


def plan_action(query: str, mode: str = "pe", k: int = 10, llm: str = "local", seed: int = 0, candidates: int = 1,
                *, progress: Sink | None = None, cancel_key: str | None = None) -> PlanOutput:
    """retrieve (PE) -> plan, N candidates ranked by predicted popularity; the run is stored as 'planned'."""
    store = get_store()
    query = "" if query is None else str(query)
    try:
        settings = pipeline.Settings(query=query, mode=_mode(mode), llm=str(llm or "local"), k=int(k or 10),
                                     seed=int(seed or 0), candidates=int(candidates or 1))
    except (TypeError, ValueError) as exc:
        message = f"Stage input failed: {exc}. Use whole numbers for K, seed and candidates."
        raise StudioError(message, "input") from None
    try:
        settings.check()
    except StageError as exc:
        raise StudioError(user_message(exc), exc.stage) from None
    run = pipeline.Run(settings)
    stages = (("retrieve",) if settings.mode == "pe" else ()) + ("plan",) + (("score",) if settings.candidates > 1
                                                                              else ())
    notes = _first_use({"retrieve": "first use: loading the MicroLens corpus, embeddings and index",
                        "plan": f"first use: loading the LLM {settings.llm}",
                        "score": "first use: loading the popularity predictor"})
    store.save_run(run.to_dict(), status="planning")
    with _cancellable(cancel_key) as cancel_event, _errors(store, run):
        pipeline.make_plans(settings, StageProgress(progress, stages, cancel_event, notes), run=run)
    _warm({s: n for s, n in notes.items() if s in stages})
    record = run.to_dict()
    pipeline.write_run_json(run, store.run_dir(run.id))
    store.save_run(record, status="planned")
    store.add_artifact(run.id, "run_json", store.run_dir(run.id) / "run.json")
    return _plan_output(record)


def _plan_output(record: dict) -> PlanOutput:
    plan = record.get("plan") or {}
    return PlanOutput(
        title=plan.get("title", ""), cover_prompt=plan.get("cover_prompt", ""),
        video_prompt=plan.get("video_prompt", ""), references=references_table(record.get("retrieval")),
        reasoning=reasoning_markdown(plan), candidates=candidates_table(record.get("candidates")),
        run_id=record["id"], why=why_markdown(record.get("retrieval"), record.get("notes"),
                                              (record.get("settings") or {}).get("mode", "pe")),
    )


def pick_candidate(run_id: str, index: int) -> tuple[str, str, str]:
    """The plan fields of candidate `index` (0 = best) of a stored run."""
    record = get_store().get_run(str(run_id or ""))
    candidates = (record or {}).get("candidates") or []
    if not 0 <= int(index) < len(candidates):
        raise StudioError(f"Stage input failed: run {run_id!r} has no candidate {int(index) + 1}. Press Plan first.",
                          "input")
    plan = candidates[int(index)]["plan"]
    return plan["title"], plan["cover_prompt"], plan["video_prompt"]


def _settings_from_dict(d: dict) -> pipeline.Settings:
    known = {f.name for f in dataclasses.fields(pipeline.Settings)}
    return pipeline.Settings(**{k: v for k, v in d.items() if k in known})


def _edited_run(run_id: str, title: str, cover_prompt: str, video_prompt: str, video_model: str,
                seed: int) -> tuple[pipeline.Run, list[str]]:
    """The run to render: the stored run with the edited plan (a copy under a new id if it was rendered already),
    or, with no run id, a new run of the given plan alone."""
    notes = []
    title = " ".join(str(title or "").split())
    if not title:
        raise StudioError("Stage input failed: the title is empty. Write a title (at most 50 characters) or press "
                          "Plan.", "input")
    if not " ".join(str(video_prompt or "").split()):
        raise StudioError("Stage input failed: the video prompt is empty. Describe the ~3 s scene or press Plan.",
                          "input")
    from popcorn.llm.parse import TITLE_LIMIT, shorten_title

    if len(title) > TITLE_LIMIT:
        title = shorten_title(title, TITLE_LIMIT)
        notes.append(f"the title was cut to {TITLE_LIMIT} characters: {title}")
    store = get_store()
    record = store.get_run(str(run_id)) if run_id else None
    if run_id and record is None:
        raise StudioError(f"Stage input failed: run {run_id!r} is not in this studio's history. Press Plan, or clear "
                          "the run id to render your own plan.", "input")
    if record and record.get("plan"):
        settings = _settings_from_dict(record["settings"])
        plan = Plan.from_dict(record["plan"])
        retrieval = Retrieval.from_dict(record["retrieval"]) if record.get("retrieval") else None
        candidates = record.get("candidates") or []
    else:
        settings = pipeline.Settings(query=title, mode="basic", llm="")
        plan, retrieval, candidates = Plan(title="", cover_prompt="", video_prompt="", query=title), None, []
    settings.video, settings.seed = str(video_model or "storyboard"), int(seed or 0)
    plan = dataclasses.replace(plan, title=title, cover_prompt=str(cover_prompt or ""), video_prompt=str(video_prompt))
    run = pipeline.Run(settings, retrieval=retrieval, plan=plan, candidates=candidates, notes=notes)
    if record and not record.get("video") and record["status"] in ("planned", "failed", "cancelled"):
        run.id = record["id"]  # first render of this plan: same run; a re-render keeps the old one in the history
    return run, notes


def render_action(run_id: str, title: str, cover_prompt: str, video_prompt: str, video_model: str = "storyboard",
                  seed: int = 0, *, progress: Sink | None = None, cancel_key: str | None = None) -> RenderOutput:
    """render -> compose -> score the (edited) plan; files go to <home>/runs/<id>/, the run is stored as 'done'."""
    run, notes = _edited_run(run_id, title, cover_prompt, video_prompt, video_model, seed)
    store = get_store()
    first = _first_use({"render": f"first use: loading the video model {run.settings.video}",
                        "score": "first use: loading the popularity predictor"})
    store.save_run(run.to_dict(), status="rendering")
    out_dir = store.run_dir(run.id)
    error = ""
    with _cancellable(cancel_key) as cancel_event:
        reporter = StageProgress(progress, ("render", "compose", "score"), cancel_event, first)
        with _errors(store, run):
            pipeline.render_run(run, out_dir, reporter, with_score=False)
        try:  # the video is made: a failing score is reported beside it, not instead of it
            pipeline.score_run(run, reporter)
        except Cancelled:
            run.notes.append("scoring was cancelled")
        except StageError as exc:
            error = user_message(exc)
            log.warning("run %s: %s", run.id, error)
    _warm({stage: note for stage, note in first.items() if stage != "score" or run.score})
    pipeline.write_run_json(run, out_dir)
    record = run.to_dict()
    store.save_run(record, status="done", error=error)
    for kind in ("video", "cover", "metadata"):
        if run.video.get(kind):
            store.add_artifact(run.id, kind, run.video[kind])
    store.add_artifact(run.id, "run_json", out_dir / "run.json")
    return _render_output(store.get_run(run.id))


def _render_output(record: dict) -> RenderOutput:
    video = record.get("video") or {}
    category = ((record.get("plan") or {}).get("matched_categories") or [None])[0]
    artifacts = record.get("artifacts") or {}  # the store's list, each checked to exist
    files = [artifacts[kind] for kind in ("run_json", "video") if kind in artifacts]
    lines = []
    if video.get("is_preview"):
        lines.append("🎞️ **Storyboard preview** — not a model render (no video model could run here).")
    lines += [f"ℹ️ {html.escape(str(n))}" for n in (record.get("notes") or []) + (video.get("notes") or [])]
    timings = record.get("timings") or {}
    if timings:
        lines.append("⏱️ " + " · ".join(f"{stage} {seconds:.1f} s" for stage, seconds in timings.items()))
    card = popularity_card(record.get("score"), record.get("baseline"), category)
    if record.get("error"):
        card = f"<div class='pc-card pc-error'>⚠️ {html.escape(record['error'])}</div>"
    return RenderOutput(
        video=video.get("video", ""), cover=video.get("cover", ""), card=card,
        details={"score": record.get("score") or {}, "baseline": record.get("baseline") or {},
                 "timings": record.get("timings") or {}},
        neighbours=neighbours_table(record.get("score")), files=files, run_id=record["id"],
        notes="\n\n".join(lines),
    )


def score_action(title: str, description: str = "", category: str = "") -> ScoreOutput:
    """h alone: the predicted popularity of a title (+ description, category) and its human-matched baseline."""
    title = " ".join(str(title or "").split())
    if not title:
        raise StudioError("Stage input failed: the title is empty. Give the title to score.", "input")
    plan = Plan(title=title, cover_prompt="", video_prompt=str(description or ""), query=title,
                matched_categories=[category] if category else [])
    try:
        score, baseline = pipeline.score(plan)
    except StageError as exc:
        raise StudioError(user_message(exc), exc.stage) from None
    except Exception as exc:
        log.exception("score failed")
        raise StudioError(f"Stage score failed: {type(exc).__name__}: {exc}. See the server log.", "score") from None
    return ScoreOutput(score=score, baseline=baseline, card=popularity_card(score, baseline, category or None))


# ------------------------------------------------------------------------------------------------------------ history


def history(limit: int = 50) -> pd.DataFrame:
    rows = []
    for r in get_store().list_runs(limit):
        s, plan = r.get("settings") or {}, r.get("plan") or {}
        query = " ".join(str(r.get("query", "")).split())
        rows.append([time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])), r["id"], r["status"],
                     s.get("mode", ""), s.get("llm", ""), s.get("video", "") if r.get("video") else "",
                     plan.get("title", ""), _int((r.get("score") or {}).get("predicted_comments")),
                     query if len(query) <= 80 else query[:79] + "…"])
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


class LoadedRun(NamedTuple):
    query: str
    plan: PlanOutput
    render: RenderOutput | None
    status: str
    error: str


def load_run(run_id: str) -> LoadedRun:
    """Everything the panels show for a stored run (render is None when it was never rendered)."""
    record = get_store().get_run(str(run_id or ""))
    if record is None:
        raise StudioError(f"Stage history failed: no run {run_id!r} in this studio. Pick one from the history table.",
                          "history")
    rendered = _render_output(record) if (record.get("video") or {}).get("video") else None
    return LoadedRun(record.get("query", ""), _plan_output(record), rendered, record["status"], record["error"])
