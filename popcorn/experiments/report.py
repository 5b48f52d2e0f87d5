"""The paper's tables from one batch folder: `build_report(DIR)` -> one JSON-ready dict; `to_markdown()`; PNGs.

Every table is split by prompt type (abstract / concrete, and both together), computed under both judges (h and the
held-out judge, popcorn/popularity/judges.py), from the runs' run.json alone (`score.judges`, `baseline.judges`):

    table1    median predicted popularity per prompt type x category x condition (LLM / mode / K)
    table2    the medians beside the human-matched videos (Concrete-M / Abstract-M), one per prompt
    table3    PE vs Basic per LLM (and per K)
    table5    LLM vs LLM, Basic and PE apart
    table6    video model vs video model, Basic and PE apart (or why it says nothing: h does not see the video)
    k_sweep   medians per K, PE at each K vs Basic, and K vs K
    vs_human  each condition against the prompt's human-matched video
    fig3      the distribution per LLM per prompt type (PNG, one per judge)

Every win rate pairs runs equal in everything but the compared factor (and their setting: router, clip length, split
seed), counts ties apart, carries n (pairs), the prompts, a bootstrap 95% interval that resamples prompts and a
sign-flip p-value over prompts, Holm-adjusted across the comparisons of one table (popcorn/stats.py). The same-inputs
rule is checked on the runs (`same_inputs`), and the title-inferred variant is reported as a sensitivity table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

import numpy as np

from popcorn import stats
from popcorn.store import Store
from popcorn.types import REFERENCE_MODES, StageError

PAIR_KEY = ("prompt_index", "setting", "mode", "llm", "video", "seed", "k")
VIDEO_NOT_USED = "the video file is not used"  # h's note when it scored a title without its video
JUDGES = ("h", "heldout")
TITLE_INFERRED = "title_inferred"
ALL = "(all)"

RULE = ("Same inputs for every arm of a prompt: the category each judge gets is the prompt file's, else the category "
        "routed from the query (the run's router), the same for Basic and PE; every arm of a prompt is compared with "
        "the same human-matched video (the nearest video of the human pool to the query, within that category), which "
        "both judges score through the same call as the generated titles. Neither judge was trained on the human pool "
        "(popcorn/retrieval/split.py).")

SCALE = ("h predicts MMRA's label for MicroLens, log2(1 + comments), so 3.0 means 7 predicted comments. The paper "
         "reports medians of 0.44-0.73 on a scale it does not define in what we could read (MMRA's released loader "
         "reads a precomputed `label` column; its transform is not in the code we found). On log2(1 + comments), "
         "0.44-0.73 would be under one comment, lower than {below:.0%} of the human pool's actual labels, so the paper's "
         "numbers are on "
         "another (normalised) scale. With no definition there is no mapping: beside each median we give its "
         "percentile among the actual labels of the MicroLens human pool, a scale-free reading that the paper's "
         "numbers could be compared with if its transform were known.")


@dataclass
class Row:
    """One run as the report reads it."""

    id: str
    prompt_index: int
    query: str
    type: str
    category: str  # the prompt file's category ("" when none)
    mode: str
    llm: str
    video: str
    seed: int
    status: str
    title: str = ""
    label: float | None = None  # h's predicted log2(1 + comments)
    human_label: float | None = None  # the human-matched video under h
    human_video: int | None = None
    k: int | None = None  # PE's K (None for Basic: it retrieves nothing)
    setting: str = ""  # what else changes the output (router, clip length, split seed): never pooled across
    labels: dict = field(default_factory=dict)  # judge -> label
    human: dict = field(default_factory=dict)  # judge -> the human-matched video's label
    inferred: dict = field(default_factory=dict)  # judge -> label with the category inferred from the title
    human_inferred: dict = field(default_factory=dict)
    h_category: str | None = None  # the category the judges scored in
    category_source: str = ""
    rule: str = ""
    references: list[str] = field(default_factory=list)  # titles shown to the LLM (PE)
    video_used: bool = False  # h read the rendered video (a frame encoder), not only the title
    failed_stage: str = ""
    show_setting: bool = False  # the folder holds several settings: conditions name theirs

    def __post_init__(self):
        if self.label is not None and "h" not in self.labels:
            self.labels = {**self.labels, "h": self.label}
        if self.human_label is not None and "h" not in self.human:
            self.human = {**self.human, "h": self.human_label}

    @property
    def condition(self) -> str:
        return (f"{self.llm}/{self.mode}" + (f" K={self.k}" if self.mode in REFERENCE_MODES and self.k is not None else "")
                + (f" [{self.setting}]" if self.show_setting else ""))


def _row(record: dict) -> Row | None:
    settings = record.get("settings") or {}
    meta = settings.get("batch")
    if meta is None:  # not a batch run (e.g. a studio run in the same store)
        return None
    plan = record.get("plan") or {}
    score = record.get("score") or {}
    baseline = record.get("baseline") or {}
    videos = baseline.get("videos") or []
    notes = " ".join(score.get("notes") or [])
    done = record.get("status") == "done"
    mode = settings.get("mode", "")
    k = meta.get("k", settings.get("k")) if mode in REFERENCE_MODES else None
    setting = ", ".join(f"{name} {meta.get(key, settings.get(key, '?'))}" for name, key in
                        (("router", "router"), ("clip", "clip_seconds"), ("split", "split_seed")))
    labels = dict(score.get("judges") or ({"h": score["label"]} if "label" in score else {})) if done else {}
    return Row(
        id=record["id"], prompt_index=int(meta.get("prompt_index", -1)), query=settings.get("query", ""),
        type=meta.get("type") or "", category=meta.get("category") or "", mode=mode,
        llm=settings.get("llm", ""), video=settings.get("video", ""), seed=int(settings.get("seed", 0)),
        status=record.get("status", ""), title=plan.get("title", ""),
        label=labels.get("h"), labels=labels, k=int(k) if k is not None else None, setting=setting,
        human=dict(baseline.get("judges") or ({"h": baseline["mean_predicted_label"]}
                                              if baseline.get("mean_predicted_label") is not None else {})),
        inferred=dict((score.get("sensitivity") or {}).get(TITLE_INFERRED) or {}) if done else {},
        human_inferred=dict((baseline.get("sensitivity") or {}).get(TITLE_INFERRED) or {}),
        human_label=baseline.get("mean_predicted_label"), human_video=videos[0]["video_id"] if videos else None,
        h_category=score.get("category") or (plan.get("matched_categories") or [None])[0],
        category_source=score.get("category_source", ""), rule=score.get("rule", ""),
        references=[r["title"] for r in plan.get("references") or []],
        video_used=bool((record.get("video") or {}).get("video")) and bool(score) and VIDEO_NOT_USED not in notes,
        failed_stage=((meta.get("failure") or {}).get("stage") or "") if record.get("status") == "failed" else "")


def _by_prompt(rows) -> list[Row]:
    """Rows numbered by their prompt (its query, category and type), not by its line in the prompt file: a folder
    whose runs came from two prompt files (a batch resumed with the prompts reordered, a mode added from another file)
    pairs the arms of the same prompt, and never two prompts that sat on the same line. Numbers follow the smallest
    line a prompt had, so a folder of one file keeps that file's numbering."""
    rows = list(rows)
    first: dict[tuple, int] = {}
    for r in rows:
        key = (r.query, r.category, r.type)
        first[key] = min(first.get(key, r.prompt_index), r.prompt_index)
    number = {key: i for i, key in enumerate(sorted(first, key=lambda k: (first[k], k)))}
    for r in rows:
        r.prompt_index = number[(r.query, r.category, r.type)]
    return rows


