"""Which two videos are compared: pairs made for the same query that differ in one factor.

A pair is a plain dict (kept on the owner's side only; participants never see any of it):

    {"query": "...", "factor": "mode", "prompt_type": "abstract" | "concrete" | "unknown", "category": "Food",
     "a": {"run_id": "...", "condition": "pe",    "video": "/path/video.mp4", "h": 1234.5, "title": "..."},
     "b": {"run_id": "...", "condition": "basic", "video": "/path/video.mp4", "h": 987.0,  "title": "..."}}

Three sources, one shape:
- stored runs paired by a rule (`pairs_from_runs`): the same query, the runs differing in `factor` (mode, llm or
  video) and agreeing on the other two; runs of the same query and conditions are matched one to one, oldest first;
- an explicit pair file (`pairs_from_file`): JSON (a list, or {"pairs": [...]}) or CSV; `a` / `b` name a stored run
  id or a video file (then `condition_a` / `condition_b` say what made it);
- a batch output folder (`pairs_from_batch`): its own store (DIR/popcorn.db) when it has one, else its run.json files.
"""

from __future__ import annotations

import csv
import json
from itertools import combinations
from pathlib import Path

from popcorn.llm.prompts import EXAMPLES
from popcorn.study import StudyError

FACTORS = ("mode", "llm", "video")
PROMPT_TYPES = ("abstract", "concrete")


def condition(run: dict, factor: str) -> str:
    return str((run.get("settings") or {}).get(factor, ""))


def video_path(run: dict) -> str:
    """The run's composed video when it exists on disk, else ''."""
    for path in ((run.get("video") or {}).get("video"), (run.get("artifacts") or {}).get("video")):
        if path and Path(path).is_file():
            return str(path)
    return ""


def h_score(run: dict) -> float | None:
    """h of the run: its predicted comments (None when it was not scored)."""
    score = run.get("score") or {}
    for key in ("predicted_comments", "label"):
        if isinstance(score.get(key), (int, float)):
            return float(score[key])
    return None


def category(run: dict) -> str:
    """The category the batch's prompt file gave, else the plan's first matched category, else h's."""
    given = ((run.get("settings") or {}).get("batch") or {}).get("category")
    if given:
        return str(given)
    plan = run.get("plan") or {}
    cats = plan.get("matched_categories") or []
    return str(cats[0] if cats else (run.get("score") or {}).get("category", "") or "")


def _known_prompt_types() -> dict[str, str]:
    return {query.strip().lower(): kind for query, kind in EXAMPLES}


def prompt_type(run: dict, known: dict[str, str] | None = None) -> str:
    """abstract / concrete when the run (or its batch's prompt file) says so, or the query is a known example."""
    settings = run.get("settings") or {}
    for value in (run.get("prompt_type"), settings.get("prompt_type"), (settings.get("batch") or {}).get("type")):
        if str(value or "").lower() in PROMPT_TYPES:
            return str(value).lower()
    query = str(settings.get("query") or run.get("query") or "").strip().lower()
    return (known if known is not None else _known_prompt_types()).get(query, "unknown")


def side(run: dict, factor: str) -> dict:
    return {"run_id": str(run.get("id", "")), "condition": condition(run, factor), "video": video_path(run),
            "h": h_score(run), "title": str((run.get("plan") or {}).get("title", ""))}


def pairs_from_runs(runs: list[dict], factor: str, a: str | None = None, b: str | None = None) -> list[dict]:
    """Pairs of runs of the same query differing only in `factor` (optionally only conditions `a` vs `b`)."""
    if factor not in FACTORS:
        raise StudyError(f"unknown factor {factor!r}; pair runs by one of {', '.join(FACTORS)}")
    others = [f for f in FACTORS if f != factor]
    usable = [r for r in runs if r.get("status", "done") == "done" and video_path(r)]
    groups: dict[tuple, dict[str, list[dict]]] = {}
    for run in sorted(usable, key=lambda r: (r.get("created") or 0, str(r.get("id")))):
        query = " ".join(str((run.get("settings") or {}).get("query") or run.get("query") or "").split()).lower()
        key = (query, *(condition(run, f) for f in others))
        groups.setdefault(key, {}).setdefault(condition(run, factor), []).append(run)
    known = _known_prompt_types()
    pairs = []
    for by_condition in groups.values():
        for ca, cb in combinations(sorted(by_condition), 2):
            if a is not None and b is not None:
                if {ca, cb} != {a, b}:
                    continue
                ca, cb = a, b  # the owner's order: "a" is the first condition named
            for run_a, run_b in zip(by_condition[ca], by_condition[cb]):
                pairs.append({"query": str((run_a.get("settings") or {}).get("query") or run_a.get("query") or ""),
                              "factor": factor, "prompt_type": prompt_type(run_a, known),
                              "category": category(run_a) or category(run_b),
                              "a": side(run_a, factor), "b": side(run_b, factor)})
    return pairs


