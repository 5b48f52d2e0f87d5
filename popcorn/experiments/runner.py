"""Run a batch stage by stage: every plan of an LLM, then every render of a video model, then the scores.

    result = run_batch(specs, out_dir)     # specs from grid.build_grid; the runs land in Store(home=out_dir)

Each run is one row of out_dir's SQLite store (popcorn.store) and its files under out_dir/runs/<id>/. Where a run
stands is read from its row, so a batch can stop anywhere and start again:

    no row                          -> plan
    status planned, stage planned   -> render
    status planned, stage rendered  -> score
    status done                     -> skipped
    status failed                   -> the failed stage again, until `max_attempts` failures; then given up

A run's files are written to out_dir/runs/.tmp/<id>-<pid>/ and renamed into place before its row says so; the row
is committed last. A kill at any moment leaves at worst a stray temp folder (removed before that run is tried
again), never a run counted as done without its files. A failed stage is recorded on the run with its message, hint
and (for a plan) the LLM's raw answer.

Models: the LLM is loaded once per process for all its plans and released before the video stage (an LLM and a
video model never hold the GPU together); each video model then renders all its runs; the predictor scores last.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from popcorn import pipeline
from popcorn.experiments.grid import RunSpec
from popcorn.experiments.shard import Shard, current_shard
from popcorn.store import Store
from popcorn.types import COMPOSE, RENDER, SCORE, StageError

MAX_ATTEMPTS = 3
TMP_DIR = ".tmp"

Progress = Callable[[int, int, str], None]  # (units done, units in all, what is happening)

# where a run stands, read from its row
NEW, PLANNED, RENDERED, DONE, GIVEN_UP = "new", "planned", "rendered", "done", "given up"
FAILED = "failed"  # failed in this batch: nothing more now


@dataclass
class BatchResult:
    runs: int = 0  # runs of this process's shard
    already_done: int = 0
    done: int = 0  # finished now
    failed: int = 0  # failed now (will be retried by the next batch while attempts remain)
    given_up: int = 0  # failed max_attempts times: not retried
    plans: int = 0  # LLM calls that produced a plan
    seconds: float = 0.0
    shard: str = "0/1"
    failures: list[dict] = field(default_factory=list)  # {id, stage, error}

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def standing(row: dict | None, max_attempts: int = MAX_ATTEMPTS) -> str:
    """Where a run stands, from its store row (see the module's table)."""
    if row is None:
        return NEW
    meta = (row.get("settings") or {}).get("batch") or {}
    if row["status"] == "done":
        return DONE
    stage = meta.get("stage")
    if row["status"] == "failed":
        if int(meta.get("attempts", 0)) >= max_attempts:
            return GIVEN_UP
        # a failed stage (types.STAGES) is tried again from where it starts
        stage = {RENDER: PLANNED, COMPOSE: PLANNED, SCORE: RENDERED}.get((meta.get("failure") or {}).get("stage"))
    if stage == RENDERED and _files_present(row):
        return RENDERED
    return PLANNED if stage in (PLANNED, RENDERED) and row.get("plan") else NEW


def _files_present(row: dict) -> bool:
    video = row.get("video") or {}
    return bool(video.get("video")) and Path(video["video"]).is_file()


class BatchRunner:
    def __init__(self, specs: list[RunSpec], out_dir: str | Path, max_attempts: int = MAX_ATTEMPTS,
                 progress: Progress | None = None, shard: Shard | None = None, show_bar: bool = True):
        self.specs = specs
        self.out_dir = Path(out_dir)
        self.max_attempts = max_attempts
        self.shard = shard or current_shard()
        self.progress_cb = progress
        self.show_bar = show_bar
        with self.shard.main_first():  # one process creates and migrates the store, then the others open it
            self.store = Store(home=self.out_dir)
        self.result = BatchResult(shard=self.shard.label)
        self._bar = None
        self._units_done = 0
        self._units_total = 0

    # ------------------------------------------------------------------------------------------------ the batch

    def run(self) -> BatchResult:
        started = time.perf_counter()
        mine = self.shard.take(self.specs)
        self._write_manifest(mine)
        self.result.runs = len(mine)
        rows = {spec.key: self.store.get_run(spec.key) for spec in mine}
        where = {spec.key: standing(rows[spec.key], self.max_attempts) for spec in mine}
        self.result.already_done = sum(w == DONE for w in where.values())
        self.result.given_up = sum(w == GIVEN_UP for w in where.values())
        todo = {NEW: 3, PLANNED: 2, RENDERED: 1}  # stages left
        self._start_bar(sum(todo.get(w, 0) for w in where.values()))
        try:
            runs: dict[str, pipeline.Run] = {s.key: self._run_from_row(s, rows[s.key]) for s in mine
                                             if where[s.key] in (PLANNED, RENDERED)}
            # stage 1: plans, LLM by LLM and mode by mode: each mode's prompt starts with its fixed instructions,
            # which then stay in the LLM's KV cache from one plan to the next (a local PE plan evaluates ~190 fewer
            # prompt tokens than after a Basic one, bench/RESULTS.md)
            for llm in dict.fromkeys(s.llm for s in mine if where[s.key] == NEW):
                for mode in dict.fromkeys(s.mode for s in mine if s.llm == llm and where[s.key] == NEW):
                    for spec in (s for s in mine if s.llm == llm and s.mode == mode and where[s.key] == NEW):
                        runs[spec.key] = self._plan(spec, rows[spec.key], where)
                release_models()
            for video in dict.fromkeys(s.video for s in mine):  # stage 2: renders, one video model at a time
                for spec in (s for s in mine if s.video == video and where[s.key] == PLANNED):
                    self._render(spec, runs[spec.key], where)
                release_models()
            for spec in (s for s in mine if where[s.key] == RENDERED):  # stage 3: scores
                self._score(spec, runs[spec.key], where)
        finally:
            if self._bar is not None:
                self._bar.close()
        self.result.seconds = round(time.perf_counter() - started, 2)
        self.shard.wait()
        return self.result

    # ------------------------------------------------------------------------------------------------ stages

    def _plan(self, spec: RunSpec, row: dict | None, where: dict) -> pipeline.Run | None:
        """retrieve (PE) + plan; the run is stored as planned, or as failed with the stage and the raw answer."""
        self._say(f"plan {spec.llm} {spec.mode}: {spec.prompt.query[:40]}")
        run = pipeline.Run(spec.settings(), id=spec.key)
        try:
            pipeline.make_plans(run.settings, run=run)
        except StageError as exc:
            self._fail(spec, exc, row, plan_run=None)
            where[spec.key] = FAILED
            self._advance(3)  # its render and score will not happen now: counted so the ETA stays true
            return None
        self.result.plans += 1
        self._save(spec, run, "planned", PLANNED, row)
        where[spec.key] = PLANNED
        self._advance()
        return run

    def _render(self, spec: RunSpec, run: pipeline.Run, where: dict) -> None:
        """render + compose into a temp folder, renamed into runs/<id>/, then the row."""
        self._say(f"render {spec.video}: {run.plan.title[:40]}")
        final = self.store.home / "runs" / spec.key
        tmp = self._fresh_tmp(spec.key)
        try:
            pipeline.render_run(run, tmp, with_score=False)
            run.video = {k: (str(final / Path(v).relative_to(tmp)) if isinstance(v, str) and v.startswith(str(tmp))
                             else v) for k, v in run.video.items()}
            pipeline.write_run_json(run, tmp)
            if final.exists():  # left by a run killed after its rename, before its row: not counted, replaced
                shutil.rmtree(final)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        except StageError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            self._fail(spec, exc, self.store.get_run(spec.key), plan_run=run)
            where[spec.key] = FAILED
            self._advance(2)
            return
        self._save(spec, run, "planned", RENDERED)
        for kind in ("video", "cover", "metadata"):
            if run.video.get(kind):
                self.store.add_artifact(spec.key, kind, run.video[kind])
        self.store.add_artifact(spec.key, "run", final / "run.json")
        where[spec.key] = RENDERED
        self._advance()

    def _score(self, spec: RunSpec, run: pipeline.Run, where: dict) -> None:
        self._say(f"score: {run.plan.title[:40]}")
        try:
            pipeline.score_run(run)
        except StageError as exc:
            self._fail(spec, exc, self.store.get_run(spec.key), plan_run=run)
            where[spec.key] = FAILED
            self._advance()
            return
        final = self.store.home / "runs" / spec.key
        tmp = self._fresh_tmp(spec.key)
        pipeline.write_run_json(run, tmp)
        os.replace(tmp / "run.json", final / "run.json")  # atomic: the old run.json or the new, never half
        shutil.rmtree(tmp, ignore_errors=True)
        self._save(spec, run, "done", DONE)
        where[spec.key] = DONE
        self.result.done += 1
        self._advance()

    # ------------------------------------------------------------------------------------------------ rows

    def _record(self, spec: RunSpec, run: pipeline.Run, stage: str, previous: dict | None = None) -> dict:
        record = run.to_dict()
        old = ((previous or {}).get("settings") or {}).get("batch") or {}
        record["settings"]["batch"] = {**spec.meta(), "stage": stage, "attempts": int(old.get("attempts", 0)),
                                       "process": self.shard.label}
        return record

    def _save(self, spec: RunSpec, run: pipeline.Run, status: str, stage: str, previous: dict | None = None) -> None:
        if previous is None:
            previous = self.store.get_run(spec.key)
        self.store.save_run(self._record(spec, run, stage, previous), status=status)

    def _fail(self, spec: RunSpec, exc: StageError, previous: dict | None, plan_run: pipeline.Run | None) -> None:
        """Record a failed stage on the run: stage, message, hint and the raw LLM answer, attempts + 1."""
        run = plan_run or pipeline.Run(spec.settings(), id=spec.key)
        if plan_run is None:
            run.plan = None
        record = self._record(spec, run, "failed", previous)
        meta = record["settings"]["batch"]
        meta["attempts"] += 1
        meta["failure"] = {"stage": exc.stage, "message": exc.message, "hint": exc.hint, "raw": exc.raw or ""}
        self.store.save_run(record, status="failed", error=str(exc))
        self.result.failed += 1
        if meta["attempts"] >= self.max_attempts:
            self.result.given_up += 1
        self.result.failures.append({"id": spec.key, "stage": exc.stage, "error": str(exc)[:300]})

    def _run_from_row(self, spec: RunSpec, row: dict) -> pipeline.Run:
        run = pipeline.Run.from_dict(row)  # the plan with how it was written (budget, attempts, usage), its files
        run.settings, run.id = spec.settings(), spec.key
        return run

    # ------------------------------------------------------------------------------------------------ files

    def _fresh_tmp(self, run_id: str) -> Path:
        """An empty temp folder for this run; earlier ones of the same run (a killed attempt) are removed."""
        root = self.store.home / "runs" / TMP_DIR
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{run_id}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = root / f"{run_id}-{os.getpid()}"
        tmp.mkdir()
        return tmp

    def _write_manifest(self, mine: list[RunSpec]) -> None:
        """shards/<index>-of-<count>.json: the run ids this process took (what accelerate gave it)."""
        folder = self.out_dir / "shards"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.shard.index}-of-{self.shard.count}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"process": self.shard.label, "runs": [s.key for s in mine]}, indent=1))
        os.replace(tmp, path)

    # ------------------------------------------------------------------------------------------------ progress

    def _start_bar(self, total: int) -> None:
        self._units_total = total
        if self.show_bar and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=f"batch {self.shard.label}" if self.shard.count > 1 else "batch",
                             unit="step", file=sys.stderr, dynamic_ncols=True, position=self.shard.index)

    def _say(self, message: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(message, refresh=True)
        if self.progress_cb is not None:
            self.progress_cb(self._units_done, self._units_total, message)

    def _advance(self, n: int = 1) -> None:
        self._units_done += n
        if self._bar is not None:
            self._bar.update(n)
        if self.progress_cb is not None:
            self.progress_cb(self._units_done, self._units_total, "")


def release_models() -> None:
    """Free what the finished stage loaded before the next stage loads its model.

    The embedded llama.cpp models are freed through popcorn.llm.local.unload_all. The registries of popcorn.llm and
    popcorn.video keep their backends (and a transformers LLM or a diffusers pipeline inside them) for the process:
    they have no public release yet, so those stay until the process ends; on a GPU the CUDA cache is emptied."""
    if "popcorn.llm.local" in sys.modules:
        from popcorn.llm.local import unload_all

        unload_all()
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_batch(specs: list[RunSpec], out_dir: str | Path, **options) -> BatchResult:
    return BatchRunner(specs, out_dir, **options).run()