def load_rows(out_dir: str | Path) -> list[Row]:
    folder = Path(out_dir)
    if not (folder / "popcorn.db").exists():
        raise StageError("report", f"{folder} holds no batch (no popcorn.db)",
                         "give the --out folder of `python -m popcorn batch`")
    records = Store(home=folder).list_runs(limit=10**9)
    rows = _by_prompt(r for r in map(_row, records) if r is not None)
    if len({r.setting for r in rows}) > 1:  # never pooled: every condition carries its setting
        for r in rows:
            r.show_setting = True
    return sorted(rows, key=lambda r: (r.prompt_index, r.mode, r.llm, r.seed, r.video, r.k or 0))


# ---------------------------------------------------------------------------------------------------- values


Value = Callable[[Row], "float | None"]


def judged(judge: str = "h", variant: str = "") -> Value:
    """A run's label under `judge` ("" variant: the same-inputs category; "title_inferred": the sensitivity one)."""
    return lambda r: (r.inferred if variant == TITLE_INFERRED else r.labels).get(judge)


def human_judged(judge: str = "h", variant: str = "") -> Value:
    return lambda r: (r.human_inferred if variant == TITLE_INFERRED else r.human).get(judge)


def by_type(rows: list[Row]) -> list[tuple[str, list[Row]]]:
    """(prompt type, its rows) for each type, then all types together when there are several; per setting when the
    rows hold several (a type is then named with its setting: no table row pools two settings)."""
    settings = sorted(_names(rows, "setting"))
    if len(settings) > 1:
        return [(f"{kind} [{setting}]", part) for setting in settings
                for kind, part in by_type([r for r in rows if r.setting == setting])]
    kinds = sorted({r.type for r in rows})
    out = [(kind or "(untyped)", [r for r in rows if r.type == kind]) for kind in kinds]
    return out + [(ALL, rows)] if len(kinds) > 1 else out


