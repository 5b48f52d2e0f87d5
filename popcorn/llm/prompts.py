"""Chat messages for f(x), built from the templates in prompts/ (plain text with $placeholders).

  system.txt  the plan's rules and JSON shape: one fixed text for every mode, video model and query, so llama.cpp
              keeps it evaluated from one plan to the next (the prompt's shared prefix)
  basic.txt   Basic mode: the idea alone
  pe.txt      Prompt Enhancement: the idea, the matched categories, popular and unpopular references, the paper's steps

Both user templates end with the video prompt's word range, which comes from the chosen video model's text encoder
(popcorn/video/budget.py).
"""

from __future__ import annotations

import functools
from string import Template

from popcorn import config
from popcorn.llm.parse import shorten_title
from popcorn.types import Reference, Retrieval

MAX_QUERY_CHARS = 2000  # a longer idea is cut (and the cut is reported by the pipeline), never rejected

# example ideas, abstract and concrete, over several MicroLens categories (and one not in English): the studio's
# buttons, and a study reads their prompt type
EXAMPLES = [
    ("the quiet joy of a slow Sunday morning", "abstract"),
    ("courage to start over after failing", "abstract"),
    ("nostalgia for childhood summers at grandma's house", "abstract"),
    ("a golden retriever puppy sees the sea for the first time", "concrete"),
    ("15-second garlic butter noodles for a late-night snack", "concrete"),
    ("street basketball trick shot at sunset", "concrete"),
    ("day-to-night makeup transformation in one look", "concrete"),
    ("unboxing a tiny retro handheld game console", "concrete"),
    ("猫咪第一次看到雪", "concrete"),
]

# a reference is an example of a title: its opening phrases show the hook (MicroLens titles average 115 characters,
# mostly hashtags after the hook). Each reference costs prompt evaluation on every plan: 64 instead of 100 characters
# is ~9 tokens less per reference, ~2 s less per PE plan of K=10 on a 2-core CPU (bench/RESULTS.md).
MAX_REFERENCE_TITLE_CHARS = 64
DEFAULT_WORDS = (25, 70)  # the video prompt's word range when no budget is given


@functools.lru_cache(maxsize=None)
def template(name: str) -> Template:
    return Template((config.PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8"))


def clean_query(query: str) -> str:
    """One line, printable, bounded. Hostile text stays text: it is quoted into the prompt, never executed."""
    text = " ".join(str(query or "").split())
    text = "".join(ch for ch in text if ch.isprintable())
    return text[:MAX_QUERY_CHARS]


def _reference_lines(refs: list[Reference]) -> str:
    if not refs:
        return "(none)"
    lines = []
    for r in refs:
        title = shorten_title(r.title, MAX_REFERENCE_TITLE_CHARS) or "(untitled)"  # ends where a phrase ends
        lines.append(f"- {title} | {r.comments}")
    return "\n".join(lines)


def basic_messages(query: str, words: tuple[int, int] = DEFAULT_WORDS) -> list[dict]:
    user = template("basic").substitute(query=clean_query(query), words_min=words[0], words_max=words[1])
    return [
        {"role": "system", "content": template("system").substitute()},
        {"role": "user", "content": user},
    ]


def pe_messages(query: str, retrieval: Retrieval, words: tuple[int, int] = DEFAULT_WORDS) -> list[dict]:
    categories = retrieval.matched_categories
    user = template("pe").substitute(
        query=clean_query(query),
        categories=", ".join(categories) or "(unknown)",
        category_suffix="ies" if len(categories) > 1 else "y",
        popular=_reference_lines(retrieval.popular),
        unpopular=_reference_lines(retrieval.unpopular),
        words_min=words[0],
        words_max=words[1],
    )
    return [
        {"role": "system", "content": template("system").substitute()},
        {"role": "user", "content": user},
    ]
