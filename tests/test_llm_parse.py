"""parse_plan against a corpus of bad LLM outputs (tests/fixtures/llm_outputs): hand-written failure shapes
(hand_*.txt) and answers really produced by the local Qwen2.5-Coder-1.5B (real_*.txt, see make_llm_fixtures in
tests/test_llm_local.py). expected.json holds the values each must parse to, or the error it must raise."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from popcorn.llm.parse import parse_plan
from popcorn.llm.plan_schema import PLAN_SCHEMA
from popcorn.llm.trim import shorten_title
from popcorn.types import StageError

FIXTURES = Path(__file__).parent / "fixtures" / "llm_outputs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


def test_every_fixture_has_an_expectation():
    files = {p.name for p in FIXTURES.glob("*.txt")}
    assert files == set(EXPECTED), "add each new output to expected.json (or remove the stale entry)"
    assert any(name.startswith("real_") for name in files), "the corpus holds real outputs of the local model"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name):
    raw = (FIXTURES / name).read_text(encoding="utf-8")
    expected = EXPECTED[name]
    if "error" in expected:
        with pytest.raises(StageError) as info:
            parse_plan(raw)
        assert info.value.stage == "plan"
        assert expected["error"] in info.value.message
        assert info.value.raw == raw  # kept for display
        assert info.value.hint
        return
    plan = parse_plan(raw)
    assert set(plan) == {"title", "cover_prompt", "video_prompt", "reasoning"}
    for key in ("title", "cover_prompt", "video_prompt", "reasoning"):
        if key in expected:
            assert plan[key] == expected[key], key
    if "reasoning_contains" in expected:
        assert expected["reasoning_contains"] in plan["reasoning"]
    assert 0 < len(plan["title"]) <= 50
    assert plan["cover_prompt"] and plan["video_prompt"]


def test_reasoning_is_kept_apart_from_the_plan():
    raw = json.dumps({"reasoning": "popular ones are short", "title": "Cats", "cover_prompt": "a cat",
                      "video_prompt": "a cat naps"})
    plan = parse_plan(raw)
    assert plan["reasoning"] == "popular ones are short"
    assert "popular" not in plan["title"] + plan["cover_prompt"] + plan["video_prompt"]


def test_strict_json_with_awkward_strings_round_trips():
    rng = random.Random(7)
    pieces = ['say "hi"', "it's", "a\nb", "braces {x} [y]", "emoji 🎬", "back\\slash", "comma, colon: end", "中文标题"]
    for _ in range(50):
        plan = {k: " ".join(rng.sample(pieces, 3)) for k in ("title", "cover_prompt", "video_prompt")}
        got = parse_plan(json.dumps(plan, ensure_ascii=rng.random() < 0.5))
        for key in ("cover_prompt", "video_prompt"):
            assert got[key] == " ".join(plan[key].split())  # whitespace collapsed, nothing else changed
        assert got["title"] == shorten_title(plan["title"])


def test_unrecoverable_answer_raises_stage_error_with_raw_text():
    for raw in ["", "   ", "I cannot do that.", '{"title": "Only a title"}', "```json\n{\n```"]:
        with pytest.raises(StageError) as info:
            parse_plan(raw)
        assert info.value.stage == "plan"
        assert "could not read a plan" in info.value.message
        assert info.value.raw == raw


@pytest.mark.parametrize(
    "title, expected",
    [
        ("Cute cats", "Cute cats"),
        ("  Cute   cats!  ", "Cute cats!"),  # short titles keep their punctuation
        ('"Cute cats"', "Cute cats"),  # wrapping quotes go
        ('"Impossible" Card "Trick"', '"Impossible" Card "Trick"'),  # quotes that are part of it stay
        ("x" * 50, "x" * 50),
        # a cut ends a phrase: never on a dangling word ("In"), at the last phrase break when there is one
        ("Ten Things Nobody Tells You About Living Alone In Tokyo", "Ten Things Nobody Tells You About Living Alone"),
        ("The Best Street Food in Bangkok, Thailand, Chiang Mai, and Phuket", "The Best Street Food in Bangkok, Thailand"),
        ("The ultimate beginner guide: 10 easy steps, done in minutes", "The ultimate beginner guide: 10 easy steps"),
        ("Watch this - you will not believe how it ends - seriously", "Watch this - you will not believe how it ends"),
        ("Supercalifragilisticexpialidocious" * 3, ("Supercalifragilisticexpialidocious" * 3)[:50]),
        ("这是一个非常长的中文标题没有空格" * 5, ("这是一个非常长的中文标题没有空格" * 5)[:50]),
    ],
)
def test_shorten_title(title, expected):
    got = shorten_title(title)
    assert got == expected
    assert len(got) <= 50
    assert got == got.strip() and not got.endswith((",", ".", ":", "-"))


def test_shorten_title_custom_limit_cuts_at_a_word_boundary():
    assert shorten_title("one two three four", limit=10) == "one two"
    assert shorten_title("one two three four", limit=13) == "one two three"


def test_schema_names_the_plan_fields_reasoning_first():
    assert list(PLAN_SCHEMA["properties"]) == ["popular_traits", "unpopular_flaws", "angle", "title", "cover_prompt",
                                               "video_prompt"]
    assert PLAN_SCHEMA["required"] == list(PLAN_SCHEMA["properties"])
    assert all(p["type"] == "string" and 0 < p["minLength"] < p["maxLength"] for p in PLAN_SCHEMA["properties"].values())


def test_structured_reasoning_fields_become_the_reasoning():
    raw = json.dumps({"popular_traits": "short and warm", "unpopular_flaws": "vague", "angle": "the cat's view",
                      "title": "Cats", "cover_prompt": "a cat on a sofa", "video_prompt": "a cat naps in the sun"})
    plan = parse_plan(raw)
    assert plan["reasoning"] == "Popular: short and warm\nUnpopular: vague\nAngle: the cat's view"
    assert plan["title"] == "Cats" and plan["video_prompt"] == "a cat naps in the sun"