# ---------------------------------------------------------------------------------------------------- pairs


def paired(rows: list[Row], factor: str, a: str, b: str, value: Value) -> tuple[list[int], list[int]]:
    """Outcomes (+1 a wins, 0 tie, -1 b wins) of the pairs of runs equal in everything but `factor`, and each pair's
    prompt. Comparing modes, K is left out of the key (Basic has none): give rows of one PE K at a time."""
    key_fields = [f for f in PAIR_KEY if f != factor and not (factor == "mode" and f == "k")]
    sides: dict[tuple, dict[str, float]] = {}
    for row in rows:
        side, v = str(getattr(row, factor)), value(row)
        if side in (a, b) and v is not None:
            slot = sides.setdefault(tuple(getattr(row, f) for f in key_fields), {})
            if side in slot:
                raise StageError("report", f"two runs of prompt {row.prompt_index} share every setting but {factor} "
                                 f"({side}): they would be merged", "report each setting's runs apart")
            slot[side] = v
    outcomes, groups = [], []
    for key, found in sides.items():
        if a in found and b in found:
            outcomes.append(stats.compare(found[a], found[b]))
            groups.append(key[0])  # prompt_index comes first in PAIR_KEY
    return outcomes, groups


def _win_row(outcomes: list[int], groups: list[int], **fields) -> dict:
    return {**fields, **stats.win_rate(outcomes, groups), "p": stats.sign_flip_p(outcomes, groups)}


def _with_holm(rows: list[dict]) -> list[dict]:
    for row, adjusted in zip(rows, stats.holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
    return rows


def win_table(rows: list[Row], factor: str, pairs: list[tuple[str, str]], value: Value,
              within: str | None = None) -> list[dict]:
    """One win-rate row per (a, b) pair, optionally per value of `within` (e.g. per LLM); no Holm (see tables)."""
    out = []
    for level in (sorted({getattr(r, within) for r in rows}, key=str) if within else [None]):
        subset = [r for r in rows if within is None or getattr(r, within) == level]
        for a, b in pairs:
            outcomes, groups = paired(subset, factor, a, b, value)
            if outcomes:
                out.append(_win_row(outcomes, groups, **({within: level} if within else {}), a=a, b=b))
    return out


def _pe_ks(rows: list[Row]) -> list[int | None]:
    return sorted({r.k for r in rows if r.mode in REFERENCE_MODES}, key=lambda k: (k is None, k or 0))


# the mode comparisons of table 3, in order: the paper's PE vs Basic first, then PE+ against each
MODE_PAIRS = (("pe", "basic"), ("plus", "basic"), ("plus", "pe"))


def pe_vs_basic(rows: list[Row], value: Value) -> list[dict]:
    """Table 3: every pair of plan modes present (PE vs Basic, PE+ vs Basic, PE+ vs PE), the modes that retrieve at
    each K, per prompt type and LLM; Holm across the table."""
    out = []
    for kind, of_type in by_type(rows):
        for llm in _names(of_type, "llm"):
            mine = [r for r in of_type if r.llm == llm]
            for k in _pe_ks(mine):
                subset = [r for r in mine if r.mode not in REFERENCE_MODES or r.k == k]
                for a, b in MODE_PAIRS:
                    outcomes, groups = paired(subset, "mode", a, b, value)
                    if outcomes:
                        out.append(_win_row(outcomes, groups, type=kind, llm=llm, k=k, a=a, b=b))
    return _with_holm(out)


def _mode_levels(rows: list[Row]) -> list[tuple[str, int | None]]:
    return list(dict.fromkeys((r.mode, r.k if r.mode in REFERENCE_MODES else None) for r in rows))


def factor_table(rows: list[Row], factor: str, value: Value) -> list[dict]:
    """Tables 5 and 6: every pair of LLMs (or video models), per prompt type and mode (PE per K); Holm across."""
    out = []
    names = _names(rows, factor)
    for kind, of_type in by_type(rows):
        for mode, k in _mode_levels(of_type):
            subset = [r for r in of_type if r.mode == mode and r.k == k]
            for a, b in combinations(names, 2):
                outcomes, groups = paired(subset, factor, a, b, value)
                if outcomes:
                    out.append(_win_row(outcomes, groups, type=kind, mode=mode, k=k, a=a, b=b))
    return _with_holm(out)


def k_sweep(rows: list[Row], value: Value) -> dict:
    """Medians per K, and K vs K between PE runs (PE at each K vs Basic is table 3's K column)."""
    ks = [k for k in _pe_ks(rows) if k is not None]
    pairs = []
    for kind, of_type in by_type(rows):
        pe = [r for r in of_type if r.mode == "pe"]
        for llm in _names(pe, "llm"):
            for a, b in combinations(ks, 2):
                outcomes, groups = paired([r for r in pe if r.llm == llm], "k", str(a), str(b), value)
                if outcomes:
                    pairs.append(_win_row(outcomes, groups, type=kind, llm=llm, a=f"K={a}", b=f"K={b}"))
    medians_by_k = [{"type": kind, "k": k, **_cell([value(r) for r in of_type if r.mode == "pe" and r.k == k])}
                    for kind, of_type in by_type(rows) for k in ks]
    return {"ks": ks, "note": "" if len(ks) > 1 else "one K in this batch: run `batch --k 10,50,100` for the sweep",
            "medians": medians_by_k, "k_vs_k": _with_holm(pairs)}


def vs_human(rows: list[Row], value: Value, human: Value) -> list[dict]:
    """Each condition against its prompt's human-matched video (the same video for every arm), per type."""
    out = []
    for kind, of_type in by_type(rows):
        for condition in dict.fromkeys(r.condition for r in of_type):
            mine = [r for r in of_type if r.condition == condition and value(r) is not None and human(r) is not None]
            outcomes = [stats.compare(value(r), human(r)) for r in mine]
            if outcomes:
                out.append(_win_row(outcomes, [r.prompt_index for r in mine], type=kind, condition=condition,
                                    a="generated", b="human-matched"))
    return _with_holm(out)


# ---------------------------------------------------------------------------------------------------- medians


def _cell(values: list[float | None]) -> dict:
    values = [v for v in values if v is not None]
    m = stats.median(values)
    return {"median": m, "predicted_comments": round(2.0 ** m - 1.0, 1) if m is not None else None, "n": len(values)}


def human_matches(rows: list[Row], human: Value | None = None) -> dict[int, float]:
    """One human-matched label per prompt. Under the same-inputs rule every arm of a prompt carries the same video;
    for runs scored before it, the PE run's match is taken (the one the old report used)."""
    human = human or human_judged("h")
    match: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r.mode != "pe"):
        if human(r) is not None and r.status == "done":
            match.setdefault(r.prompt_index, human(r))
    return match


