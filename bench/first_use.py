"""Bench of the first use: how long a new user waits for the first score, the first PE plan and the studio's page,
starting from an empty cache folder, against the same with the cache already built. Every measurement is a fresh
process (`python -m popcorn score`, `python -m popcorn plan`, `python app.py`), timed from its start to its exit (or
to the page's first HTTP 200), as a user meets it.

    python bench/first_use.py                  # all of it (about 5 minutes on 2 cores)
    python bench/first_use.py --skip-plan      # score and page only (no LLM)

Cold: the score and the plan each get their own empty POPCORN_CACHE_DIR (the plan cannot borrow what the score
built). A first plan routes on a sample and embeds only the routed categories (popcorn.retrieval.index.QuickRetriever), so
it is timed twice: for the bench's query (Animal) and for one routed to the largest category (Game, 5,259 videos),
each from an empty cache. Warm: the same commands again on the caches the cold runs left (for the plan: the part of
the index the first one embedded). `prep` is the studio's warm-up of the whole index and the LLM (corpus, every
title's embedding, indexes, routers, query encoder, GGUF assembly and verification, model load), timed step by step
in one more fresh process through popcorn.serve.warm. `studio_plan`: the studio launched on an empty cache and a PE plan
asked through its /plan API the moment the page answers (its warm-up steps aside for the plan). The page is timed cold while the studio warms (when the
studio starts popcorn.serve.warm on launch). The warm plan is a fresh process too: it finds the PE instructions'
llama.cpp state the first plan saved (popcorn/llm/llama_state.py). The report names the CPU, its instruction sets
(AVX2, AVX-512, VNNI, AMX: bench/cpu.py) and the llama.cpp build. The last line is

    first_use score_s=<float> plan_s=<float> warm_score_s=<float> warm_plan_s=<float>
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from cpu import cpu_line, llama_build  # noqa: E402  (bench/cpu.py: instruction sets, llama.cpp build)
from predictor import machine  # noqa: E402  (bench/predictor.py: CPU model, cores, load)

PY = sys.executable
TITLE = "Street food at night in Bangkok: 5 dishes under 1 dollar #food #travel"
QUERY = "a golden retriever puppy sees the sea for the first time"
LARGEST = "my best clutch moment in a ranked shooter match"  # routed to Game, the largest category (5,259 videos)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def env_with(cache: Path, home: Path) -> dict:
    env = dict(os.environ, POPCORN_CACHE_DIR=str(cache), POPCORN_HOME=str(home), PYTHONUNBUFFERED="1")
    env.setdefault("POPCORN_OFFLINE", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def timed(args: list[str], env: dict, label: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds, done.stdout


def score(cache: Path, home: Path, label: str) -> float:
    seconds, out = timed([PY, "-m", "popcorn", "score", "--title", TITLE, "--json"], env_with(cache, home), label)
    result = json.loads(out)
    assert result["human_baseline"]["videos"], "the score came without its human-matched baseline"
    return seconds


def plan(cache: Path, home: Path, label: str, query: str = QUERY) -> tuple[float, dict]:
    seconds, out = timed([PY, "-m", "popcorn", "plan", query, "--mode", "pe", "--llm", "local", "--json"],
                         env_with(cache, home), label)
    result = json.loads(out)
    assert result["title"] and result["references"], "the plan came without a title or references"
    return seconds, {"categories": result["matched_categories"], "index": result.get("retrieval_index", "full")}


PREP = """
import json, time
from popcorn.serve import warm
w = warm.Warmup(only=("corpus", "index", "llm"))
w.run()
print(json.dumps(w.to_dict()))
"""


def prep(cache: Path, home: Path, label: str) -> dict:
    seconds, out = timed([PY, "-c", PREP], env_with(cache, home), label)
    steps = json.loads(out.strip().splitlines()[-1])["steps"]
    failed = [s for s in steps if s["state"] == "failed"]
    if failed:
        raise SystemExit(f"{label}: {failed}")
    return {"total_s": round(seconds, 1), **{s["name"] + "_s": s["seconds"] for s in steps}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_studio(cache: Path, home: Path, label: str, limit_s: float = 120.0):
    """`python app.py` until GET / answers 200: yields (its port, seconds from the launch to the page, the launch's
    perf_counter); stopped on leaving."""
    port = free_port()
    started = time.perf_counter()
    proc = subprocess.Popen([PY, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            env=env_with(cache, home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if time.perf_counter() - started > limit_s:
                raise SystemExit(f"{label}: no page within {limit_s:.0f} s")
            if proc.poll() is not None:
                raise SystemExit(f"{label}: the studio exited ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        yield port, time.perf_counter() - started, started
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def page(cache: Path, home: Path, label: str) -> float:
    """Seconds from `python app.py` to the page's first HTTP 200."""
    with served_studio(cache, home, label) as (_, seconds, _):
        print(f"  {label}: {seconds:.1f} s", flush=True)
        return seconds


