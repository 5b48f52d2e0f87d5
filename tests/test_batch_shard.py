"""Sharding through accelerate: two CPU processes (`accelerate launch --multi_gpu --num_processes 2`, torchrun; on a
machine without CUDA the batch joins them as accelerate's MULTI_CPU over gloo) against one process on the same grid:
the same rows, disjoint shards that cover the grid, every run written by one process only. (`--cpu` alone starts
one process unless MPI is set up: accelerate 1.15's simple launcher.)"""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llm_server import free_port  # tests/: one helper for a free loopback port
from popcorn.experiments.grid import build_grid
from popcorn.experiments.prompts_file import read_prompts_file

ROOT = Path(__file__).resolve().parent.parent
# 2 prompts x (basic, pe): 4 runs, 2 a process (each process plans, renders and scores in both modes)
PROMPTS = ["a cat learns to skateboard in the park", "street food night market tour"]
GRID = ["--modes", "basic,pe", "--llms", "smollm2", "--videos", "storyboard", "--no-progress"]


def _rows(folder: Path) -> dict[str, dict]:
    with sqlite3.connect(folder / "popcorn.db") as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT id, status, plan, score, settings FROM runs").fetchall()
    out = {}
    for r in rows:
        plan, score, settings = (json.loads(r[k] or "null") for k in ("plan", "score", "settings"))
        out[r["id"]] = {"status": r["status"], "title": (plan or {}).get("title"),
                        "video_prompt": (plan or {}).get("video_prompt"), "label": (score or {}).get("label"),
                        "process": settings["batch"].get("process"), "attempts": settings["batch"].get("attempts")}
    return out


@pytest.mark.llm
@pytest.mark.slow
def test_two_accelerate_processes_give_the_rows_of_one(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "POPCORN_LLM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "popcorn", "batch", "--prompts", str(prompts), *GRID,
                          "--out", str(tmp_path / "one")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1800)
    assert one.returncode in (0, 1), one.stderr[-3000:]
    accelerate = Path(sys.executable).parent / "accelerate"
    two = subprocess.run([str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                          "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                          str(free_port()), "-m", "popcorn", "batch", "--prompts", str(prompts), *GRID,
                          "--out", str(tmp_path / "two")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=1800)
    assert two.returncode in (0, 1), two.stderr[-3000:]

    expected = {s.key for s in build_grid(read_prompts_file(prompts), ["basic", "pe"], ["smollm2"], ["storyboard"],
                                          [0])}
    rows_one, rows_two = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert set(rows_one) == set(rows_two) == expected
    strip = lambda rows: {k: {f: v for f, v in r.items() if f != "process"} for k, r in rows.items()}  # noqa: E731
    assert strip(rows_two) == strip(rows_one)  # same plans, same scores, same statuses
    assert {r["process"] for r in rows_one.values()} == {"0/1"}

    shards = [json.loads((tmp_path / "two" / "shards" / f"{i}-of-2.json").read_text())["runs"] for i in range(2)]
    assert all(shards) and not set(shards[0]) & set(shards[1])  # disjoint, neither empty
    assert set(shards[0]) | set(shards[1]) == expected and len(shards[0]) + len(shards[1]) == len(expected)
    for i, shard in enumerate(shards):  # every row written by the process that owned it, once (no retry, no repeat)
        assert all(rows_two[key]["process"] == f"{i}/2" and rows_two[key]["attempts"] == 0 for key in shard
                   if rows_two[key]["status"] == "done")
