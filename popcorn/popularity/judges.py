"""Two judges of a generated title, and its human-matched video scored beside it on the same footing.

    h        the studio's predictor, trained on the retrieval corpus (what PE shows the LLM): it can reward a title for
             words borrowed from the references, since those are its own memory
    heldout  the same model trained on the judge set only (popcorn/retrieval/split.py): it never saw a title any plan
             could have been shown, so PE cannot flatter it by borrowing

`score_same_footing()` is the score step of a run (popcorn/pipeline.py `score`): the generated title and the human-
matched video (the nearest video of the human pool to the query, within the run's category) are scored by each judge
through the same call, with the same category. Neither judge was trained on the human pool, so for both the human
video is as new as the generated title; no out-of-fold shortcut is involved.

The category is decided by the caller (one source for every arm of a prompt: the prompt file's, else routed from the
query). A sensitivity variant, "title_inferred", scores each title with the category each judge infers from it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from popcorn.retrieval import split
from popcorn.popularity.metrics import regression_metrics
from popcorn.popularity.predictor import (Predictor, checkpoint_path, default_settings, fit_predictor, get_predictor,
                                          log_progress)
from popcorn.retrieval.corpus import load_corpus

Progress = Callable[[str], None]

NAMES = ("h", "heldout")
DESCRIPTIONS = {"h": "h: trained on the retrieval corpus (what PE retrieves from)",
                "heldout": "held-out judge: the same model trained on the judge set only (never seen by any plan)"}
SAME_INPUTS = "same-inputs"
CONFOUNDED = "confounded"  # the rule before issue 23, kept for re-scoring old runs and the sensitivity analysis
RULES = (SAME_INPUTS, CONFOUNDED)

_HELDOUT: dict[str, Predictor] = {}
_LOCK = threading.Lock()


def heldout_judge(progress: Progress | None = None) -> Predictor:
    """h's model trained on the judge set alone: trained once (about a minute on 2 cores), its checkpoint cached beside
    h's (named by the judge set's fingerprint), then loaded once per process."""
    corpus = load_corpus(part="judge")
    with _LOCK:
        if corpus.fingerprint in _HELDOUT:
            return _HELDOUT[corpus.fingerprint]
        settings = default_settings(corpus)
        path = checkpoint_path(corpus, settings)
        if path.exists():
            judge = Predictor.load(path)
        else:
            say = progress or log_progress
            say(f"training the held-out judge once on the judge set ({len(corpus)} videos) -> {path}")
            judge = fit_predictor(corpus, settings, say)
            judge.info["part"] = "judge"
            judge.save(path)
        _HELDOUT[corpus.fingerprint] = judge
        return judge


def get_judges(progress: Progress | None = None) -> dict[str, Predictor]:
    return {"h": get_predictor(progress=progress), "heldout": heldout_judge(progress)}


def validation(judges: dict[str, Predictor] | None = None) -> dict[str, Any]:
    """Each judge's out-of-fold metrics on its own training set, and both on the human pool (seen by neither)."""
    judges = judges or get_judges()
    pool = load_corpus(part="human").table
    titles, categories = pool["title"].astype(str).tolist(), pool["category"].astype(str).tolist()
    out = {}
    for name, judge in judges.items():
        predicted = judge.predict_labels(titles, categories)
        out[name] = {"trained_on": judge.info.get("n_train"), "out_of_fold": judge.info.get("validation"),
                     "human_pool": {"kind": "the human-matched pool (not trained on)",
                                    **regression_metrics(pool["comments"].map(_label).to_numpy(), predicted)}}
    return out


def _label(comments: int) -> float:
    from popcorn.retrieval.corpus import popularity_label

    return float(popularity_label(comments))


def _labels(judges: dict[str, Predictor], titles: list[str], categories: list[str | None]) -> list[dict[str, float]]:
    """{judge name: label} per title, every judge scoring the same (title, category) inputs."""
    per_judge = {name: judge.score_batch([{"title": t, "category": c} for t, c in zip(titles, categories)])
                 for name, judge in judges.items()}
    return [{name: scores[i].label for name, scores in per_judge.items()} for i in range(len(titles))]


def score_same_footing(title: str, description: str, query: str, category: str | None, category_source: str,
                       video: str | None = None, judges: dict[str, Predictor] | None = None) -> tuple[dict, dict]:
    """(score, baseline) of one run under the same-inputs rule (module doc). score: h's Score of the title with
    `category`, its source, `judges` {"h", "heldout"} and `sensitivity`; baseline: the human-matched video, scored by
    each judge with the same category, and its title-inferred variant."""
    from popcorn.popularity.baseline import human_match

    judges = judges or get_judges()
    h = judges["h"]
    result = h.score(title, description=description, category=category, video=video).to_dict()
    matched = human_match(query, result["category"])  # the given category, or the one h inferred from the title
    human_titles = [v["title"] for v in matched["videos"]]
    given = _labels(judges, [title] + human_titles, [result["category"]] * (1 + len(human_titles)))
    inferred = _labels(judges, [title] + human_titles, [None] * (1 + len(human_titles)))
    source = category_source or ("title (inferred by h)" if result["category_inferred"] else "given")
    result.update({"category_source": source, "rule": SAME_INPUTS, "split_seed": split.SEED, "judges": given[0],
                   "sensitivity": {"title_inferred": inferred[0]}})
    for video_row, labels, variant in zip(matched["videos"], given[1:], inferred[1:]):
        predicted = labels["h"]  # what the studio's card shows beside the generated video's h
        video_row.update({"judges": labels, "sensitivity": {"title_inferred": variant},
                          "predicted_label": predicted, "predicted_comments": round(2.0 ** predicted - 1.0, 2),
                          "percentile_category": h.percentile(predicted, result["category"]),
                          "percentile_overall": h.percentile(predicted)})
    baseline = {**matched, "category": result["category"], "rule": SAME_INPUTS,
                "judges": _mean([v["judges"] for v in matched["videos"]]),
                "sensitivity": {"title_inferred": _mean([v["sensitivity"]["title_inferred"]
                                                         for v in matched["videos"]])}}
    baseline["mean_predicted_label"] = baseline["judges"].get("h")
    return result, baseline


def score_confounded(title: str, description: str, query: str, category: str | None, video: str | None = None,
                     judges: dict[str, Predictor] | None = None) -> tuple[dict, dict]:
    """The rule before issue 23, for re-scoring: the category is what the arm carried (PE: routed from the query;
    Basic: none, so h infers one from the title), and each run is matched to its own human video among h's training
    videos, scored out of fold. The held-out judge gets the same title and category as h."""
    from popcorn.popularity.baseline import human_baseline

    judges = judges or get_judges()
    h = judges["h"]
    result = h.score(title, description=description, category=category, video=video).to_dict()
    baseline = human_baseline(query, k=1, category=result["category"], predictor=h)
    heldout = judges["heldout"].score_batch([{"title": title, "category": result["category"]}
                                             for title in [title] + [v["title"] for v in baseline["videos"]]])
    result.update({"category_source": "title (inferred by h)" if result["category_inferred"] else "the arm's routing",
                   "rule": CONFOUNDED, "judges": {"h": result["label"], "heldout": heldout[0].label}})
    baseline.update({"rule": CONFOUNDED, "judges": {"h": baseline["mean_predicted_label"],
                                                    "heldout": _mean([{"x": s.label} for s in heldout[1:]])["x"]}})
    return result, baseline


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {k: round(sum(r[k] for r in rows) / len(rows), 4) for k in rows[0]}