def studio_plan(cache: Path, home: Path, label: str) -> dict:
    """`python app.py` on an empty cache; a PE plan asked through its /plan API as soon as the page answers (the
    warm-up has just started): seconds from the click to the plan, and from the launch."""
    from gradio_client import Client

    with served_studio(cache, home, label) as (port, _, started):
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        clicked = time.perf_counter()
        out = client.predict(QUERY, "pe", 10, "local", 0, 1, "storyboard", api_name="/plan")
        done = time.perf_counter()
    assert out[0], "the studio's plan came without a title"
    result = {"click_to_plan_s": round(done - clicked, 2), "launch_to_plan_s": round(done - started, 2),
              "quick": "searched the routed categories" in str(out[-1])}
    print(f"  {label}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-plan", action="store_true", help="no LLM: the score and the page only")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    report: dict = {"machine": machine(), "cpu": cpu_line(), "llama_cpp": llama_build(), "loadavg_start": loadavg()}
    print(report, flush=True)
    root = Path(tempfile.mkdtemp(prefix="popcorn-first-use-"))
    try:
        home = root / "home"
        score_cache, plan_cache, page_cache, prep_cache = (root / n for n in ("score", "plan", "page", "prep"))
        report["page_s"] = round(page(page_cache, home, "studio page, empty cache"), 2)
        report["score_s"] = round(score(score_cache, home, "first score, empty cache"), 2)
        report["warm_score_s"] = round(score(score_cache, home, "score, warm cache"), 2)
        if not args.skip_plan:
            report["prep"] = prep(prep_cache, home, "plan prep (corpus, index, LLM), empty cache")
            shutil.rmtree(prep_cache, ignore_errors=True)
            seconds, report["plan_route"] = plan(plan_cache, home, "first PE plan, empty cache")
            report["plan_s"] = round(seconds, 2)
            seconds, report["warm_plan_route"] = plan(plan_cache, home, "PE plan, the cache the first one left")
            report["warm_plan_s"] = round(seconds, 2)
            largest = root / "largest"
            seconds, report["plan_largest_route"] = plan(largest, home, "first PE plan routed to the largest "
                                                         "category, empty cache", LARGEST)
            report["plan_largest_s"] = round(seconds, 2)
            shutil.rmtree(largest, ignore_errors=True)
            studio = root / "studio"
            report["studio_plan"] = studio_plan(studio, root / "studio-home", "studio: a PE plan asked as the page "
                                                "answers, empty cache")
            shutil.rmtree(studio, ignore_errors=True)
        report["warm_page_s"] = round(page(plan_cache if not args.skip_plan else score_cache, home,
                                           "studio page, warm cache"), 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report["loadavg_end"] = loadavg()
    print(json.dumps(report, indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(f"first_use score_s={report['score_s']:.2f} plan_s={report.get('plan_s', float('nan')):.2f} "
          f"warm_score_s={report['warm_score_s']:.2f} warm_plan_s={report.get('warm_plan_s', float('nan')):.2f}")


if __name__ == "__main__":
    main()
