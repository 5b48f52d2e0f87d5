"""PE+ against PE and Basic, and what each part of PE+ adds (issue 28), from the runs of one batch folder.

Run a batch with the three modes over a typed prompt file, then this:

    python -m popcorn batch --prompts prompts/findings.tsv --modes basic,pe,plus --llms local --videos storyboard --out B
    python bench/plus.py B [--json]

Every arm of a prompt is scored with the same judge inputs (the batch's same-inputs rule: the prompt file's category,
else the one routed from the query). Arms:
    basic, pe, plus      the runs themselves (score.judges of each run.json)
    plus:first           PE+'s own first plan title (PE's prompt and seed inside PE+, before any draft)
    plus:draft1          PE+'s first drafted title, taken without ranking (do drafts alone help?)
    plus:by_h            the title plain h ranks first among the same kept titles (session 8's PE+: its ranker)
    plus                 the title PE+ chose: ranked by h with the references shown out of its memory (session 9;
                         near-copies of references dropped before either ranking)
The drafts are scored here by both judges with the run's own score category, as the score step scores a title
(popcorn.popularity.judges: title + category). Win rates are paired per prompt (ties apart), with a prompt-level
bootstrap 95% interval (popcorn.stats.win_rate). Selection is by h only: the held-out judge is the one to believe.

Also: near-copies of the references shown and of any corpus title (popcorn.retrieval.copies) per arm, beside the
human base rate; the plan step's seconds (retrieve + plan) p50 / p90 per mode.
The plan seconds come from the runs' own timings: compare modes only from batches run on the same machine under the
same load (plan_ratio is their p50 ratio).
Last line: plus heldout_vs_basic=<float> heldout_vs_pe=<float> plan_ratio=<float> n=<prompts with a PE+ run>
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn import pipeline, stats  # noqa: E402
from popcorn.popularity.judges import NAMES, get_judges  # noqa: E402
from popcorn.retrieval.copies import NgramIndex, is_near_copy  # noqa: E402
from popcorn.retrieval.corpus import load_corpus  # noqa: E402
from popcorn.store import Store  # noqa: E402
from popcorn.types import Retrieval, Settings  # noqa: E402

COMPARISONS = [("plus", "basic"), ("plus", "pe"), ("pe", "basic"), ("plus:first", "pe"), ("plus:draft1", "pe"),
               ("plus", "plus:first"), ("plus:draft1", "plus:first"), ("plus:by_h", "plus:first"),
               ("plus", "plus:by_h"), ("plus:by_h", "basic"), ("plus:by_h", "pe")]
ARMS = ("basic", "pe", "plus", "plus:first", "plus:draft1", "plus:by_h")


def load_runs(folder: Path) -> list[dict]:
    """Every run of the batch's store that has a plan. A run planned but not yet scored (a batch stopped before its
    score stage) is scored here under the batch's same-inputs rule (pipeline.score_category: the prompt file's
    category, else routed from the query; both judges on the title), so a stopped batch still compares."""
    from popcorn.popularity.judges import score_same_footing

    runs = []
    for run in Store(home=folder).list_runs(limit=100_000):
        if not run.get("plan"):
            continue
        if not (run.get("score") or {}).get("judges"):
            settings = Settings.from_dict(run["settings"])
            retrieval = Retrieval.from_dict(run["retrieval"]) if run.get("retrieval") else None
            category, source = pipeline.score_category(settings, retrieval)
            run["score"], _ = score_same_footing(run["plan"]["title"], run["plan"].get("video_prompt", ""),
                                                 settings.query, category, source)
        runs.append(run)
    return runs


def prompt_key(run: dict) -> tuple:
    s = run["settings"]
    return (s["query"], s.get("seed", 0), s.get("llm"), s.get("video"))


def arms(runs: list[dict], judges) -> dict[tuple, dict[str, dict]]:
    """prompt -> arm -> {"title", "judges": {name: label}, "type", "refs", "seconds"}."""
    out: dict[tuple, dict[str, dict]] = defaultdict(dict)
    drafted = []  # (prompt, arm, title, category) to score in one batch per judge
    for run in runs:
        s, plan, score = run["settings"], run["plan"], run["score"]
        mode = s["mode"]
        if mode == "pe" and s.get("k", 10) != 10:
            continue  # the K sweep's other K values are not PE+'s comparison
        key = prompt_key(run)
        base = {"type": (s.get("batch") or {}).get("type", ""), "refs": [r["title"] for r in plan.get("references") or []],
                "seconds": sum(run.get("timings", {}).get(k, 0.0) for k in ("retrieve", "plan"))}
        out[key][mode] = {**base, "title": plan["title"], "judges": score["judges"]}
        if mode == "plus":
            drafts = plan.get("drafts") or []
            first = next((d for d in drafts if d.get("source") == "pe"), None)
            one = next((d for d in drafts if d.get("source") == "draft 1"), None)
            by_h = by_plain_h(drafts)
            for arm, row in (("plus:first", first), ("plus:draft1", one), ("plus:by_h", by_h)):
                if row is not None:
                    drafted.append((key, arm, row["title"], score.get("category")))
                    out[key][arm] = {**base, "title": row["title"], "judges": {}}
    for name in NAMES:
        scores = judges[name].score_batch([{"title": t, "category": c} for _, _, t, c in drafted])
        for (key, arm, _, _), sc in zip(drafted, scores):
            out[key][arm]["judges"][name] = sc.label
    return out


def by_plain_h(drafts: list[dict]) -> dict | None:
    """The draft plain h ranks first (the earliest on a tie, as popcorn.popularity.rank_plans orders), or None for a
    run recorded before PE+ kept both labels."""
    scored = [d for d in drafts if "dropped" not in d and "h" in d]
    if not scored or not any("h_unseen" in d for d in scored):
        return None
    return max(scored, key=lambda d: d["h"])  # max keeps the first of equal keys


def compare(table: dict, a: str, b: str, judge: str, kind: str = "") -> dict:
    outcomes, groups = [], []
    for i, (key, by_arm) in enumerate(sorted(table.items())):
        if a in by_arm and b in by_arm and (not kind or by_arm[a]["type"] == kind):
            outcomes.append(stats.compare(by_arm[a]["judges"][judge], by_arm[b]["judges"][judge]))
            groups.append(i)
    return stats.win_rate(outcomes, groups) if outcomes else {"n": 0}


def near_copies(table: dict, arm: str, index: NgramIndex) -> dict:
    rows = [by_arm[arm] for by_arm in table.values() if arm in by_arm]
    if not rows:
        return {"n": 0}
    of_refs = [any(is_near_copy(r["title"], ref) for ref in r["refs"]) for r in rows]
    nearest = index.nearest([r["title"] for r in rows])
    of_corpus = [jac >= 0.5 or cont >= 0.9 for jac, _, cont, _ in nearest]
    return {"n": len(rows), "of_references": float(np.mean(of_refs)), "of_corpus": float(np.mean(of_corpus))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    judges = get_judges()
    table = arms(load_runs(args.folder), judges)
    report = {"n_prompts": len(table), "comparisons": [], "near_copies": {}, "plan_seconds": {}}
    for judge in NAMES:
        for a, b in COMPARISONS:
            for kind in ("", "abstract", "concrete"):
                r = compare(table, a, b, judge, kind)
                if r.get("n"):
                    report["comparisons"].append({"judge": judge, "a": a, "b": b, "type": kind or "all", **r})
    index = NgramIndex(load_corpus().table["title"].astype(str).tolist())
    for arm in ARMS:
        report["near_copies"][arm] = near_copies(table, arm, index)
    for mode in ("basic", "pe", "plus"):
        secs = [by_arm[mode]["seconds"] for by_arm in table.values() if mode in by_arm]
        if secs:
            report["plan_seconds"][mode] = {"p50": float(np.median(secs)), "p90": float(np.percentile(secs, 90)),
                                            "n": len(secs)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for c in report["comparisons"]:
            ci = c.get("win_rate_ci95") or [float("nan")] * 2
            print(f"{c['judge']:>7} {c['type']:>8} {c['a']:>11} vs {c['b']:<11} win={c['win_rate']:.3f} "
                  f"[{ci[0]:.2f}, {ci[1]:.2f}] wins={c['wins']} ties={c['ties']} losses={c['losses']} n={c['n']}")
        for arm, r in report["near_copies"].items():
            if r.get("n"):
                print(f"near-copies {arm:>11}: of references {r['of_references']:.3f}, of the corpus "
                      f"{r['of_corpus']:.3f} (n={r['n']})")
        for mode, r in report["plan_seconds"].items():
            print(f"plan seconds {mode:>5}: p50 {r['p50']:.1f} p90 {r['p90']:.1f} (n={r['n']})")

    def rate(a, b):
        return next((c["win_rate"] for c in report["comparisons"]
                     if (c["judge"], c["a"], c["b"], c["type"]) == ("heldout", a, b, "all")), float("nan"))

    secs = report["plan_seconds"]
    ratio = secs["plus"]["p50"] / secs["pe"]["p50"] if "plus" in secs and "pe" in secs else float("nan")
    with_plus = sum("plus" in by_arm for by_arm in table.values())
    print(f"plus heldout_vs_basic={rate('plus', 'basic'):.4f} heldout_vs_pe={rate('plus', 'pe'):.4f} "
          f"plan_ratio={ratio:.3f} n={with_plus}")


if __name__ == "__main__":
    main()
