"""PE+ against PE plan seconds (issue 28): the same prompts, the modes interleaved so that no plan follows a plan of
its own query (the KV cache would then hold its whole prompt), one process, the local LLM loaded and its fixed prefix
warmed before the first timed plan. Run under /work/tools/quiet (one timing at a time on the machine).

    python bench/plus_time.py [N]     # N prompts of prompts/findings.tsv's PE+ tuned set (default 3): 2N plans
Last line: plus_time pe_p50=<s> plus_p50=<s> ratio=<float> n=<plans per mode>
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn import pipeline  # noqa: E402
from popcorn.llm import get_llm  # noqa: E402

QUERIES = ["the quiet courage of starting over after failure", "a golden retriever meets a kitten for the first time",
           "why small daily habits change who you become", "testing five cheap phone gadgets from an online store"]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    queries = QUERIES[:n]
    retrievals = {q: pipeline.retrieve(q, 10, "ours") for q in queries}
    pipeline.write_plan(queries[0], "basic", "local", seed=0)  # loads the model (not timed)
    from popcorn.popularity import get_predictor
    get_predictor()  # PE+ ranks with h: loaded once per process, as in a batch (not timed)
    # PE(a) PE+(b) PE(c) PE+(a) PE(b) PE+(c): every plan follows another query's
    order = [("pe" if i % 2 == 0 else "plus", queries[i % n]) for i in range(2 * n)]
    seconds = {"pe": [], "plus": []}
    for mode, query in order:
        started = time.perf_counter()
        pipeline.write_plan(query, mode, "local", retrievals[query], seed=0)
        seconds[mode].append(time.perf_counter() - started)
        print(f"{mode:>4} {seconds[mode][-1]:6.1f} s  {query}", flush=True)
    pe, plus = float(np.median(seconds["pe"])), float(np.median(seconds["plus"]))
    print(f"plus_time pe_p50={pe:.1f} plus_p50={plus:.1f} ratio={plus / pe:.3f} n={n}")


if __name__ == "__main__":
    main()
