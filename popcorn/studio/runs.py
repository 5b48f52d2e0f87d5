"""The studio's runs: the store, run ids, keeping a run, a visitor's history, and opening a run (only one's own, or any
as owner).

Run ids are 128-bit random (unguessable); each run records the visitor who made it (popcorn.serve.access.visitor_id).
Runs made on the command line (`popcorn plan` / `popcorn run`) go to the same store under the visitor TERMINAL: a
studio that is not public (this machine only) shows them to whoever uses it, a public one only to its owner.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import pandas as pd

from popcorn import config, pipeline
from popcorn.serve import access
from popcorn.store import Store
from popcorn.studio.errors import StudioError
from popcorn.studio.views import HISTORY_COLUMNS, as_int

TERMINAL = "terminal"  # the visitor of runs made on the command line (no visitor id has this form)
ARTIFACTS = ("video", "cover", "metadata")  # the files of run.video that are recorded with the run

_STORES: dict[Path, Store] = {}
_STORE_LOCK = threading.Lock()


def new_run_id() -> str:
    """<UTC date>-<128 random bits, hex>: sortable by day, not guessable."""
    return time.strftime("%Y%m%d-", time.gmtime()) + secrets.token_hex(16)


def get_store() -> Store:
    """The store in config.home_dir() (POPCORN_HOME), opened and migrated once per folder."""
    home = config.home_dir()
    with _STORE_LOCK:
        if home not in _STORES:
            _STORES[home] = Store(home=home)
        return _STORES[home]


def keep_run(store: Store, run: pipeline.Run, status: str, error: str = "", visitor: str | None = None) -> dict:
    """Store a run: its run.json in its folder (<home>/runs/<id>/), its row, and its files as artifacts; returns the
    stored record. `visitor` is recorded when the run is first saved."""
    folder = store.run_dir(run.id)
    pipeline.write_run_json(run, folder)
    store.save_run(run.to_dict(), status=status, error=error, visitor=visitor)
    for kind in ARTIFACTS:
        if run.video.get(kind):
            store.add_artifact(run.id, kind, run.video[kind])
    store.add_artifact(run.id, "run_json", folder / "run.json")
    return store.get_run(run.id)


def run_to_render(record: dict | None, plan: pipeline.Plan, settings: pipeline.Settings, notes: list[str] = (),
                  plan_info: dict | None = None) -> pipeline.Run:
    """The run that renders `plan`: the stored run `record` with this plan (its settings, references, candidates and
    how its plan was written kept; under the same id while it has no video, else a new run, so the rendered one stays
    in the history as it was), or, with no stored plan, a new run of `settings` and the plan alone (`plan_info`: how
    that plan was written, when known)."""
    if record and record.get("plan"):
        run = pipeline.Run.from_dict(record)
        edited = [name.replace("_", " ") for name in ("title", "cover_prompt", "video_prompt")
                  if getattr(plan, name) != record["plan"].get(name)]
        run.notes = [n for n in run.notes if not n.startswith(("the title was cut", "edited by hand"))] + list(notes)
        if edited:
            run.notes.append("edited by hand before rendering: " + ", ".join(edited))
        run.video, run.score, run.baseline = {}, {}, {}
        run.timings = {k: v for k, v in run.timings.items() if k in pipeline.plan_steps(run.settings)}
        if record.get("video") or record.get("status") not in ("planned", "failed", "cancelled"):
            run.id = new_run_id()
    else:
        run = pipeline.Run(settings, id=new_run_id(), notes=list(notes), plan_info=dict(plan_info or {}))
    run.plan = plan
    return run


def apply_space_defaults(environ=None) -> dict:
    """On a Hugging Face Space with persistent storage (/data), keep runs and caches there unless told otherwise.

    Sets POPCORN_HOME=/data/popcorn and POPCORN_CACHE_DIR=/data/popcorn-cache when SPACE_ID is set, /data is a
    writable folder and the variables are unset; returns what it set.
    """
    environ = os.environ if environ is None else environ
    data = Path(environ.get("POPCORN_SPACE_STORAGE", "/data"))
    if not environ.get("SPACE_ID") or not data.is_dir() or not os.access(data, os.W_OK):
        return {}
    chosen = {}
    for name, folder in (("POPCORN_HOME", "popcorn"), ("POPCORN_CACHE_DIR", "popcorn-cache")):
        if not environ.get(name, "").strip():
            environ[name] = chosen[name] = str(data / folder)
    return chosen


def _shown_to(visitor: str) -> list[str] | None:
    """The makers whose runs `visitor` sees: None for every run (the owner)."""
    if access.is_owner(visitor):
        return None
    if not visitor:
        return []
    return [visitor] + ([] if access.public() else [TERMINAL])


def visible_run(run_id: str, visitor: str, stage: str = "history") -> dict:
    """The stored run `run_id` if `visitor` may see it; otherwise the same refusal whether it exists or not."""
    run_id = str(run_id or "").strip()
    record = get_store().get_run(run_id) if run_id and len(run_id) <= access.LIMITS["run_id"] else None
    shown = _shown_to(visitor)
    if record is None or (shown is not None and record.get("visitor") not in shown):
        raise StudioError(f"Stage {stage} failed: no run {run_id[:80]!r} in your history. Pick one from the History "
                          "tab, or press Plan.", stage)
    return record


def history(visitor: str, limit: int = 50) -> pd.DataFrame:
    """The visitor's runs, newest first (every run for the owner; the command line's too on a studio that is not
    public)."""
    shown = _shown_to(visitor)
    if shown == []:
        return pd.DataFrame([], columns=HISTORY_COLUMNS)
    rows = []
    for r in get_store().list_runs(limit, visitor=shown):
        s, plan = r.get("settings") or {}, r.get("plan") or {}
        query = " ".join(str(r.get("query", "")).split())
        rows.append({"title": plan.get("title", ""), "when": time.strftime("%Y-%m-%d %H:%M",
                                                                          time.localtime(r["created"])),
                     "status": r["status"], "comments": as_int((r.get("score") or {}).get("predicted_comments")),
                     "mode": s.get("mode", ""), "LLM": s.get("llm", ""),
                     "video": s.get("video", "") if r.get("video") else "",
                     "query": query if len(query) <= 80 else query[:79] + "…", "run": r["id"]})
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def pick_candidate(run_id: str, index: int, visitor: str) -> tuple[str, str, str]:
    """The plan fields of candidate `index` (0 = best) of one of the visitor's runs."""
    record = visible_run(run_id, visitor, "input")
    candidates = record.get("candidates") or []
    if not 0 <= int(index) < len(candidates):
        raise StudioError(f"Stage input failed: run {run_id!r} has no candidate {int(index) + 1}. Press Plan first.",
                          "input")
    plan = candidates[int(index)]["plan"]
    return plan["title"], plan["cover_prompt"], plan["video_prompt"]
