"""The studio's runs: the store, run ids, a visitor's history, and opening a run (only one's own, or any as owner).

Run ids are 128-bit random (unguessable); each run records the visitor who made it (popcorn.serve.access.visitor_id).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from pathlib import Path

import pandas as pd

from popcorn import config
from popcorn.serve import access
from popcorn.store import Store
from popcorn.studio.errors import StudioError
from popcorn.studio.views import HISTORY_COLUMNS, as_int

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


def visible_run(run_id: str, visitor: str, stage: str = "history") -> dict:
    """The stored run `run_id` if `visitor` may see it; otherwise the same refusal whether it exists or not."""
    run_id = str(run_id or "").strip()
    record = get_store().get_run(run_id) if run_id and len(run_id) <= access.LIMITS["run_id"] else None
    if record is None or not access.may_see(visitor, record.get("visitor")):
        raise StudioError(f"Stage {stage} failed: no run {run_id[:80]!r} in your history. Pick one from the History "
                          "tab, or press Plan.", stage)
    return record


def history(visitor: str, limit: int = 50) -> pd.DataFrame:
    """The visitor's runs, newest first (every run for the owner)."""
    owner = access.is_owner(visitor)
    if not visitor and not owner:
        return pd.DataFrame([], columns=HISTORY_COLUMNS)
    rows = []
    for r in get_store().list_runs(limit, visitor=None if owner else visitor):
        s, plan = r.get("settings") or {}, r.get("plan") or {}
        query = " ".join(str(r.get("query", "")).split())
        rows.append([time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"])), r["id"], r["status"],
                     s.get("mode", ""), s.get("llm", ""), s.get("video", "") if r.get("video") else "",
                     plan.get("title", ""), as_int((r.get("score") or {}).get("predicted_comments")),
                     query if len(query) <= 80 else query[:79] + "…"])
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
