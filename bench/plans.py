"""Plans of an LLM over a prompt file, in both modes: are they valid, whole, within the video model's budget, and fast?

File format: the batch's (popcorn/experiments/prompts_file.py): one query per line, or `type<TAB>category<TAB>query`
(default: tests/data/plan_prompts.tsv). Each prompt gets a PE plan (K=10 references) and a Basic plan, written as the
product writes them (pipeline.make_plans, Settings.video = --video). One Basic plan is made first and not counted, so
the model is loaded and the retrieval indexes are read: the figures are warm.

For each mode it reports
  valid         share of prompts that got a plan (no StageError; title, cover and video prompt non-empty)
  whole_titles  share whose title was written within 50 characters (no cut needed)
  in_budget     share whose video prompt fits the video model's text-encoder budget (popcorn/video/budget.py) and says
                at least its minimum of words; under_min / over_max count the prompts that miss either way
  routed        where the file gives a category: share of PE plans whose matched categories include it
  seconds       p50 / p90 of one plan (PE: retrieval + plan), with prompt / generated tokens (mean) and attempts
Last line: plans valid=<float> whole_titles=<float> in_budget=<float> p50_s=<float> p90_s=<float> n=<int>
(shares over all plans of both modes, seconds over PE plans, n = prompts).

--reference N also runs the previous plan step on the first N prompts, in the same process, interleaved with the new
one: the prompts, schema (no string bounds, free "reasoning" first), max_tokens=700 and the one re-ask for repair of
commit e0aa6bc (templates read from git), and prints the new/old ratios of p50 and p90. Interleaved, each old plan
evicts the mode's instructions from llama.cpp's KV cache, so under --order mode the new plans it measures evaluate
them again: those ratios understate the new step (its own p50 / p90 above, from a run without --reference, do not).

--fresh N then makes the first N prompts' PE plans again, each in a new `python -m popcorn plan` process with the seed
it had above, on the caches the run left (one more first, untimed), and prints their p50 from launch to exit against
the in-process PE p50 of the same N plans, and how many came out with the same title (issue 27: <= 1.2x, the fixed
instructions' llama.cpp state loaded from disk, popcorn/llm/llama_state.py). `popcorn plan` fits the default video
model (storyboard): use --video storyboard with --fresh.

Usage: POPCORN_DATA_DIR=../shared/data/microlens python bench/plans.py [--prompts FILE] [--llm NAME] [--video NAME]
       [--limit N] [--modes pe,basic] [--order mode|prompt] [--reference N] [--fresh N] [--json OUT]

--order mode (default) makes every PE plan, then every Basic one, as `popcorn batch` plans: a mode's prompt starts with
its fixed instructions, which then stay in llama.cpp's KV cache from plan to plan. --order prompt alternates the modes
prompt by prompt, so each plan evaluates its mode's instructions again (a user switching modes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn import pipeline  # noqa: E402
from popcorn.llm import prompts
from popcorn.llm import get_llm  # noqa: E402
from popcorn.llm.parse import TITLE_LIMIT, parse_plan, read_plan  # noqa: E402
from popcorn.types import StageError  # noqa: E402
from popcorn.video.budget import budget as video_budget  # noqa: E402
from popcorn.video.budget import estimate_tokens  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from cpu import cpu_line, llama_build  # noqa: E402  (bench/cpu.py: instruction sets, llama.cpp build)
from predictor import machine  # noqa: E402  (bench/predictor.py: CPU model, cores, load)

DEFAULT_PROMPTS = ROOT / "tests" / "data" / "plan_prompts.tsv"
LEGACY_COMMIT = "e0aa6bc"  # the plan step before issue 10
LEGACY_SCHEMA = {
    "type": "object",
    "properties": {k: {"type": "string"} for k in ("reasoning", "title", "cover_prompt", "video_prompt")},
    "required": ["reasoning", "title", "cover_prompt", "video_prompt"],
    "additionalProperties": False,
}


def _lengths(fit, video_prompt: str) -> dict:
    """Whether a video prompt is within its budget both ways (over the encoder's tokens, under the minimum words)."""
    over, under = not fit.fits(video_prompt), not fit.long_enough(video_prompt)
    return {"in_budget": not (over or under), "over_max": over, "under_min": under}


def read_prompts(path: Path) -> list[tuple[str, str, str]]:
    """(type, category, query) per prompt, read as the batch reads a prompt file."""
    from popcorn.experiments.prompts_file import read_prompts_file

    return [(p.type, p.category, p.query) for p in read_prompts_file(path)]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --- the new plan step, as the product runs it ---------------------------------------------------------------------


def new_plan(query: str, mode: str, llm: str, video: str, seed: int) -> dict:
    settings = pipeline.Settings(query=query, mode=mode, llm=llm, video=video, seed=seed)
    started = time.perf_counter()
    try:
        run = pipeline.make_plans(settings)
    except StageError as exc:
        return {"valid": False, "error": f"[{exc.stage}] {exc.message}", "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    plan, info = run.plan, run.plan_info
    usage = info.get("usage", {})
    return {
        "valid": bool(plan.title and plan.cover_prompt and plan.video_prompt and len(plan.title) <= TITLE_LIMIT),
        "whole_title": bool(info.get("title_whole")),
        **_lengths(video_budget(video), plan.video_prompt),
        "matched": list(plan.matched_categories),
        "seconds": seconds,
        "prompt_tokens": usage.get("prompt_tokens"),
        "prompt_eval_tokens": usage.get("prompt_eval_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "prompt_eval_s": usage.get("prompt_eval_s"),
        "generation_s": usage.get("generation_s"),
        "attempts": usage.get("attempts", 1),
        "title": plan.title,
        "video_words": len(plan.video_prompt.split()),
        "video_est_tokens": estimate_tokens(plan.video_prompt),
    }


def fresh_plans(rows_in: list[tuple[str, str, str]], n: int, llm: str, seed: int) -> list[dict]:
    """PE plans of the first n prompts, each by `python -m popcorn plan` in a new process (as a user's every CLI plan
    is; its budget is the default video model's, so run the bench with --video storyboard to compare like with like)
    on the caches this run left, after one untimed: seconds from the launch to the exit, the plan's own seconds,
    and the prompt tokens its first draw evaluated (few when the fixed instructions' saved state served:
    popcorn/llm/llama_state.py)."""
    rows = []
    for i, (j, (_, _, query)) in enumerate([(0, rows_in[0])] + list(enumerate(rows_in[:n]))):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "popcorn", "plan", query, "--mode", "pe", "--llm", llm,
                               "--seed", str(seed + j), "--json"], cwd=ROOT, capture_output=True, text=True,
                              timeout=1800)  # prompt j's seed in the run above: the same plan, in a new process
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"fresh plan failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout)
        usage, first = out.get("usage", {}), (out.get("attempts") or [{}])[0]
        row = {"query": query, "title": out.get("title"), "wall_s": round(wall, 2), "plan_s": usage.get("seconds"),
               "prompt_tokens": first.get("prompt_tokens"), "prompt_eval_tokens": first.get("prompt_eval_tokens")}
        print(f"  fresh {'(untimed)' if i == 0 else i:>9} {wall:6.1f}s plan {row['plan_s']}s, first draw evaluated "
              f"{row['prompt_eval_tokens']} of {row['prompt_tokens']} prompt tokens | {query[:50]}", flush=True)
        if i:
            rows.append(row)
    return rows


# --- the previous plan step (reference) ----------------------------------------------------------------------------


def _legacy_templates() -> dict[str, Template]:
    out = {}
    for name in ("system", "basic", "pe", "repair"):
        text = subprocess.run(["git", "show", f"{LEGACY_COMMIT}:prompts/{name}.txt"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        out[name] = Template(text)
    return out


def _legacy_refs(refs) -> str:
    if not refs:
        return "(none)"
    return "\n".join(f"- {' '.join(r.title.split())[:160] or '(untitled)'} | {r.comments}" for r in refs)


def legacy_plan(query: str, mode: str, llm: str, video: str, seed: int, templates: dict) -> dict:
    started = time.perf_counter()
    retrieval = pipeline.retrieve(query, 10) if mode == "pe" else None
    system = {"role": "system", "content": templates["system"].substitute()}
    if mode == "pe":
        cats = retrieval.matched_categories
        user = templates["pe"].substitute(query=prompts.clean_query(query), categories=", ".join(cats) or "(unknown)",
                                          category_suffix="ies" if len(cats) > 1 else "y",
                                          popular=_legacy_refs(retrieval.popular),
                                          unpopular=_legacy_refs(retrieval.unpopular))
    else:
        user = templates["basic"].substitute(query=prompts.clean_query(query))
    messages = [system, {"role": "user", "content": user}]
    backend = get_llm(llm)
    usages = []

    def ask(msgs):
        out = backend.complete(msgs, json_schema=LEGACY_SCHEMA, max_tokens=700, temperature=0.7, seed=seed)
        usages.append(out.usage)
        return out

    out = ask(messages)
    try:
        raw = read_plan(out.text)
        fields = parse_plan(out.text)
    except StageError as first:
        repair = messages + [{"role": "assistant", "content": out.text[:4000]},
                             {"role": "user", "content": templates["repair"].substitute(problem=first.message)}]
        out = ask(repair)
        try:
            raw, fields = read_plan(out.text), parse_plan(out.text)
        except StageError as exc:
            return {"valid": False, "error": exc.message, "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    total = {k: sum(u.get(k) or 0 for u in usages) for k in ("prompt_tokens", "prompt_eval_tokens",
                                                             "completion_tokens", "prompt_eval_s", "generation_s")}
    return {
        "valid": bool(fields["title"] and fields["cover_prompt"] and fields["video_prompt"]),
        "whole_title": len(raw["title"]) <= TITLE_LIMIT,
        **_lengths(video_budget(video), fields["video_prompt"]),
        "matched": list(retrieval.matched_categories) if retrieval else [],
        "seconds": seconds,
        **total,
        "attempts": len(usages),
        "title": fields["title"],
        "video_words": len(fields["video_prompt"].split()),
        "video_est_tokens": estimate_tokens(fields["video_prompt"]),
    }


# --- report --------------------------------------------------------------------------------------------------------


def summary(rows: list[dict], categories: list[str]) -> dict:
    n = len(rows)
    routed = [cat in r.get("matched", []) for r, cat in zip(rows, categories) if cat]
    secs = [r["seconds"] for r in rows]

    def mean(key):
        values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
        return statistics.fmean(values) if values else float("nan")

    return {
        "n": n,
        "valid": sum(r["valid"] for r in rows) / n if n else float("nan"),
        "whole_titles": sum(bool(r.get("whole_title")) for r in rows) / n if n else float("nan"),
        "in_budget": sum(bool(r.get("in_budget")) for r in rows) / n if n else float("nan"),
        "under_min": sum(bool(r.get("under_min")) for r in rows),
        "over_max": sum(bool(r.get("over_max")) for r in rows),
        "routed": sum(routed) / len(routed) if routed else float("nan"),
        "p50_s": percentile(secs, 0.5),
        "p90_s": percentile(secs, 0.9),
        "prompt_tokens": mean("prompt_tokens"),
        "prompt_eval_tokens": mean("prompt_eval_tokens"),
        "completion_tokens": mean("completion_tokens"),
        "prompt_eval_s": mean("prompt_eval_s"),
        "generation_s": mean("generation_s"),
        "attempts": mean("attempts"),
    }


def show(label: str, s: dict) -> None:
    print(f"{label:<16} n={s['n']:<3} valid={s['valid']:.3f} whole_titles={s['whole_titles']:.3f} "
          f"in_budget={s['in_budget']:.3f} (under_min={s['under_min']} over_max={s['over_max']}) "
          f"routed={s['routed']:.3f} p50={s['p50_s']:.1f}s p90={s['p90_s']:.1f}s | "
          f"prompt {s['prompt_tokens']:.0f} tok ({s['prompt_eval_tokens']:.0f} evaluated, {s['prompt_eval_s']:.1f}s) "
          f"generated {s['completion_tokens']:.0f} tok ({s['generation_s']:.1f}s) attempts {s['attempts']:.2f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    ap.add_argument("--llm", default="local")
    ap.add_argument("--video", default="ltx", help="the video model whose text-encoder budget the plans must fit")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--modes", default="pe,basic")
    ap.add_argument("--reference", type=int, default=0, metavar="N",
                    help="also run the previous plan step (commit %s) on the first N prompts" % LEGACY_COMMIT)
    ap.add_argument("--order", choices=("mode", "prompt"), default="mode",
                    help="mode: every PE plan, then every Basic one (as `popcorn batch` plans, so each mode's fixed "
                         "instructions stay in the KV cache); prompt: both modes prompt by prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write every plan's row here")
    ap.add_argument("--fresh", type=int, default=0, metavar="N",
                    help="then N PE plans of the first prompts, each in a fresh `popcorn plan` process (after one "
                         "untimed), against the in-process PE p50")
    args = ap.parse_args()

    rows_in = read_prompts(args.prompts)
    if args.limit:
        rows_in = rows_in[: args.limit]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    fit = video_budget(args.video)
    print(f"{len(rows_in)} prompts from {args.prompts}; llm {args.llm}; video {args.video}: {fit.tokens} tokens "
          f"({fit.source}), {fit.words_min}-{fit.words_max} words, cap {fit.max_chars} characters", flush=True)
    print(f"machine: {machine()}\ncpu: {cpu_line()}\nllama.cpp: {llama_build()}", flush=True)
    templates = _legacy_templates() if args.reference else None

    warm = time.perf_counter()
    new_plan("warm-up: a cat watching rain from a window", "basic", args.llm, args.video, args.seed)
    pipeline.retrieve("warm-up: a cat watching rain from a window", 10)
    print(f"warm-up {time.perf_counter() - warm:.1f}s", flush=True)

    results: dict[str, list[dict]] = {m: [] for m in modes}
    reference: dict[str, list[dict]] = {m: [] for m in modes}
    if args.order == "mode":  # all PE plans, then all Basic ones: the order of `popcorn batch`'s plan stage
        order = [(i, mode) for mode in modes for i in range(len(rows_in))]
    else:  # prompt by prompt, both modes each: a user switching modes between plans
        order = [(i, mode) for i in range(len(rows_in)) for mode in modes]
    for i, mode in order:
        kind, category, query = rows_in[i]
        row = new_plan(query, mode, args.llm, args.video, args.seed + i)
        results[mode].append({**row, "query": query, "type": kind, "category": category})
        if args.reference and i < args.reference:
            old = legacy_plan(query, mode, args.llm, args.video, args.seed + i, templates)
            reference[mode].append({**old, "query": query, "type": kind, "category": category})
            print(f"  old {mode:<5} {old['seconds']:6.1f}s valid={old['valid']} whole={old.get('whole_title')} "
                  f"budget={old.get('in_budget')} words={old.get('video_words')} {old.get('title', '')!r}",
                  flush=True)
        print(f"{i + 1:3d} {mode:<5} {row['seconds']:6.1f}s valid={row['valid']} whole={row.get('whole_title')} "
              f"budget={row.get('in_budget')} words={row.get('video_words')} tries={row.get('attempts')} "
              f"{row.get('title', row.get('error', ''))!r} | {query[:50]}", flush=True)

    print()
    cats = [c for _, c, _ in rows_in]
    every = []
    for mode in modes:
        s = summary(results[mode], cats)
        show(f"new {mode}", s)
        every += results[mode]
        if reference[mode]:
            old = summary(reference[mode], cats[: len(reference[mode])])
            same = summary(results[mode][: len(reference[mode])], cats[: len(reference[mode])])
            show(f"old {mode} (ref)", old)
            show(f"new {mode} (same)", same)
            print(f"{mode}: new/old p50 {same['p50_s'] / old['p50_s']:.2f}x  p90 {same['p90_s'] / old['p90_s']:.2f}x  "
                  f"(speed-up p50 {old['p50_s'] / same['p50_s']:.2f}x)", flush=True)
    fresh = []
    if args.fresh and "pe" in results:
        fresh = fresh_plans(rows_in, args.fresh, args.llm, args.seed)
        same = results["pe"][: len(fresh)]  # the same prompts and seeds, planned in this process above
        in_process = summary(same, cats[: len(fresh)])["p50_s"]
        walls = [r["wall_s"] for r in fresh]
        alike = sum(r["title"] == w.get("title") for r, w in zip(fresh, same))
        print(f"fresh processes: PE plan p50 {percentile(walls, 0.5):.2f}s from launch to exit "
              f"(the plan itself {percentile([r['plan_s'] for r in fresh], 0.5):.2f}s), in-process PE p50 of the "
              f"same {len(fresh)} prompts {in_process:.2f}s: {percentile(walls, 0.5) / in_process:.2f}x (goal <= 1.2x); "
              f"the same title in {alike} of {len(fresh)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"new": results, "reference": reference, "fresh": fresh}, indent=1,
                                        ensure_ascii=False), encoding="utf-8")
    total = summary(every, [r["category"] for r in every])
    pe = summary(results.get("pe", []), cats) if "pe" in results else total
    print(f"plans valid={total['valid']:.3f} whole_titles={total['whole_titles']:.3f} "
          f"in_budget={total['in_budget']:.3f} p50_s={pe['p50_s']:.2f} p90_s={pe['p90_s']:.2f} n={len(rows_in)}")


if __name__ == "__main__":
    main()
