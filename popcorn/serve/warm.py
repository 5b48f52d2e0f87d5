"""Warm-up: load or build, in the background, everything the studio's first click needs, so it finds it ready.

    thread = warm.start_background()     # returns at once (idempotent); after=warm.after_first_page(...): the
                                         # studio's, which starts warming once its page has gone out
    warm.status()                        # {"state": "running", "steps": [{"name", "state", "seconds", "detail"}, ...]}
    warm.status_line()                   # one markdown line for the page: "Warming up: corpus ✓ · index … · ..."

The steps, in the order a first visitor needs them (a PE plan first, then a score):

    corpus      the MicroLens table
    prebuilt    the prebuilt cache of this corpus from POPCORN_PREBUILT_REPO, verified (popcorn/serve/prebuilt.py); skipped
                offline or when none is set
    index       title embeddings (popcorn.retrieval.index.fill_index: in chunks, pausing while a plan is being made, which
                meanwhile takes the quick path), then FAISS indexes, routers, the ONNX query encoder
                (popcorn.retrieval.index.get_retriever)
    llm         the default LLM's model file (the GGUF assembled and verified) and the model loaded (llama.cpp)
    predictor   the popularity predictor, loaded or trained, and one score (popcorn.popularity.get_predictor); this
                step runs at a lower CPU priority so that a plan being written meanwhile keeps the cores

Every step goes through the same process-wide function a click calls, guarded by that function's lock: a click that
arrives mid-step waits for the step instead of doing the work twice. A failing step is recorded (with the StageError's
text) and the next step still runs; the click will then show the error itself.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from popcorn import config

log = logging.getLogger("popcorn.serve.warm")

STEPS = ("corpus", "prebuilt", "index", "llm", "predictor")
LABELS = {"corpus": "corpus", "prebuilt": "prebuilt cache", "index": "index", "llm": "LLM", "predictor": "predictor"}
PREDICTOR_NICENESS = 10  # added to the warm thread's nice value for the predictor step (Linux: per thread)


@dataclass
class Step:
    name: str
    state: str = "waiting"  # waiting | running | done | skipped | failed
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Warmup:
    llm: str | None = None  # the LLM to load; None = the default (POPCORN_LLM or the embedded model)
    only: tuple[str, ...] = STEPS  # a subset of STEPS (kept in STEPS' order)
    steps: list[Step] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    armed: bool = False  # start_background made it: its thread may still wait for its start (after=)

    def __post_init__(self):
        unknown = set(self.only) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown warm-up steps {sorted(unknown)}; known: {STEPS}")
        self.steps = self.steps or [Step(name) for name in STEPS if name in self.only]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    @property
    def state(self) -> str:
        if not self.started and not self.armed:
            return "idle"
        return "done" if self.finished else "running"

    def run(self) -> None:
        """Every step in order (the background thread's body; also callable directly)."""
        self.started = time.time()
        actions: dict[str, Callable[[], str]] = {"corpus": _corpus, "prebuilt": _prebuilt, "index": _index,
                                                  "llm": lambda: _llm(self.llm), "predictor": _predictor}
        for step in self.steps:
            step.state = "running"
            began = time.perf_counter()
            try:
                detail = actions[step.name]()
                step.state, step.detail = ("skipped", detail[len("skipped: "):]) if detail.startswith(
                    "skipped: ") else ("done", detail)
            except Exception as exc:  # recorded, not raised: the click that needs it reports it
                step.state = "failed"
                step.detail = str(exc) if getattr(exc, "stage", None) else f"{type(exc).__name__}: {exc}"
                log.warning("warm-up step %s failed: %s", step.name, step.detail)
            step.seconds = round(time.perf_counter() - began, 2)
        self.finished = time.time()

    def to_dict(self) -> dict:
        return {"state": self.state, "steps": [asdict(s) for s in self.steps],
                "seconds": round((self.finished or time.time()) - self.started, 1) if self.started else 0.0}


# ---------------------------------------------------------------------------------------------------------- steps


def _corpus() -> str:
    from popcorn.retrieval.corpus import load_corpus

    corpus = load_corpus()
    return f"{len(corpus)} videos"


def _prebuilt() -> str:
    from popcorn.serve import prebuilt
    from popcorn.retrieval.corpus import load_corpus

    if not config.prebuilt_repo():
        return "skipped: no POPCORN_PREBUILT_REPO"
    return "installed" if prebuilt.install(load_corpus(), say=log.info) else "skipped: not available; built locally"


def _index() -> str:
    from popcorn.retrieval import index as retrieval
    from popcorn.retrieval.corpus import load_corpus
    from popcorn.retrieval.embed import get_embedder

    corpus, embedder = load_corpus(), get_embedder()
    whole = retrieval.ReferenceIndex.folder_for(corpus, embedder, retrieval.DEFAULT_RATIO) / "meta.json"
    if config.first_plan() == "quick" and not whole.exists():
        retrieval.fill_index(corpus, embedder)  # in chunks, stepping aside while a first plan is being made
    retriever = retrieval.get_retriever()
    return f"{len(retriever.index.cuts)} categories, {retriever.embedder.name}"


def _llm(name: str | None) -> str:
    from popcorn.llm import get_llm

    backend = get_llm(name)
    ok, reason = backend.available()
    if not ok:
        return f"skipped: {backend.name} cannot run here ({reason})"
    warm = getattr(backend, "warm", None)
    if not callable(warm):  # an API backend: nothing to load
        return f"skipped: {backend.name} has nothing to load"
    return warm() or backend.name  # the backend's own first steps (llama.cpp: the GGUF assembled, verified, loaded)


def _predictor() -> str:
    _lower_priority(PREDICTOR_NICENESS)
    from popcorn.popularity import get_predictor

    predictor = get_predictor()
    predictor.score_batch([{"title": "warm-up"}])  # first-call imports and lazy state, off the click's path
    return f"{predictor.info.get('n_train', '?')} videos"


def _lower_priority(amount: int) -> None:
    """Raise this thread's nice value (Linux schedules threads separately); elsewhere, or if refused, do nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + amount))
    except (AttributeError, OSError):
        pass


# ---------------------------------------------------------------------------------------------------------- API

_LOCK = threading.Lock()
_CURRENT: Warmup | None = None
_THREAD: threading.Thread | None = None


def start_background(llm: str | None = None, only: tuple[str, ...] = STEPS,
                     after: Callable[[], None] | None = None) -> threading.Thread | None:
    """Start warming in a daemon thread (once per process; later calls return the same thread). None when switched
    off by POPCORN_WARM=0. `after`: the thread calls it first and warms when it returns (after_first_page); the
    warm-up counts as running (every step waiting) from this call, so a page asking meanwhile shows it coming."""
    global _CURRENT, _THREAD
    if not config.warm_enabled():
        return None
    with _LOCK:
        if _THREAD is None:
            _CURRENT = Warmup(llm=llm, only=tuple(only), armed=True)
            warmup = _CURRENT

            def body() -> None:
                if after is not None:
                    after()
                warmup.run()

            _THREAD = threading.Thread(target=body, name="popcorn-warm", daemon=True)
            _THREAD.start()
        return _THREAD


PAGE_GRACE_S = 2.0  # the longest a warm-up waits for the page's first visitor once the server listens
SERVER_WAIT_S = 60.0  # the longest it waits for the server to listen at all (then it starts anyway)
_PAGE_SERVED = threading.Event()


def page_served() -> None:
    """The studio's page went out (popcorn.ui.guard calls it once): a warm-up waiting for it starts."""
    _PAGE_SERVED.set()


def after_first_page(listening: Callable[[], bool], grace_s: float = PAGE_GRACE_S,
                     poll_s: float = 0.02) -> Callable[[], None]:
    """A gate for start_background(after=...): returns once the server listens (`listening()`) and then its page has
    gone out (page_served) or `grace_s` have passed. On a 2-core machine the warm-up's first steps (pandas reading
    the corpus, imports) take the GIL from the server: started before uvicorn, they held the first page back by
    ~0.6 s (bench/RESULTS.md, "The studio's page"); a plan asked meanwhile does not wait for them (it loads what
    it needs itself)."""
    def wait() -> None:
        deadline = time.monotonic() + SERVER_WAIT_S
        while not listening() and time.monotonic() < deadline:
            time.sleep(poll_s)
        _PAGE_SERVED.wait(grace_s)

    return wait


def status() -> dict:
    """{"state": idle|running|done, "seconds", "steps": [{"name", "state", "seconds", "detail"}]} (a copy)."""
    with _LOCK:
        return _CURRENT.to_dict() if _CURRENT else {"state": "idle", "seconds": 0.0, "steps": []}


_MARKS = {"waiting": "·", "running": "…", "done": "✓", "skipped": "–", "failed": "✗"}


def status_line() -> str:
    """One line for the page: what is ready, what is loading, what failed."""
    current = status()
    if current["state"] == "idle":
        return ""
    parts = [f"{LABELS[s['name']]} {_MARKS[s['state']]}" for s in current["steps"]]
    failed = [s for s in current["steps"] if s["state"] == "failed"]
    head = "Ready" if current["state"] == "done" and not failed else (
        "Warm-up finished with errors" if current["state"] == "done" else "Warming up")
    line = f"{head} ({current['seconds']:.0f} s): " + " · ".join(parts)
    if failed:
        line += " — " + "; ".join(f"{LABELS[s['name']]}: {s['detail']}" for s in failed)
    return line


def _reset_for_tests() -> None:
    global _CURRENT, _THREAD
    with _LOCK:
        _CURRENT, _THREAD = None, None
    _PAGE_SERVED.clear()