def table1(rows: list[Row], value: Value) -> list[dict]:
    """Median per prompt type x the judges' category x condition (the paper's Table 1 is category x LLM)."""
    done = [r for r in rows if value(r) is not None]
    conditions = list(dict.fromkeys(r.condition for r in done))
    out = []
    for kind, of_type in by_type(done):
        categories = sorted({r.h_category or "?" for r in of_type}) + [ALL]
        for category in categories:
            members = [r for r in of_type if category == ALL or (r.h_category or "?") == category]
            out.append({"type": kind, "category": category, "prompts": len({r.prompt_index for r in members}),
                        "cells": {c: _cell([value(r) for r in members if r.condition == c]) for c in conditions}})
    return out


def table2(rows: list[Row], value: Value, human: Value, pool_labels: np.ndarray | None = None) -> list[dict]:
    """Medians per prompt type beside the human-matched videos (Concrete-M / Abstract-M), with each median's
    percentile among the human pool's actual labels (see SCALE)."""
    done = [r for r in rows if value(r) is not None]
    conditions = list(dict.fromkeys(r.condition for r in done))

    def cell(values):
        c = _cell(values)
        if pool_labels is not None and c["median"] is not None and len(pool_labels):
            c["percentile"] = round(100.0 * float(np.mean(pool_labels <= c["median"])), 1)
        return c

    out = []
    for kind, of_type in by_type(done):
        match = human_matches(of_type, human)
        name = f"{kind.capitalize()}-M" if kind not in (ALL, "(untyped)") else "Human-M"
        out.append({"type": kind, "prompts": len({r.prompt_index for r in of_type}),
                    "cells": {c: cell([value(r) for r in of_type if r.condition == c]) for c in conditions},
                    "human_matched": {"name": name, **cell(list(match.values()))}})
    return out


def medians(rows: list[Row]) -> list[dict]:
    """Table 1 under h (kept for callers of the old report)."""
    return table1(rows, judged("h"))


