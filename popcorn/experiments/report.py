"""The paper's tables from a batch's runs: `build_report(DIR)` -> one JSON-ready dict; `to_markdown()`; histograms.

    medians      median predicted popularity (h's log2(1 + comments)) per prompt type, category and LLM x mode,
                 beside the human-matched MicroLens videos (the paper's Concrete-M / Abstract-M; Tables 1-2, Fig. 3)
    vs_human     each generated video against its own human-matched video
    pe_vs_basic  win rate of PE over Basic per LLM (Table 3)
    llm_vs_llm   every pair of LLMs, per mode (Table 5)
    video_vs_video  every pair of video models (Table 6), or why it says nothing (h does not see the video)
    judges       novelty and near-copies per condition; the win rates under a second judge that does not retrieve

Every win rate pairs runs that differ only in the compared factor, counts ties apart and carries n (pairs), the
number of prompts and a bootstrap 95% interval that resamples prompts (popcorn/stats.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

from popcorn import stats
from popcorn.store import Store
from popcorn.types import StageError

PAIR_KEY = ("prompt_index", "mode", "llm", "video", "seed")
VIDEO_NOT_USED = "the video file is not used"  # h's note when it scored a title without its video


@dataclass
class Row:
    """One run as the report reads it."""

    id: str
    prompt_index: int
    query: str
    type: str
    category: str
    mode: str
    llm: str
    video: str
    seed: int
    status: str
    title: str = ""
    label: float | None = None  # h's predicted log2(1 + comments)
    human_label: float | None = None  # the human-matched video's predicted label (scored the same way)
    human_video: int | None = None
    h_category: str | None = None  # the category h scored the title in (as the pipeline passed it)
    references: list[str] = field(default_factory=list)  # titles shown to the LLM (PE)
    video_used: bool = False  # h read the rendered video (a frame encoder), not only the title
    failed_stage: str = ""


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
    return Row(
        id=record["id"], prompt_index=int(meta.get("prompt_index", -1)), query=settings.get("query", ""),
        type=meta.get("type") or "", category=meta.get("category") or "", mode=settings.get("mode", ""),
        llm=settings.get("llm", ""), video=settings.get("video", ""), seed=int(settings.get("seed", 0)),
        status=record.get("status", ""), title=plan.get("title", ""),
        label=score.get("label") if record.get("status") == "done" else None,
        human_label=baseline.get("mean_predicted_label"), human_video=videos[0]["video_id"] if videos else None,
        h_category=(plan.get("matched_categories") or [None])[0],
        references=[r["title"] for r in plan.get("references") or []],
        video_used=bool((record.get("video") or {}).get("video")) and bool(score) and VIDEO_NOT_USED not in notes,
        failed_stage=((meta.get("failure") or {}).get("stage") or "") if record.get("status") == "failed" else "")


def load_rows(out_dir: str | Path) -> list[Row]:
    folder = Path(out_dir)
    if not (folder / "popcorn.db").exists():
        raise StageError("report", f"{folder} holds no batch (no popcorn.db)",
                         "give the --out folder of `python -m popcorn batch`")
    records = Store(home=folder).list_runs(limit=10**9)
    rows = [r for r in map(_row, records) if r is not None]
    return sorted(rows, key=lambda r: (r.prompt_index, r.mode, r.llm, r.seed, r.video))


# ---------------------------------------------------------------------------------------------------- tables


def paired(rows: list[Row], factor: str, a: str, b: str,
           value: Callable[[Row], float | None]) -> tuple[list[int], list[int]]:
    """Outcomes (+1 a wins, 0 tie, -1 b wins) of the pairs of runs equal in everything but `factor`, and each pair's
    prompt."""
    key_fields = [f for f in PAIR_KEY if f != factor]
    sides: dict[tuple, dict[str, float]] = {}
    for row in rows:
        side, v = getattr(row, factor), value(row)
        if side in (a, b) and v is not None:
            sides.setdefault(tuple(getattr(row, f) for f in key_fields), {})[side] = v
    outcomes, groups = [], []
    for key, found in sides.items():
        if a in found and b in found:
            outcomes.append(stats.compare(found[a], found[b]))
            groups.append(key[0])  # prompt_index comes first in PAIR_KEY
    return outcomes, groups


def win_table(rows: list[Row], factor: str, pairs: list[tuple[str, str]], value: Callable[[Row], float | None],
              within: str | None = None) -> list[dict]:
    """One win-rate row per (a, b) pair, optionally per value of `within` (e.g. per LLM)."""
    out = []
    for level in (sorted({getattr(r, within) for r in rows}) if within else [None]):
        subset = [r for r in rows if within is None or getattr(r, within) == level]
        for a, b in pairs:
            outcomes, groups = paired(subset, factor, a, b, value)
            if outcomes:
                out.append({**({within: level} if within else {}), "a": a, "b": b, **stats.win_rate(outcomes, groups)})
    return out


def _cell(values: list[float]) -> dict:
    m = stats.median(values)
    return {"median": m, "predicted_comments": round(2.0 ** m - 1.0, 1) if m is not None else None, "n": len(values)}


def medians(rows: list[Row]) -> list[dict]:
    """Median predicted popularity per prompt type x category, per LLM x mode, beside the human-matched videos."""
    done = [r for r in rows if r.label is not None]
    conditions = list(dict.fromkeys(f"{r.llm}/{r.mode}" for r in done))
    groups: list[tuple[str, str, list[Row]]] = []
    for kind in sorted({r.type for r in done}):
        of_type = [r for r in done if r.type == kind]
        for category in sorted({r.category for r in of_type}):
            if category:
                groups.append((kind, category, [r for r in of_type if r.category == category]))
        groups.append((kind, "(all)", of_type))
    if len({r.type for r in done}) > 1:
        groups.append(("(all)", "(all)", done))
    match = human_matches(rows)
    table = []
    for kind, category, members in groups:
        humans = [match[p] for p in dict.fromkeys(r.prompt_index for r in members) if p in match]
        name = f"{kind.capitalize()}-M" if kind and kind != "(all)" else "Human-M"
        table.append({"type": kind or "(untyped)", "category": category,
                      "prompts": len({r.prompt_index for r in members}),
                      "cells": {c: _cell([r.label for r in members if f"{r.llm}/{r.mode}" == c]) for c in conditions},
                      "human_matched": {"name": name, **_cell(humans)}})
    return table


def human_matches(rows: list[Row]) -> dict[int, float]:
    """One human-matched video per prompt: the one its PE runs were compared with (matched within the category routed
    from the query), else the one of its first scored run (Basic: within the category inferred from the title)."""
    match: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r.mode != "pe"):
        if r.human_label is not None and r.label is not None:
            match.setdefault(r.prompt_index, r.human_label)
    return match


def vs_human(rows: list[Row]) -> list[dict]:
    """Each generated video against its own human-matched video, per LLM x mode."""
    out = []
    for llm, mode in dict.fromkeys((r.llm, r.mode) for r in rows if r.label is not None):
        mine = [r for r in rows if r.llm == llm and r.mode == mode and r.label is not None
                and r.human_label is not None]
        outcomes = [stats.compare(r.label, r.human_label) for r in mine]
        groups = [r.prompt_index for r in mine]
        out.append({"llm": llm, "mode": mode, "a": f"generated ({mode})", "b": "its human-matched video",
                    **stats.win_rate(outcomes, groups)})
    return out


def _names(rows: list[Row], field_name: str) -> list[str]:
    return list(dict.fromkeys(getattr(r, field_name) for r in rows))


def build_report(out_dir: str | Path, judges: bool = True, progress: Callable[[str], None] | None = None) -> dict:
    rows = load_rows(out_dir)
    if not rows:
        raise StageError("report", f"{out_dir} holds no batch runs", "run `python -m popcorn batch ... --out DIR` first")
    done = [r for r in rows if r.label is not None]
    h = lambda r: r.label  # noqa: E731
    sees_video = any(r.video_used for r in done)
    llms, videos = _names(rows, "llm"), _names(rows, "video")
    report: dict[str, Any] = {
        "dir": str(out_dir),
        "summary": _summary(rows),
        "h_sees_video": sees_video,
        "medians": medians(rows),
        "vs_human": vs_human(done),
        "pe_vs_basic": win_table(done, "mode", [("pe", "basic")], h, within="llm"),
        "llm_vs_llm": win_table(done, "llm", list(combinations(llms, 2)), h, within="mode"),
        "video_vs_video": _video_table(done, videos, sees_video),
    }
    if judges and done:
        report["judges"] = judge_tables(done, progress)
    return report


def _summary(rows: list[Row]) -> dict:
    by_status: dict[str, int] = {}
    failed_at: dict[str, int] = {}
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        if r.failed_stage:
            failed_at[r.failed_stage] = failed_at.get(r.failed_stage, 0) + 1
    return {"runs": len(rows), "status": by_status, "failed_at_stage": failed_at,
            "prompts": len({r.prompt_index for r in rows}), "modes": _names(rows, "mode"), "llms": _names(rows, "llm"),
            "videos": _names(rows, "video"), "seeds": sorted({r.seed for r in rows})}


def _video_table(done: list[Row], videos: list[str], sees_video: bool) -> dict:
    rows = win_table(done, "video", list(combinations(videos, 2)), lambda r: r.label)
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


# ---------------------------------------------------------------------------------------------------- judges


def judge_tables(done: list[Row], progress: Callable[[str], None] | None = None) -> dict:
    from popcorn.experiments import judges

    shown = {(r.prompt_index, r.llm, r.video, r.seed): r.references for r in done if r.mode == "pe" and r.references}
    novelty = judges.novelty([r.title for r in done], [r.references for r in done])
    controls = judges.novelty([r.title for r in done],
                              [shown.get((r.prompt_index, r.llm, r.video, r.seed), []) for r in done])
    by_id = {r.id: (n, c) for r, n, c in zip(done, novelty, controls)}
    table = []
    for llm, mode in dict.fromkeys((r.llm, r.mode) for r in done):
        found = [by_id[r.id] for r in done if r.llm == llm and r.mode == mode]
        n = [f[0] for f in found]
        ref = n if mode == "pe" else [f[1] for f in found]  # Basic: the references PE was shown, as a control
        with_refs = [x for x in ref if x["refs"]]
        table.append({
            "llm": llm, "mode": mode, "n": len(n),
            "references": "shown" if mode == "pe" else "not shown (PE's for the same prompt: control)",
            "median_ref_similarity": stats.median([x["ref_similarity"] for x in with_refs]),
            "ref_near_copies": _share(sum(x["ref_copy"] for x in with_refs), len(with_refs)),
            "median_corpus_similarity": stats.median([x["corpus_similarity"] for x in n]),
            "corpus_near_copies": _share(sum(x["corpus_copy"] for x in n), len(n))})
    copies = sorted((x for x, _ in by_id.values() if x["ref_copy"] or x["corpus_copy"]),
                    key=lambda x: -max(x["ref_similarity"], x["corpus_similarity"]))
    copied = {r.id for r in done if by_id[r.id][0]["ref_copy"] or by_id[r.id][0]["corpus_copy"]}
    original = [r for r in done if r.id not in copied]
    humans = [r.human_video for r in done if r.human_video is not None]
    out = {"detector": f"character {judges.NGRAM}-gram Jaccard of normalised titles >= {judges.NEAR_COPY}",
           "novelty": table, "human_matched_base_rate": judges.human_base_rate(humans),
           "near_copy_examples": copies[:10],
           "pe_vs_basic_without_near_copies": win_table(original, "mode", [("pe", "basic")], lambda r: r.label,
                                                        within="llm")}
    second = judges.second_judge(progress)
    labels = judges.second_judge_labels([{"title": r.title, "category": r.h_category} for r in done], second)
    judged = {r.id: v for r, v in zip(done, labels)}
    j2 = lambda r: judged.get(r.id)  # noqa: E731
    out["second_judge"] = {
        "name": judges.SECOND_JUDGE, "validation": second.info.get("validation"),
        "pe_vs_basic": win_table(done, "mode", [("pe", "basic")], j2, within="llm"),
        "llm_vs_llm": win_table(done, "llm", list(combinations(_names(done, "llm"), 2)), j2, within="mode")}
    return out


def _share(k: int, n: int) -> dict:
    return {"share": round(k / n, 4) if n else None, "k": k, "n": n}


# ---------------------------------------------------------------------------------------------------- outputs


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _win_md(rows: list[dict], lead: str | None = None) -> list[str]:
    if not rows:
        return ["(no pairs)", ""]
    head = ([lead] if lead else []) + ["A", "B", "n pairs", "prompts", "A wins", "ties", "B wins", "win rate A",
                                       "95% CI", "win rate A (ties out)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ci = r["win_rate_ci95"] or [None, None]
        cells = ([str(r[lead])] if lead else []) + [r["a"], r["b"], str(r["n"]), str(r["groups"]), str(r["wins"]),
                                                    str(r["ties"]), str(r["losses"]), _fmt(r["win_rate"]),
                                                    f"[{_fmt(ci[0])}, {_fmt(ci[1])}]", _fmt(r["win_rate_without_ties"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def to_markdown(report: dict, images: dict[str, str] | None = None) -> str:
    s = report["summary"]
    lines = [f"# Batch report: {report['dir']}", "",
             f"{s['runs']} runs ({', '.join(f'{v} {k}' for k, v in s['status'].items())}); {s['prompts']} prompts; "
             f"modes {', '.join(s['modes'])}; LLMs {', '.join(s['llms'])}; video models {', '.join(s['videos'])}; "
             f"seeds {', '.join(map(str, s['seeds']))}."]
    if s["failed_at_stage"]:
        lines.append("Failed runs by stage: " + ", ".join(f"{k} {v}" for k, v in s["failed_at_stage"].items()) + ".")
    lines += ["", "Scores are h's predicted log2(1 + comments) (predicted comments in brackets). Win rates pair runs "
              "that differ only in the compared factor; ties are counted apart; the 95% interval is a bootstrap "
              "over prompts.", "", "## Median predicted popularity (Tables 1-2)", ""]
    conditions = list(dict.fromkeys(c for row in report["medians"] for c in row["cells"]))
    head = ["type", "category", "prompts"] + conditions + ["human-matched"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["medians"]:
        cell = lambda c: f"{_fmt(c['median'])} ({_fmt(c['predicted_comments'], 1)}, n={c['n']})"  # noqa: E731
        lines.append("| " + " | ".join([row["type"], row["category"], str(row["prompts"])]
                                       + [cell(row["cells"][c]) if c in row["cells"] else "-" for c in conditions]
                                       + [f"{row['human_matched']['name']}: {cell(row['human_matched'])}"]) + " |")
    lines += ["", "## Generated vs its human-matched video", ""] + _win_md(report["vs_human"], "llm")
    lines += ["## PE vs Basic per LLM (Table 3)", ""] + _win_md(report["pe_vs_basic"], "llm")
    lines += ["## LLM vs LLM (Table 5)", ""] + _win_md(report["llm_vs_llm"], "mode")
    video = report["video_vs_video"]
    lines += ["## Video model vs video model (Table 6)", "", f"**{video['note']}**", ""]
    if video["finding"]:
        lines += _win_md(video["rows"])
    judges = report.get("judges")
    if judges:
        lines += ["## Honest judging", "", f"Near-copy detector: {judges['detector']}.", "",
                  "| LLM | mode | n | references | median sim. to references | near-copies of references | "
                  "median sim. to nearest corpus title | near-copies of corpus titles |", "|---|---|---|---|---|---|---|---|"]
        for t in judges["novelty"]:
            share = lambda d: f"{_fmt(d['share'])} ({d['k']}/{d['n']})"  # noqa: E731
            lines.append(f"| {t['llm']} | {t['mode']} | {t['n']} | {t['references']} | "
                         f"{_fmt(t['median_ref_similarity'])} | {share(t['ref_near_copies'])} | "
                         f"{_fmt(t['median_corpus_similarity'])} | {share(t['corpus_near_copies'])} |")
        base = judges["human_matched_base_rate"]
        lines += ["", f"For comparison, the human-matched MicroLens videos: {_fmt(base['share'])} ({base['k']}/"
                  f"{base['n']}) have a near-copy among the corpus's other titles (median similarity to the nearest "
                  f"other title {_fmt(base['median_corpus_similarity'])}).", ""]
        for x in judges["near_copy_examples"]:
            lines.append(f"- {x['title']!r} ~ {x['ref_title'] or x['corpus_title']!r} "
                         f"(references {x['ref_similarity']:.2f}, corpus {x['corpus_similarity']:.2f})")
        second = judges["second_judge"]
        lines += ["", "### PE vs Basic without the near-copies (h)", ""]
        lines += _win_md(judges["pe_vs_basic_without_near_copies"], "llm")
        v = second.get("validation") or {}
        lines += [f"### Second judge: {second['name']}", "",
                  f"Out-of-fold on the corpus: SRC {_fmt(v.get('SRC'))}, nMSE {_fmt(v.get('nMSE'))}.", "",
                  "PE vs Basic:", ""] + _win_md(second["pe_vs_basic"], "llm")
        lines += ["LLM vs LLM:", ""] + _win_md(second["llm_vs_llm"], "mode")
    if images:
        lines += ["## Histograms of predicted popularity", ""]
        lines += [f"![{name}]({path})" for name, path in images.items()] + [""]
    return "\n".join(lines)


def histograms(out_dir: str | Path, folder: str | Path) -> dict[str, str]:
    """One PNG per LLM: the distribution of h's predicted label, a bar series per mode, and the human-matched videos."""
    from popcorn.experiments.plots import histogram_png

    rows = [r for r in load_rows(out_dir) if r.label is not None]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for llm in _names(rows, "llm"):
        mine = [r for r in rows if r.llm == llm]
        series = {f"{mode}": [r.label for r in mine if r.mode == mode] for mode in _names(mine, "mode")}
        series["human-matched"] = list(human_matches(mine).values())
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in llm)
        paths[llm] = str(histogram_png(series, folder / f"hist-{safe}.png", title=f"{llm}: predicted log2(1+comments)"))
    return paths


def write_report(out_dir: str | Path, out: str | Path | None = None, judges: bool = True,
                 progress: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """build_report + histograms + report.md (default DIR/report.md); returns (report, markdown path)."""
    report = build_report(out_dir, judges=judges, progress=progress)
    md_path = Path(out) if out else Path(out_dir) / "report.md"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    images = histograms(out_dir, md_path.parent / f"{md_path.stem}-plots")
    report["histograms"] = images
    rel = {k: str(Path(v).relative_to(md_path.parent)) for k, v in images.items()}
    md_path.write_text(to_markdown(report, rel), encoding="utf-8")
    report["markdown"] = str(md_path)
    return report, md_path
