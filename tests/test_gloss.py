"""An idea the encoder cannot read (another script, or another language in Latin letters) is routed and retrieved
through the plan LLM's English gloss (popcorn/llm/gloss.py)."""

from __future__ import annotations

import json

import pytest

from popcorn import pipeline
from popcorn.llm.gloss import needs_gloss, reads_gloss

try:
    from tests.llm_server import chat_reply, scripted_server  # noqa: F401
    from tests.test_pipeline import scripted_llm  # noqa: F401  the OpenAI-compatible backend on the scripted server
    from tests.test_plans import plan_json
except ImportError:  # pragma: no cover - when tests/ is on sys.path directly
    from llm_server import chat_reply, scripted_server  # noqa: F401
    from test_pipeline import scripted_llm  # noqa: F401
    from test_plans import plan_json


def pe_json(**changes) -> str:
    return json.dumps({"popular_traits": "a clear dish, steam and a close camera",
                       "unpopular_flaws": "long intros with no food in sight", **json.loads(plan_json(**changes))})


@pytest.mark.parametrize("query, glossed", [
    ("广东早茶点心探店", True), ("김치찌개 초간단 레시피", True), ("呪術廻戦の名シーンまとめ", True),
    ("Как приготовить борщ дома", True), ("طبخ الكبسة في البيت", True), ("深夜emo 想念一个不会回来的人", True),
    ("street food at night in Bangkok", False), ("receta fácil de paella en casa", False),
    ("phở bò Hà Nội buổi sáng", False), ("vlog 🍜 #food", False), ("2024 🎉", False), ("", False),
])
def test_an_idea_is_glossed_when_most_of_its_letters_are_not_latin(query, glossed):
    assert needs_gloss(query) is glossed


@pytest.mark.parametrize("query, asked", [
    ("receta fácil de paella en casa", True), ("ang cute ng pusa ko pag natutulog", True),
    ("makan bakso pinggir jalan enak banget", True), ("mein erster Sieg im Battle Royale nach 100 Runden", True),
    ("street food at night in Bangkok", False), ("my cat knocks a glass off the table", False),
    ("How to beat the final boss without taking damage!", False), ("广东早茶点心探店", True), ("2024 🎉", False),
])
def test_an_idea_in_latin_letters_asks_for_a_gloss_when_the_encoder_knows_few_of_its_words(query, asked):
    known = pipeline.known_words()
    assert len(known) > 20_000 and "cat" in known and "##s" not in known and "[CLS]" not in known
    assert needs_gloss(query, known) is asked


def test_a_gloss_is_read_where_it_translates_and_not_where_it_echoes():
    assert reads_gloss("receta fácil de paella en casa", "easy paella recipe at home")
    assert reads_gloss("广东早茶点心探店", "dim sum breakfast in Guangdong")  # another script: always
    assert not reads_gloss("spicy fire noodle challenge mukbang", "Spicy fire noodle challenge mukbang")
    assert not reads_gloss("omakase sushi experience in tokyo", "Omakase sushi experience in Tokyo.")
    assert not reads_gloss("receta fácil de paella en casa", "")


@pytest.fixture(autouse=True)
def no_remembered_glosses():
    pipeline._GLOSSES.clear()
    yield
    pipeline._GLOSSES.clear()


def test_a_pe_plan_of_an_idea_in_chinese_is_routed_on_its_english_gloss(scripted_llm):
    """The first answer asked for is the gloss (temperature 0, one bounded field); routing and references read it,
    the names found in the idea as typed still count, the plan is asked for the idea as typed, and the run keeps the
    gloss and says so."""
    scripted_llm.play(chat_reply(json.dumps({"english": "Cantonese dim sum breakfast at a Guangzhou teahouse"})),
                      chat_reply(pe_json()))
    settings = pipeline.Settings(query="广东早茶点心探店", mode="pe", llm="openai-compatible", video="ltx")
    assert pipeline.llm_calls(settings) == 2
    run = pipeline.make_plans(settings)
    gloss_request, plan_request = (r["json"] for r in scripted_llm.requests)
    assert "广东早茶点心探店" in gloss_request["messages"][-1]["content"] and gloss_request["temperature"] == 0
    assert run.retrieval.gloss == "Cantonese dim sum breakfast at a Guangzhou teahouse"
    assert run.retrieval.matched_categories[0] == "Delicacy"
    assert {r.category for r in run.retrieval.references} <= set(run.retrieval.matched_categories)
    assert "广东早茶点心探店" in plan_request["messages"][-1]["content"]  # the plan reads the idea as typed
    assert any("English reading of the idea" in n and "Guangzhou teahouse" in n for n in run.notes)
    assert pipeline.Run.from_dict(run.to_dict()).retrieval.gloss == run.retrieval.gloss  # kept in run.json