# ---------------------------------------------------------------------------------------------------- checks


def same_inputs(rows: list[Row]) -> dict:
    """Whether every arm of each prompt (within a setting) was scored in one category against one human video."""
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        if r.status == "done":
            groups.setdefault((r.prompt_index, r.setting), []).append(r)
    broken = []
    for (prompt, setting), members in groups.items():
        categories = {r.h_category for r in members}
        videos = {r.human_video for r in members}
        if len(categories) > 1 or len(videos) > 1:
            broken.append({"prompt_index": prompt, "query": members[0].query, "categories": sorted(map(str, categories)),
                           "human_videos": sorted(map(str, videos))})
    sources: dict[str, int] = {}
    for r in rows:
        if r.status == "done":
            source = r.category_source.split(";")[0].split(",")[0] or "(not recorded)"
            sources[source] = sources.get(source, 0) + 1
    rules = sorted({r.rule or "(before issue 23)" for r in rows if r.status == "done"})
    return {"holds": not broken, "prompts": len(groups), "broken": broken, "category_sources": sources,
            "rules": rules}


def _names(rows: list[Row], field_name: str) -> list[str]:
    return list(dict.fromkeys(getattr(r, field_name) for r in rows))


def _summary(rows: list[Row]) -> dict:
    by_status: dict[str, int] = {}
    failed_at: dict[str, int] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        if r.failed_stage:
            failed_at[r.failed_stage] = failed_at.get(r.failed_stage, 0) + 1
    return {"runs": len(rows), "status": by_status, "failed_at_stage": failed_at,
            "prompts": len({r.prompt_index for r in rows}),
            "types": {kind: len({r.prompt_index for r in rows if r.type == kind}) for kind in _names(rows, "type")},
            "modes": _names(rows, "mode"), "llms": _names(rows, "llm"), "videos": _names(rows, "video"),
            "seeds": sorted({r.seed for r in rows}), "ks": [k for k in _pe_ks(rows) if k is not None],
            "settings": _names(rows, "setting")}


def _video_table(done: list[Row], value: Value, sees_video: bool) -> dict:
    videos = _names(done, "video")
    rows = factor_table(done, "video", value)
    if len(videos) < 2:
        return {"finding": False, "note": "one video model in this batch: nothing to compare", "rows": rows}
    if not sees_video:
        ties = all(r["ties"] == r["n"] for r in rows)
        return {"finding": False, "rows": rows,
                "note": "h does not see the video (no frame encoder in the predictor): its scores depend on the title "
                        "alone, not on the video models' renders, so these pairs say nothing about the video models"
                        + (" (every pair ties)." if ties else "; where pairs differ, the plans differ (each plan is "
                           "written for its video model's prompt budget), not the videos.")}
    return {"finding": True, "note": "h reads frame features of the rendered videos", "rows": rows}


def tables(rows: list[Row], judge: str, pool_labels: np.ndarray | None = None, sees_video: bool = False) -> dict:
    """Every table of the paper under one judge."""
    value, human = judged(judge), human_judged(judge)
    done = [r for r in rows if value(r) is not None]
    return {"table1": table1(done, value), "table2": table2(done, value, human, pool_labels),
            "table3": pe_vs_basic(done, value), "table5": factor_table(done, "llm", value),
            "table6": _video_table(done, value, sees_video), "k_sweep": k_sweep(done, value),
            "vs_human": vs_human(done, value, human)}


