"""What the studio's panels show, as plain values: tables (pandas), markdown and the popularity card (HTML).

Everything a visitor or the model wrote (titles, queries, prompts, notes, reasoning, category names) stays text: in
HTML it is HTML-escaped; in Markdown every ASCII punctuation character is backslash-escaped (`plain_markdown`), so no
image, link, autolink, raw HTML, heading or emphasis can come from it (an HTML-escaped `![](//host/x)` was still an
image to the Markdown renderer, issue 25).
"""

from __future__ import annotations

import html
import math
import re

import pandas as pd

from popcorn.text import plural
from popcorn.types import UNSURE_MARGIN

# the title first: a phone shows the first columns, the rest scroll sideways
REFERENCE_COLUMNS = ["title", "label", "comments", "match", "category"]  # match: cosine similarity to the idea
CANDIDATE_COLUMNS = ["rank", "title", "predicted comments", "video prompt"]
NEIGHBOUR_COLUMNS = ["title", "category", "comments", "match"]
HISTORY_COLUMNS = ["title", "when", "status", "comments", "mode", "LLM", "video", "query", "run"]  # what a phone shows first
CHART_COLUMNS = ["video", "comments", "kind"]


# every ASCII punctuation character: CommonMark lets each be backslash-escaped, and each escaped one is literal text
_MARKDOWN_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")


def plain_markdown(text, keep_lines: bool = False) -> str:
    """`text` as Markdown that renders as exactly that text: punctuation backslash-escaped, runs of spaces folded
    (no indented code blocks); line breaks kept as hard breaks when `keep_lines`, else folded too."""
    lines = str(text or "").splitlines() if keep_lines else [str(text or "")]
    escaped = [_MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(line.split())) for line in lines]
    return "  \n".join(line for line in escaped if line) if keep_lines else escaped[0]


def references_table(retrieval: dict | None) -> pd.DataFrame:
    refs = (retrieval or {}).get("references") or []
    rows = [[r["title"], r["label"], int(r["comments"]), round(float(r["similarity"]), 3), r["category"]] for r in refs]
    return pd.DataFrame(rows, columns=REFERENCE_COLUMNS)


def candidates_table(candidates: list[dict]) -> pd.DataFrame:
    rows = []
    for i, c in enumerate(candidates or [], 1):
        rows.append([i, c["plan"]["title"], as_int(c.get("score", {}).get("predicted_comments")),
                     c["plan"]["video_prompt"]])
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def neighbours_table(score: dict | None) -> pd.DataFrame:
    rows = []
    for n in (score or {}).get("neighbours") or []:
        rows.append([n.get("title", ""), n.get("category", ""), as_int(n.get("comments")),
                     round(float(n.get("similarity", 0.0) or 0.0), 3)])
    return pd.DataFrame(rows, columns=NEIGHBOUR_COLUMNS)


def as_int(value) -> int | None:
    try:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else int(round(float(value)))
    except (TypeError, ValueError):
        return None


UNPOPULAR_SHARE = 0.1  # popcorn.retrieval.index.DEFAULT_RATIO (the same; tests/test_ux_words.py keeps them equal)


def details_fold(summary: str, body: str) -> str:
    """Markdown: `body` (Markdown) behind a fold titled `summary` (plain text), for what only a curious reader needs."""
    return f"<details><summary>{html.escape(summary)}</summary>\n\n{body}\n\n</details>" if body else ""


def popular_meaning() -> str:
    """What "popular" and "unpopular" mean for a reference, exactly as popcorn.retrieval.index splits them."""
    bottom = f"{UNPOPULAR_SHARE:.0%}"
    return (f"“Popular” means not in the bottom {bottom} of its category by number of comments (the other "
            f"{1 - UNPOPULAR_SHARE:.0%}); “unpopular” means in that bottom {bottom}. Popular does not mean a hit: a "
            "popular reference may have only a few comments.")


def why_markdown(retrieval: dict | None, notes: list[str] | None = None, mode: str = "pe") -> str:
    """The category the idea went to, in words (and when the router was unsure, that it was), what the references
    are; the router's scores behind a fold ("why this category"); then any notes about the input."""
    lines = []
    if retrieval:
        matched = [plain_markdown(c) for c in retrieval.get("matched_categories") or []]
        scores = retrieval.get("category_scores") or []
        margin = retrieval.get("margin")
        if margin is not None and float(margin) < UNSURE_MARGIN and len(scores) >= 2:
            pair = [plain_markdown(s["category"]) for s in scores[:2]]
            lines.append(f"**Category:** not sure between {pair[0]} and {pair[1]}: references from "
                         + ("both." if set(pair) <= set(matched) else f"{', '.join(matched) or 'none'}."))
        else:
            lines.append("**Category:** " + (", ".join(matched) or "none"))
        refs = retrieval.get("references") or []
        popular = sum(1 for r in refs if r.get("label") == "popular")
        lines.append(f"The LLM saw {plural(len(refs), 'MicroLens video')} from there as examples: {popular} "
                     f"popular, {len(refs) - popular} unpopular. {popular_meaning()}")
        if scores:
            best = float(scores[0]["score"])
            why = ["How closely the idea matches each category" + (" (the best = 100):" if best > 0 else ":"), ""]
            why += [f"- {plain_markdown(s['category'])}: "
                    + (f"{100 * float(s['score']) / best:.0f}" if best > 0 else f"{float(s['score']):.2f}")
                    for s in scores]
            lines.append(details_fold("Why this category", "\n".join(why)))
    elif mode == "basic":
        lines.append("Basic mode: the LLM saw the idea alone, no references.")
    for note in notes or []:
        lines.append(f"ℹ️ {plain_markdown(note)}")
    return "\n\n".join(line for line in lines if line)