def _side_from_entry(entry: dict, key: str, store, factor: str) -> dict:
    ref = str(entry.get(key) or "").strip()
    if not ref:
        raise StudyError(f"a pair in the file has no {key!r}: {entry}")
    run = store.get_run(ref) if store is not None and "/" not in ref and not ref.endswith(".mp4") else None
    if run:
        out = side(run, factor if factor in FACTORS else "mode")
        if entry.get(f"condition_{key}"):
            out["condition"] = str(entry[f"condition_{key}"])
        if not out["video"]:
            raise StudyError(f"run {ref} has no video on disk; render it first or name a video file")
        return out
    path = Path(ref).expanduser()
    if not path.is_file():
        raise StudyError(f"{key} = {ref!r} is neither a stored run nor a video file")
    h = entry.get(f"h_{key}")
    return {"run_id": "", "condition": str(entry.get(f"condition_{key}") or path.stem), "video": str(path),
            "h": float(h) if h not in (None, "") else None, "title": ""}


def pairs_from_file(path: str | Path, store=None) -> list[dict]:
    """Pairs from a JSON or CSV pair file (see the module's docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"cannot read the pair file {path}: {exc}") from exc
    if path.suffix.lower() == ".csv":
        entries = list(csv.DictReader(text.splitlines()))
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StudyError(f"the pair file {path} is not JSON ({exc}); write a list of pairs or use .csv") from exc
        entries = data.get("pairs", []) if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise StudyError(f"the pair file {path} holds no pairs")
    pairs = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise StudyError(f"each pair must be an object with 'a' and 'b', got {entry!r}")
        if isinstance(entry.get("a"), dict) and isinstance(entry.get("b"), dict):  # our own format, written back
            pairs.append({"query": "", "factor": "file", "prompt_type": "unknown", "category": "", **entry})
            continue
        factor = str(entry.get("factor") or "file")
        pair = {"query": str(entry.get("query") or ""), "factor": factor,
                "prompt_type": str(entry.get("prompt_type") or "unknown").lower(),
                "category": str(entry.get("category") or ""),
                "a": _side_from_entry(entry, "a", store, factor), "b": _side_from_entry(entry, "b", store, factor)}
        pairs.append(pair)
    for pair in pairs:
        if not Path(pair["a"]["video"]).is_file() or not Path(pair["b"]["video"]).is_file():
            raise StudyError(f"a pair names a video that is not on disk: {pair['a']['video']} / {pair['b']['video']}")
    return pairs


def runs_in_folder(folder: str | Path) -> list[dict]:
    """The runs of a batch output folder: its store when it has one, else every run.json under it."""
    from popcorn.store import DB_NAME, Store

    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder} is not a folder; give a batch output folder (python -m popcorn batch --out DIR)")
    if (folder / DB_NAME).is_file():
        store = Store(home=folder)
        return [store.get_run(r["id"]) for r in store.list_runs(limit=1_000_000)]
    runs = []
    for run_json in sorted(folder.rglob("run.json")):
        try:
            run = json.loads(run_json.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        video = (run.get("video") or {}).get("video")
        if video and not Path(video).is_absolute():
            run.setdefault("video", {})["video"] = str(run_json.parent / video)
        elif not video and (run_json.parent / "video.mp4").is_file():
            run.setdefault("video", {})["video"] = str(run_json.parent / "video.mp4")
        run.setdefault("status", "done")
        runs.append(run)
    return runs


def pairs_from_batch(folder: str | Path, factor: str, a: str | None = None, b: str | None = None) -> list[dict]:
    return pairs_from_runs(runs_in_folder(folder), factor, a, b)


def write_pair_file(pairs: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps({"pairs": pairs}, indent=2, ensure_ascii=False), encoding="utf-8")
    return path