def build_report(out_dir: str | Path, judges: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    rows = load_rows(out_dir)
    if not rows:
        raise StageError("report", f"{out_dir} holds no batch runs", "run `python -m popcorn batch ... --out DIR` first")
    done = [r for r in rows if r.labels]
    sees_video = any(r.video_used for r in done)
    pool = _pool_labels()
    present = [j for j in JUDGES if any(j in r.labels for r in done)]
    report: dict[str, Any] = {
        "dir": str(out_dir), "summary": _summary(rows), "rule": RULE, "same_inputs": same_inputs(rows),
        "h_sees_video": sees_video, "judges_present": present,
        "scale": {"note": SCALE.format(below=float(np.mean(pool > 0.73)) if len(pool) else 1.0),
                  "label": "log2(1 + comments)", "human_pool_median_label": stats.median(list(pool))},
        "tables": {j: tables(done, j, pool, sees_video) for j in present},
        "sensitivity": {TITLE_INFERRED: {j: pe_vs_basic(done, judged(j, TITLE_INFERRED)) for j in present},
                        "note": "PE vs Basic when each title is scored in the category each judge infers from it (the "
                                "confounded rule's Basic input, applied to both arms)"},
    }
    if judges and done:
        report["judges"] = judge_tables(done, progress)
    return report


def _pool_labels() -> np.ndarray:
    """The actual labels of the human pool (for the percentile column); empty when the corpus cannot be read."""
    try:
        from popcorn.retrieval.corpus import load_corpus, popularity_label

        return np.sort(popularity_label(load_corpus(part="human").table["comments"].to_numpy()))
    except StageError:
        return np.array([])


# ---------------------------------------------------------------------------------------------------- judges


def judge_tables(done: list[Row], progress: Callable[[str], None] | None = None) -> dict:
    """Novelty (near-copies of the references shown and of the corpus), PE vs Basic without the near-copies under
    each judge, and the judges' validation."""
    from popcorn.experiments import judges
    from popcorn.popularity import judges as popularity_judges

    shown = {(r.prompt_index, r.setting, r.llm, r.video, r.seed): r.references for r in done
             if r.mode == "pe" and r.references}  # Basic's control: what PE was shown for the same prompt
    novelty = judges.novelty([r.title for r in done], [r.references for r in done])
    controls = judges.novelty([r.title for r in done],
                              [shown.get((r.prompt_index, r.setting, r.llm, r.video, r.seed), []) for r in done])
    by_id = {r.id: (n, c) for r, n, c in zip(done, novelty, controls)}
    table = []
    for condition in dict.fromkeys(r.condition for r in done):
        mine = [r for r in done if r.condition == condition]
        found = [by_id[r.id] for r in mine]
        n = [f[0] for f in found]
        ref = n if mine[0].mode in REFERENCE_MODES else [f[1] for f in found]  # Basic: the references PE was shown, as a control
        with_refs = [x for x in ref if x["refs"]]
        table.append({
            "condition": condition, "n": len(n),
            "references": "shown" if mine[0].mode in REFERENCE_MODES else "not shown (PE's for the same prompt: control)",
            "median_ref_similarity": stats.median([x["ref_similarity"] for x in with_refs]),
            "ref_near_copies": _share(sum(x["ref_copy"] for x in with_refs), len(with_refs)),
            "ref_contains": _share(sum(x["ref_contained"] for x in with_refs), len(with_refs)),
            "median_corpus_similarity": stats.median([x["corpus_similarity"] for x in n]),
            "corpus_near_copies": _share(sum(x["corpus_copy"] for x in n), len(n))})
    copies = sorted((x for x, _ in by_id.values() if x["ref_copy"] or x["corpus_copy"]),
                    key=lambda x: -max(x["ref_similarity"], x["corpus_similarity"]))
    copied = {r.id for r in done if by_id[r.id][0]["ref_copy"] or by_id[r.id][0]["corpus_copy"]}
    original = [r for r in done if r.id not in copied]
    humans = [r.human_video for r in done if r.human_video is not None]
    out = {"detector": judges.DETECTOR, "novelty": table, "human_matched_base_rate": judges.human_base_rate(humans),
           "near_copy_examples": copies[:10],
           "pe_vs_basic_without_near_copies": {j: pe_vs_basic(original, judged(j)) for j in JUDGES
                                               if any(j in r.labels for r in done)}}
    if progress:
        progress("validating the judges (out of fold, and on the human pool)")
    try:
        out["validation"] = popularity_judges.validation()
    except StageError as exc:
        out["validation"] = {"error": str(exc)}
    out["descriptions"] = popularity_judges.DESCRIPTIONS
    return out


def _share(k: int, n: int) -> dict:
    return {"share": round(k / n, 4) if n else None, "k": k, "n": n}


# ---------------------------------------------------------------------------------------------------- outputs


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _win_md(rows: list[dict], lead: list[str]) -> list[str]:
    if not rows:
        return ["(no pairs)", ""]
    head = lead + ["A", "B", "n pairs", "prompts", "A wins", "ties", "B wins", "win rate A", "95% CI",
                   "win rate A (ties out)", "p", "p (Holm)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = r["win_rate_ci95"] or [None, None]
        cells = [_fmt(r.get(f)) for f in lead] + [
            str(r["a"]), str(r["b"]), str(r["n"]), str(r["groups"]), str(r["wins"]), str(r["ties"]), str(r["losses"]),
            _fmt(r["win_rate"]), f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", _fmt(r["win_rate_without_ties"]), _fmt(r["p"]),
            _fmt(r.get("p_holm"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _median_md(c: dict) -> str:
    text = f"{_fmt(c['median'])} ({_fmt(c['predicted_comments'], 1)}, n={c['n']}"
    return text + (f", p{_fmt(c['percentile'], 1)}" if "percentile" in c else "") + ")"


def _tables_md(t: dict, judge: str) -> list[str]:
    lines = [f"### Table 1: median predicted popularity per category ({judge})", ""]
    conditions = list(dict.fromkeys(c for row in t["table1"] for c in row["cells"]))
    head = ["type", "category", "prompts"] + conditions
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t["table1"]:
        lines.append("| " + " | ".join([row["type"], row["category"], str(row["prompts"])]
                                       + [_median_md(row["cells"][c]) if c in row["cells"] else "-"
                                          for c in conditions]) + " |")
    lines += ["", f"### Table 2: medians beside the human-matched videos ({judge}; pNN: percentile among the human "
                  "pool's actual labels)", ""]
    head = ["type", "prompts"] + conditions + ["human-matched"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in t["table2"]:
        lines.append("| " + " | ".join([row["type"], str(row["prompts"])]
                                       + [_median_md(row["cells"][c]) if c in row["cells"] else "-" for c in conditions]
                                       + [f"{row['human_matched']['name']}: {_median_md(row['human_matched'])}"])
                     + " |")
    lines += ["", f"### Table 3: plan modes, PE vs Basic (and PE+) ({judge})", ""] + _win_md(t["table3"], ["type", "llm", "k"])
    lines += [f"### Table 5: LLM vs LLM ({judge})", ""] + _win_md(t["table5"], ["type", "mode", "k"])
    video = t["table6"]
    lines += [f"### Table 6: video model vs video model ({judge})", "", f"**{video['note']}**", ""]
    if video["finding"]:
        lines += _win_md(video["rows"], ["type", "mode", "k"])
    sweep = t["k_sweep"]
    lines += [f"### K sweep ({judge})", ""] + ([f"**{sweep['note']}**", ""] if sweep["note"] else [])
    if sweep["medians"]:
        lines += ["| type | K | median PE |", "|---|---|---|"]
        lines += [f"| {m['type']} | {m['k']} | {_median_md(m)} |" for m in sweep["medians"]] + [""]
    if sweep["k_vs_k"]:
        lines += _win_md(sweep["k_vs_k"], ["type", "llm"])
    lines += [f"### Generated vs the human-matched video ({judge})", ""]
    lines += _win_md(t["vs_human"], ["type", "condition"])
    return lines


def to_markdown(report: dict, images: dict[str, str] | None = None) -> str:
    s = report["summary"]
    types = ", ".join(f"{v} {k or 'untyped'}" for k, v in s["types"].items())
    lines = [f"# Batch report: {report['dir']}", "",
             f"{s['runs']} runs ({', '.join(f'{v} {k}' for k, v in s['status'].items())}); {s['prompts']} prompts "
             f"({types}); modes {', '.join(s['modes'])}; "
             f"LLMs {', '.join(s['llms'])}; video models {', '.join(s['videos'])}; seeds "
             f"{', '.join(map(str, s['seeds']))}; K {', '.join(map(str, s['ks'])) or '-'}; settings: "
             f"{' | '.join(s['settings'])}."]
    if len(s["settings"]) > 1:
        lines.append("**This folder holds runs of several settings: no pair crosses them, and every condition below "
                     "names its setting.**")
    if s["failed_at_stage"]:
        lines.append("Failed runs by stage: " + ", ".join(f"{k} {v}" for k, v in s["failed_at_stage"].items()) + ".")
    same = report["same_inputs"]
    lines += ["", "## The rule", "", report["rule"], "",
              f"Checked on the runs: {'holds' if same['holds'] else 'BROKEN'} for {same['prompts']} prompt(s); "
              f"category sources: {', '.join(f'{k} {v}' for k, v in same['category_sources'].items())}; scoring "
              f"rule(s) recorded: {', '.join(same['rules'])}."]
    for b in same["broken"][:10]:
        lines.append(f"- prompt {b['prompt_index']} ({b['query'][:50]!r}): categories {b['categories']}, "
                     f"human videos {b['human_videos']}")
    lines += ["", "Scores: each judge's predicted log2(1 + comments) (predicted comments in brackets). Win rates pair "
              "runs that differ only in the compared factor; ties are counted apart; the 95% interval is a bootstrap "
              "over prompts; p is a sign-flip test over prompts (two-sided), Holm-adjusted across one table's rows.",
              "", "## The paper's scale", "", report["scale"]["note"], ""]
    for judge, t in report["tables"].items():
        lines += [f"## Tables under {judge}", ""] + _tables_md(t, judge)
    lines += ["## Sensitivity: the title-inferred category", "", report["sensitivity"]["note"], ""]
    for judge, rows in report["sensitivity"][TITLE_INFERRED].items():
        lines += [f"PE vs Basic ({judge}, title-inferred):", ""] + _win_md(rows, ["type", "llm", "k"])
    judges = report.get("judges")
    if judges:
        lines += ["## Honest judging", "", f"Near-copy detector: {judges['detector']}.", "",
                  "| condition | n | references | median sim. to references | near-copies of references | "
                  "a reference contained | median sim. to nearest corpus title | near-copies of corpus titles |",
                  "|---|---|---|---|---|---|---|---|"]
        share = lambda d: f"{_fmt(d['share'])} ({d['k']}/{d['n']})"  # noqa: E731
        for t in judges["novelty"]:
            lines.append(f"| {t['condition']} | {t['n']} | {t['references']} | {_fmt(t['median_ref_similarity'])} | "
                         f"{share(t['ref_near_copies'])} | {share(t['ref_contains'])} | "
                         f"{_fmt(t['median_corpus_similarity'])} | {share(t['corpus_near_copies'])} |")
        base = judges["human_matched_base_rate"]
        lines += ["", f"For comparison, the human-matched MicroLens videos: {_fmt(base['share'])} ({base['k']}/"
                  f"{base['n']}) have a near-copy among the corpus's other titles (median similarity to the nearest "
                  f"other title {_fmt(base['median_corpus_similarity'])}).", ""]
        for x in judges["near_copy_examples"]:
            lines.append(f"- {x['title']!r} ~ {x['ref_title'] or x['corpus_title']!r} "
                         f"(references {x['ref_similarity']:.2f}, corpus {x['corpus_similarity']:.2f})")
        for judge, rows in judges["pe_vs_basic_without_near_copies"].items():
            lines += ["", f"### PE vs Basic without the near-copies ({judge})", ""] + _win_md(rows, ["type", "llm", "k"])
        lines += ["### The judges", ""]
        for name, v in (judges.get("validation") or {}).items():
            if not isinstance(v, dict):
                continue
            oof, pool = v.get("out_of_fold") or {}, v.get("human_pool") or {}
            lines.append(f"- {judges['descriptions'].get(name, name)}: trained on {v.get('trained_on')} videos; "
                         f"out of fold SRC {_fmt(oof.get('SRC'))}, nMSE {_fmt(oof.get('nMSE'))}; on the human pool "
                         f"(seen by neither) SRC {_fmt(pool.get('SRC'))}, nMSE {_fmt(pool.get('nMSE'))}, "
                         f"n={pool.get('n')}")
        lines.append("")
    if images:
        lines += ["## Fig. 3: distributions per LLM and prompt type", ""]
        lines += [f"![{name}]({path})" for name, path in images.items()] + [""]
    return "\n".join(lines)


def histograms(out_dir: str | Path, folder: str | Path) -> dict[str, str]:
    """Fig. 3: one PNG per judge x LLM x prompt type: a bar series per condition, and the human-matched videos."""
    from popcorn.experiments.plots import histogram_png

    rows = [r for r in load_rows(out_dir) if r.labels]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for judge in [j for j in JUDGES if any(j in r.labels for r in rows)]:
        value, human = judged(judge), human_judged(judge)
        for llm in _names(rows, "llm"):
            for kind, mine in by_type([r for r in rows if r.llm == llm]):
                series = {c: [value(r) for r in mine if r.condition == c and value(r) is not None]
                          for c in dict.fromkeys(r.condition for r in mine)}
                series["human-matched"] = list(human_matches(mine, human).values())
                name = f"{judge}-{llm}-{kind}"
                safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
                paths[name] = str(histogram_png(series, folder / f"fig3-{safe}.png",
                                                title=f"{judge}, {llm}, {kind}: predicted log2(1+comments)"))
    return paths


def write_report(out_dir: str | Path, out: str | Path | None = None, judges: bool = True,
                 progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """build_report + Fig. 3 PNGs + report.md (default DIR/report.md) + report.json beside it."""
    import json

    report = build_report(out_dir, judges=judges, progress=progress)
    md_path = Path(out) if out else Path(out_dir) / "report.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    images = histograms(out_dir, md_path.parent / f"{md_path.stem}-plots")
    report["histograms"] = images
    rel = {k: str(Path(v).relative_to(md_path.parent)) for k, v in images.items()}
    md_path.write_text(to_markdown(report, rel), encoding="utf-8")
    report["markdown"] = str(md_path)
    md_path.with_suffix(".json").write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str),
                                            encoding="utf-8")
    return report, md_path