def test_a_gloss_that_fails_leaves_the_idea_routed_as_typed_and_says_so(scripted_llm):
    scripted_llm.play(chat_reply(""), chat_reply(pe_json()))
    run = pipeline.make_plans(pipeline.Settings(query="广东早茶点心探店", mode="pe", llm="openai-compatible",
                                                video="ltx"))
    assert run.retrieval.gloss == "" and run.plan.title
    assert any("could not be read in English" in n for n in run.notes)


def test_a_pe_plan_of_an_idea_in_spanish_is_routed_on_its_english_gloss(scripted_llm):
    scripted_llm.play(chat_reply(json.dumps({"english": "an easy homemade paella recipe"})), chat_reply(pe_json()))
    settings = pipeline.Settings(query="receta fácil de paella en casa, paso a paso", mode="pe",
                                 llm="openai-compatible", video="ltx")
    assert pipeline.llm_calls(settings) == 2
    run = pipeline.make_plans(settings)
    assert len(scripted_llm.requests) == 2 and run.retrieval.gloss == "an easy homemade paella recipe"
    assert run.retrieval.matched_categories[0] == "Delicacy"
    assert "receta fácil de paella" in scripted_llm.requests[1]["json"]["messages"][-1]["content"]


def test_a_gloss_that_echoes_the_idea_leaves_it_routed_as_typed(scripted_llm):
    scripted_llm.play(chat_reply(json.dumps({"english": "Spicy fire noodle challenge mukbang"})), chat_reply(pe_json()))
    settings = pipeline.Settings(query="spicy fire noodle challenge mukbang", mode="pe", llm="openai-compatible",
                                 video="ltx")
    run = pipeline.make_plans(settings)
    assert len(scripted_llm.requests) == 2 and run.retrieval.gloss == ""  # asked (a rare word), not read
    assert not any("English reading" in n for n in run.notes)


def test_an_english_idea_asks_for_no_gloss(scripted_llm):
    scripted_llm.play(chat_reply(pe_json()))
    settings = pipeline.Settings(query="dim sum breakfast at a Guangzhou teahouse", mode="pe",
                                 llm="openai-compatible", video="ltx")
    assert pipeline.llm_calls(settings) == 1
    run = pipeline.make_plans(settings)
    assert len(scripted_llm.requests) == 1 and run.retrieval.gloss == ""
    assert not any("English reading" in n for n in run.notes)


def test_where_the_llm_runs_only_in_a_gpu_slot_the_idea_is_routed_as_typed(scripted_llm):
    scripted_llm.play(chat_reply(pe_json()))
    run = pipeline.make_plans(pipeline.Settings(query="广东早茶点心探店", mode="pe", llm="openai-compatible",
                                                video="ltx"), gloss=False)
    assert len(scripted_llm.requests) == 1 and run.retrieval.gloss == ""  # no gloss asked for
    assert any("routed as typed" in n and "GPU slot" in n for n in run.notes)


def test_every_arm_of_an_idea_reads_one_gloss_and_h_gets_the_category_of_the_idea_as_typed(scripted_llm):
    """Two PE arms of one idea (a batch's PE and PE+, a re-plan) ask for its gloss once and route alike; h's category
    is the same for a PE arm (which read the gloss) as for a Basic arm (no retrieval): the query as typed, not one
    LLM's reading of it."""
    scripted_llm.play(chat_reply(json.dumps({"english": "Cantonese dim sum breakfast at a Guangzhou teahouse"})),
                      chat_reply(pe_json()), chat_reply(pe_json()))
    settings = pipeline.Settings(query="广东早茶点心探店", mode="pe", llm="openai-compatible", video="ltx")
    first, second = pipeline.make_plans(settings), pipeline.make_plans(settings)
    assert len(scripted_llm.requests) == 3  # one gloss, two plans
    assert second.retrieval.gloss == first.retrieval.gloss and second.retrieval.references == first.retrieval.references
    assert first.retrieval.matched_categories[0] == "Delicacy"
    basic = pipeline.Settings(query="广东早茶点心探店", mode="basic", llm="openai-compatible", video="ltx")
    as_typed = pipeline.score_category(basic, None)
    assert pipeline.score_category(settings, first.retrieval) == as_typed
    assert as_typed[1].startswith("routed from the query")
