"""Score a batch's finished runs again, through the pipeline's own score step, under a scoring rule.

    rescore(DIR)                                   same-inputs rule, in place (row and runs/<id>/run.json)
    rescore(DIR, rule="confounded", dest=DIR2)     the rule before issue 23, into a copy of the store (DIR untouched)

Runs scored before the same-inputs rule are brought to it without planning or rendering again, and the same runs
scored under the old rule show what the rule changed (bench/RESULTS.md). Only the score and the baseline change.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import fields
from pathlib import Path
from typing import Callable

from popcorn import pipeline
from popcorn.store import Store
from popcorn.types import Plan, Retrieval, StageError


def run_of(record: dict) -> pipeline.Run:
    """A stored run.json-shaped record back as a pipeline Run (settings the pipeline does not know are dropped)."""
    known = {f.name for f in fields(pipeline.Settings)}
    settings = pipeline.Settings(**{k: v for k, v in (record.get("settings") or {}).items() if k in known})
    meta = (record.get("settings") or {}).get("batch") or {}
    if not settings.category and meta.get("category"):  # runs stored before Settings carried the category
        settings.category = meta["category"]
    return pipeline.Run(settings, id=record["id"],
                        retrieval=Retrieval.from_dict(record["retrieval"]) if record.get("retrieval") else None,
                        plan=Plan.from_dict(record["plan"]) if record.get("plan") else None,
                        video=dict(record.get("video") or {}), notes=list(record.get("notes") or []),
                        timings=dict(record.get("timings") or {}))


def rescore(out_dir: str | Path, rule: str = "same-inputs", dest: str | Path | None = None,
            progress: Callable[[str], None] | None = None) -> dict:
    """Re-score every done batch run of `out_dir` under `rule`; into `dest` (a new folder holding a copy of the
    store) when given. Returns {"dir", "rule", "rescored", "failed"}."""
    source = Path(out_dir)
    if not (source / "popcorn.db").exists():
        raise StageError("report", f"{source} holds no batch (no popcorn.db)", "give the --out folder of a batch")
    folder = source
    if dest is not None:
        folder = Path(dest)
        if (folder / "popcorn.db").exists():
            raise StageError("report", f"{folder} already holds a store", "give a new folder for the re-scored copy")
        folder.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(source / "popcorn.db") as src, sqlite3.connect(folder / "popcorn.db") as copy:
            src.backup(copy)  # a consistent copy, write-ahead log included
    store = Store(home=folder)
    records = [r for r in store.list_runs(limit=10**9)
               if r.get("status") == "done" and (r.get("settings") or {}).get("batch") is not None and r.get("plan")]
    failed = []
    for i, record in enumerate(records):
        if progress:
            progress(f"{i + 1}/{len(records)} {rule}: {record['plan'].get('title', '')[:40]}")
        run = run_of(record)
        try:
            pipeline.score_run(run, rule=rule)
        except StageError as exc:
            failed.append({"id": record["id"], "error": str(exc)})
            continue
        record = {**record, "score": run.score, "baseline": run.baseline,
                  "timings": {**(record.get("timings") or {}), "score": round(run.timings.get("score", 0.0), 3)}}
        store.save_run(record, status="done")
        if dest is None:
            _rewrite_run_json(folder / "runs" / record["id"], run)
    return {"dir": str(folder), "rule": rule, "rescored": len(records) - len(failed), "failed": failed}


def _rewrite_run_json(run_dir: Path, run: pipeline.Run) -> None:
    path = run_dir / "run.json"
    if not path.exists():
        return
    old = json.loads(path.read_text(encoding="utf-8"))
    old.update({"score": run.score, "baseline": run.baseline})
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(old, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)  # the old run.json or the new, never half
