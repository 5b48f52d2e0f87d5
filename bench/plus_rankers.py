"""Which ranker of PE+'s title drafts carries over to a judge trained on other videos? A proxy study on the retrieval
corpus alone (issue 28, session 9): the held-out judge and its judge set are never read here.

Why: ranking the drafts by h won 18-10-0 under h and 9-10-9 under the held-out judge (bench/RESULTS.md): h's choice
among near-identical titles did not carry over. The held-out judge is h's model trained on videos that no plan ever
saw. Its proxy here is the same model trained on a share of the retrieval corpus that (a) holds none of the references
shown for the tuned prompts and (b) no ranker below was trained on. Rankers, each trained on the rest of the retrieval
corpus (so, like h, they saw the references):

    full       the model as h is: every training video in its neighbour memory
    masked     the same model, the references shown for the prompt taken out of its neighbour memory
               (popcorn/popularity/unseen.py): the LLM borrowed from them, and h rewards a title whose nearest training
               videos are those popular references
    noret      the model without neighbour features (retrieval=()), trained on the same videos
    halves     the mean of two models, each trained on one half of those videos (references masked): agreement
    none       PE's own title (no ranking);  draft1: the first draft, no ranking

On the stored drafts of the 28 tuned PE+ runs (a copy of the findings batch folder), each ranker's choice is compared
with PE's title and the first draft under the proxy judge (and under the ranker's own full model, to see the gaming),
and each ranker's within-prompt pairwise agreement with the proxy judge is given.

    python bench/plus_rankers.py fit FOLDER     # trains the models once into FOLDER/models (minutes)
    python bench/plus_rankers.py eval FOLDER BATCH
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn import stats  # noqa: E402
from popcorn.popularity.predictor import Predictor, default_settings, fit_predictor, log_progress  # noqa: E402
from popcorn.popularity.unseen import without_memory  # noqa: E402
from popcorn.retrieval import split  # noqa: E402
from popcorn.retrieval.corpus import Corpus, load_corpus  # noqa: E402
from popcorn.store import Store  # noqa: E402

PROXY_SEED = 2809  # its own draw, not the judge split's
PROXY_SHARE = 0.25


def tuned_runs(batch: Path) -> list[dict]:
    return [r for r in Store(home=batch).list_runs(limit=100_000) if r["settings"]["mode"] == "plus"]


def shown_ids(batch: Path) -> set[int]:
    ids = set()
    for r in Store(home=batch).list_runs(limit=100_000):
        for ref in (r.get("retrieval") or {}).get("references") or []:
            ids.add(int(ref["video_id"]))
    return ids


def parts(corpus: Corpus, shown: set[int]) -> dict[str, np.ndarray]:
    ids = corpus.table["video_id"].to_numpy(np.int64)
    u = np.array([split.draw(v, PROXY_SEED) for v in ids])
    is_shown = np.isin(ids, list(shown))
    proxy = (u < PROXY_SHARE) & ~is_shown
    rest = ~proxy
    half = np.array([split.draw(v, PROXY_SEED + 1) for v in ids]) < 0.5
    return {"proxy": ids[proxy], "rest": ids[rest], "half1": ids[rest & half], "half2": ids[rest & ~half]}


def subset(corpus: Corpus, ids: np.ndarray) -> Corpus:
    keep = corpus.table["video_id"].isin(ids).to_numpy()
    return Corpus(corpus.table[keep].reset_index(drop=True), corpus.source)


def fit(folder: Path, batch: Path) -> None:
    corpus = load_corpus()
    shown = shown_ids(batch)
    ids = parts(corpus, shown)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    base = default_settings(corpus)
    plan = {"proxy": (ids["proxy"], base), "full": (ids["rest"], base),
            "noret": (ids["rest"], replace(base, retrieval=())),
            "half1": (ids["half1"], base), "half2": (ids["half2"], base)}
    for name, (part, settings) in plan.items():
        path = folder / "models" / f"{name}.joblib"
        if path.exists():
            continue
        log_progress(f"{name}: {len(part)} videos ({len(shown)} references shown for the tuned prompts)")
        fit_predictor(subset(corpus, part), settings, log_progress).save(path)


def candidates(run: dict) -> list[dict]:
    return [d for d in run["plan"].get("drafts") or [] if "dropped" not in d]


def evaluate(folder: Path, batch: Path) -> dict:
    models = {n: Predictor.load(folder / "models" / f"{n}.joblib") for n in ("proxy", "full", "noret", "half1", "half2")}
    rows = []
    basic = {r["settings"]["query"]: r["plan"]["title"] for r in Store(home=batch).list_runs(limit=100_000)
             if r["settings"]["mode"] == "basic" and r.get("plan")}
    for run in tuned_runs(batch):
        cands = candidates(run)
        b_title = basic[run["settings"]["query"]]
        if b_title.lower() not in {c["title"].lower() for c in cands}:
            cands = cands + [{"title": b_title, "source": "basic"}]
        category = run["score"].get("category")
        refs = [int(r["video_id"]) for r in run["retrieval"]["references"]]
        titles = [c["title"] for c in cands]
        routed = (run["plan"].get("matched_categories") or [None])[0]  # what PE+ ranks with (rank_plans)

        def labels(predictor: Predictor, cat: str | None = routed) -> np.ndarray:
            return np.array([s.label for s in predictor.score_batch([{"title": t, "category": cat} for t in titles])])

        masked = {n: without_memory(models[n], refs) for n in ("full", "half1", "half2")}
        scores = {"proxy": labels(models["proxy"], category), "full": labels(models["full"]), "masked": labels(masked["full"]),
                  "noret": labels(models["noret"]),
                  "halves": (labels(masked["half1"]) + labels(masked["half2"])) / 2}
        first = next(i for i, c in enumerate(cands) if c["source"] == "pe")
        one = next((i for i, c in enumerate(cands) if c["source"] == "draft 1"), first)
        scores["full_as_judge"] = labels(models["full"], category)  # the ranker's own model, scoring as a judge does
        b = next(i for i, c in enumerate(cands) if c["title"].lower() == b_title.lower())
        rows.append({"query": run["settings"]["query"], "type": run["settings"]["batch"]["type"], "titles": titles,
                     "scores": {k: v.tolist() for k, v in scores.items()}, "first": first, "draft1": one,
                     "basic": b, "sources": [c["source"] for c in cands]})
    (folder / "rows.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return summarise(rows)


RANKERS = ("full", "masked", "noret", "halves")


def pick(r: dict, ranker: str, with_basic: bool) -> int:
    """The candidate a ranker chooses (PE's title, the drafts and, with_basic, the Basic run's title)."""
    if ranker in ("first", "draft1", "basic"):
        return r[ranker]
    allowed = [i for i, src in enumerate(r["sources"]) if with_basic or src != "basic"]
    return max(allowed, key=lambda i: (r["scores"][ranker][i], -i))


def summarise(rows: list[dict]) -> dict:
    out = {"n_prompts": len(rows), "comparisons": [], "agreement": {}}
    for judge in ("proxy", "full_as_judge"):
        arms = [("first", False), ("draft1", False)] + [(k, b) for k in RANKERS for b in (False, True)]
        for ranker, with_basic in arms:
            for base in ("first", "draft1", "basic"):
                if base == ranker:
                    continue
                outcomes = [stats.compare(r["scores"][judge][pick(r, ranker, with_basic)],
                                          r["scores"][judge][r[base]]) for r in rows]
                res = stats.win_rate(outcomes, list(range(len(outcomes))))
                out["comparisons"].append({"judge": judge, "ranker": ranker + ("+basic" if with_basic else ""),
                                           "vs": base, **{k: res[k] for k in ("win_rate", "wins", "ties", "losses")},
                                           "ci": res.get("win_rate_ci95")})
    for ranker in RANKERS:
        for scope, with_basic in (("pe+ candidates", False), ("with the basic title", True)):
            agree = pairs = 0
            for r in rows:
                idx = [i for i, src in enumerate(r["sources"]) if with_basic or src != "basic"]
                for i, j in itertools.combinations(idx, 2):
                    dp, dr = r["scores"]["proxy"][i] - r["scores"]["proxy"][j], r["scores"][ranker][i] - r["scores"][ranker][j]
                    if dp and dr:
                        agree, pairs = agree + ((dp > 0) == (dr > 0)), pairs + 1
            out["agreement"][f"{ranker} ({scope})"] = {"pairs": pairs, "share": agree / pairs if pairs else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("fit", "eval"))
    ap.add_argument("folder", type=Path)
    ap.add_argument("batch", type=Path)
    args = ap.parse_args()
    if args.what == "fit":
        fit(args.folder, args.batch)
    else:
        report = evaluate(args.folder, args.batch)
        for c in report["comparisons"]:
            ci = c["ci"] or [float("nan")] * 2
            print(f"{c['judge']:>13} {c['ranker']:>13} vs {c['vs']:<7} {c['win_rate']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] "
                  f"{c['wins']}-{c['ties']}-{c['losses']}")
        for k, v in report["agreement"].items():
            print(f"agreement with the proxy judge, {k:>30}: {v['share']:.3f} of {v['pairs']} within-prompt pairs")
        (args.folder / "rankers.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