def reasoning_markdown(plan: dict | None) -> str:
    text = (plan or {}).get("reasoning", "").strip()
    return plain_markdown(text, keep_lines=True) if text else "_The model gave no separate reasoning._"


def _baseline_videos(baseline: dict | None) -> list[dict]:
    """The baseline's matched MicroLens videos (popcorn.popularity.human_baseline's "videos")."""
    return list((baseline or {}).get("videos") or [])


def chart_frame(score: dict | None, baseline: dict | None) -> pd.DataFrame:
    """Bars for the card's chart: yours (predicted) beside the baseline (actual and predicted)."""
    rows = []
    predicted = as_int((score or {}).get("predicted_comments"))
    if predicted is not None:
        rows.append(["Your video", predicted, "predicted"])
    for video in _baseline_videos(baseline)[:1]:
        actual = as_int(video.get("comments"))
        guess = as_int(video.get("predicted_comments"))
        if guess is not None:
            rows.append(["Human baseline", guess, "predicted"])
        if actual is not None:
            rows.append(["Human baseline", actual, "actual"])
    return pd.DataFrame(rows, columns=CHART_COLUMNS)


def _ordinal(value) -> str:
    """A percentile (0-100) as '87th', '1st', '92nd'."""
    n = as_int(value)
    if n is None:
        return "?"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _number(value) -> str:
    n = as_int(value)
    return "?" if n is None else f"{n:,}"


def popularity_card(score: dict | None, baseline: dict | None, category: str | None = None) -> str:
    """HTML: predicted comments and percentiles, beside the human-matched MicroLens video (actual and predicted)."""
    score = score or {}
    if not score:
        return "<div class='pc-card pc-empty'>Render a plan to see its predicted popularity.</div>"
    cat = category or score.get("category") or ""
    in_cat = (f"<div class='pc-sub'>{_ordinal(score.get('percentile_category'))} percentile in "
              f"{html.escape(cat)}</div>" if score.get("percentile_category") is not None and cat else "")
    yours = (
        "<div class='pc-col pc-yours'><div class='pc-label'>Your video · predicted</div>"
        f"<div class='pc-big'>{_number(score.get('predicted_comments'))}</div><div class='pc-sub'>comments</div>"
        f"<div class='pc-sub'>{_ordinal(score.get('percentile_overall'))} percentile of MicroLens</div>{in_cat}</div>"
    )
    videos = _baseline_videos(baseline)
    if videos:
        v = videos[0]
        actual = v.get("comments")
        theirs = (
            "<div class='pc-col pc-baseline'><div class='pc-label'>Human-matched baseline</div>"
            f"<div class='pc-title'>“{html.escape(str(v.get('title', '')))}”</div>"
            f"<div class='pc-sub'>{html.escape(str(v.get('category', '') or ''))}</div>"
            f"<div class='pc-pair'><span><b>{_number(actual)}</b> actual</span>"
            f"<span><b>{_number(v.get('predicted_comments'))}</b> predicted comments</span></div></div>"
        )
    else:
        theirs = "<div class='pc-col pc-baseline'><div class='pc-label'>Human-matched baseline</div>none found</div>"
    return f"<div class='pc-card'>{yours}{theirs}{chart_html(chart_frame(score, baseline))}</div>"


def chart_html(chart: pd.DataFrame) -> str:
    """Horizontal bars on a log scale (comment counts span 0 to 10^5): one per row of chart_frame()."""
    if chart.empty:
        return ""
    top = math.log1p(max(1, int(chart["comments"].max())))
    bars = []
    for video, comments, kind in chart.itertuples(index=False):
        width = 2 + 98 * math.log1p(max(0, int(comments))) / top
        who = "yours" if video == "Your video" else kind
        bars.append(f"<div class='pc-bar-row'><span class='pc-bar-label'>{html.escape(video)} ({kind})</span>"
                    f"<span class='pc-bar-track'><span class='pc-bar pc-bar-{who}' style='width:{width:.0f}%'></span>"
                    f"</span><span class='pc-bar-value'>{int(comments):,}</span></div>")
    return f"<div class='pc-chart'><div class='pc-label'>Comments (log scale)</div>{''.join(bars)}</div>"
