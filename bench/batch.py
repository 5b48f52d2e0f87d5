"""Bench of batch experiments: runs per minute on this machine, batched by stage against one `run` at a time.

    flock /tmp/popcorn-bench.lock python bench/batch.py [--prompts 3] [--llm local] [--video storyboard]

The same prompts x (basic, pe) runs are made twice in one process, after a warm-up run that loads the LLM, the
retrieval index and the predictor: (a) one `pipeline.run` at a time, as `python -m popcorn run` does; (b) the batch
runner (all plans, then all renders, then all scores), into its SQLite store. The ratio is (b)/(a) in runs per
minute; both make the same plans (same seeds), which the output checks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popcorn import pipeline  # noqa: E402
from popcorn.experiments.grid import build_grid  # noqa: E402
from popcorn.experiments.prompts_file import Prompt  # noqa: E402
from popcorn.experiments.runner import run_batch  # noqa: E402
from popcorn.experiments.shard import Shard  # noqa: E402
from popcorn.store import Store  # noqa: E402

PROMPTS = ["a cat learns to skateboard in the park", "street food night market tour",
           "a grandmother reacts to modern music", "morning routine of a busy nurse",
           "building a tiny house in the woods", "how to fold a paper crane"]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return f"{platform.machine()} {model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--llm", default="local")
    parser.add_argument("--video", default="storyboard")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    specs = build_grid([Prompt(q) for q in PROMPTS[:args.prompts]], ["basic", "pe"], [args.llm], [args.video], [0])
    out = {"machine": machine(), "load_before": open("/proc/loadavg").read().split()[:3], "runs": len(specs),
           "llm": args.llm, "video": args.video}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()  # warm-up: LLM, retrieval index, predictor, embeddings loaded once
        pipeline.run(pipeline.Settings(query="warm-up: a dog at the beach", mode="pe", llm=args.llm, video=args.video),
                     Path(tmp) / "warm")
        out["warm_up_s"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        one = [pipeline.run(spec.settings(), Path(tmp) / "one" / str(i)) for i, spec in enumerate(specs)]
        one_s = time.perf_counter() - started

        started = time.perf_counter()
        result = run_batch(specs, Path(tmp) / "batch", shard=Shard(0, 1), show_bar=False)
        batch_s = time.perf_counter() - started
        store = Store(home=Path(tmp) / "batch")
        rows = [store.get_run(spec.key) for spec in specs]
    out["load_after"] = open("/proc/loadavg").read().split()[:3]
    out["one_at_a_time"] = {"seconds": round(one_s, 1), "runs_per_minute": round(60 * len(specs) / one_s, 3),
                            "stage_seconds": _stage_totals([r.to_dict()["timings"] for r in one])}
    out["batched"] = {"seconds": round(batch_s, 1), "runs_per_minute": round(60 * result.done / batch_s, 3),
                      "done": result.done, "failed": result.failed,
                      "stage_seconds": _stage_totals([r["timings"] for r in rows if r])}
    out["ratio_batched_over_one_at_a_time"] = round(out["batched"]["runs_per_minute"]
                                                     / out["one_at_a_time"]["runs_per_minute"], 3)
    out["same_plans"] = sum(a.plan.title == (b or {}).get("plan", {}).get("title") for a, b in zip(one, rows))
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


def _stage_totals(timings: list[dict]) -> dict:
    totals: dict[str, float] = {}
    for t in timings:
        for stage, seconds in t.items():
            totals[stage] = round(totals.get(stage, 0.0) + seconds, 1)
    return totals


if __name__ == "__main__":
    main()
