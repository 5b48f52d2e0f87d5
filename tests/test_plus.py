"""PE+ (issue 28): PE's plan, then title drafts in the same conversation, near-copies of the references dropped, the
rest ranked by h (never by the held-out judge); every draft recorded so the ablation can be recomputed."""

from __future__ import annotations

import json

import pytest

from popcorn import pipeline
from popcorn.llm import plus, prompts
from popcorn.popularity import get_predictor, rank_plans
from popcorn.popularity.unseen import without_memory
from popcorn.types import REFERENCE_MODES, Plan, Reference, Retrieval, Settings

try:
    from tests.llm_server import chat_reply, scripted_server  # noqa: F401
    from tests.test_pipeline import scripted_llm  # noqa: F401
except ImportError:  # pragma: no cover
    from llm_server import chat_reply, scripted_server  # noqa: F401
    from test_pipeline import scripted_llm  # noqa: F401

VIDEO = ("A street vendor tosses noodles in a flaming wok at night; steam curls past red lanterns as the camera "
         "pushes in slowly at eye level, neon light flickering on wet pavement, warm and lively mood.")
PLAN = json.dumps({"popular_traits": "specific food, a number, a challenge", "unpopular_flaws": "vague, no hook",
                   "angle": "a late-night craving answered fast", "title": "Midnight noodles in Bangkok",
                   "cover_prompt": "a steaming wok under neon light, close-up", "video_prompt": VIDEO})


def test_plus_is_a_mode_that_retrieves_like_pe():
    assert "plus" in pipeline.MODES and "plus" in REFERENCE_MODES
    assert pipeline.plan_steps(Settings(query="noodles", mode="plus")) == ("retrieve", "plan")


def test_plus_keeps_pe_s_plan_and_takes_the_draft_h_without_the_references_ranks_first(scripted_llm, retriever):
    query = "15-second garlic butter noodles for a late-night snack"
    retrieval = retriever.retrieve(query, 10)
    drafts = {"title_1": "3 AM garlic noodles in 15 seconds", "title_2": "Butter, garlic, noodles: done by 2 AM",
              "title_3": "Midnight noodles in Bangkok"}
    scripted_llm.play(chat_reply(PLAN), chat_reply(json.dumps(drafts)))
    the_plan, info = pipeline.write_plan(query, "plus", "openai-compatible", retrieval, seed=1, video="ltx")

    first, second = (r["json"] for r in scripted_llm.requests)
    assert second["messages"][:2] == first["messages"]  # the same conversation: PE's prompt, then PE's plan
    assert second["messages"][2]["role"] == "assistant" and "Midnight noodles in Bangkok" in second["messages"][2][
        "content"]
    rows = info["drafts"]
    assert [r["source"] for r in rows] == ["pe", "draft 1", "draft 2", "draft 3"]
    assert rows[3]["dropped"] == "the same as an earlier title"
    kept = [r for r in rows if "dropped" not in r]
    plans = [Plan.from_dict({**the_plan.to_dict(), "title": r["title"]}) for r in kept]
    masked = without_memory(get_predictor(), [ref.video_id for ref in retrieval.references])
    ranked = rank_plans(plans, masked)
    assert the_plan.title == ranked[0][0].title  # the masked ranker's choice, computed again here
    assert [r["title"] for r in rows if r["chosen"]] == [the_plan.title]
    assert all(r["h_unseen"] == pytest.approx(s.label, abs=1e-3) for r in kept for p, s in ranked
               if p.title == r["title"])
    plain = rank_plans(plans)  # plain h's labels are recorded beside (the ablation's plus:by_h)
    assert all(r["h"] == pytest.approx(s.label, abs=1e-3) for r in kept for p, s in plain if p.title == r["title"])
    assert the_plan.video_prompt == VIDEO and the_plan.mode == "plus"  # only the title moves
    assert info["usage"]["attempts"] == 1 and info["usage"]["completion_tokens"] >= 0


def test_unreadable_drafts_leave_pe_s_title(scripted_llm, retriever):
    query = "a golden retriever puppy sees the sea for the first time"
    retrieval = retriever.retrieve(query, 10)
    scripted_llm.play(chat_reply(PLAN), chat_reply("no titles here"))
    the_plan, info = pipeline.write_plan(query, "plus", "openai-compatible", retrieval, seed=1, video="ltx")
    assert the_plan.title == "Midnight noodles in Bangkok"
    assert [r["source"] for r in info["drafts"]] == ["pe"] and info["drafts"][0]["chosen"]


def test_drafts_are_read_fitted_and_bounded():
    assert plus.read_drafts('{"title_1": "  A  cat ", "title_2": "", "title_3": "' + "word " * 20 + '"}') == [
        "A cat", plus.read_drafts('{"title_1": "' + "word " * 20 + '"}')[0]]
    assert all(len(t) <= plus.TITLE_LIMIT for t in plus.read_drafts('{"title_1": "' + "long " * 30 + '"}'))
    assert plus.read_drafts("[1, 2]") == [] and plus.read_drafts("not json") == []
    schema = plus.drafts_schema()
    assert schema["required"] == ["title_1", "title_2", "title_3"]
    assert all(p["maxLength"] == plus.TITLE_LIMIT for p in schema["properties"].values())


def test_a_plus_plan_counts_two_llm_answers_against_paid_limits_and_slot_time():
    """PE+ asks the LLM twice per candidate (the plan, then its drafts): a paid backend's per-visitor limit and a
    ZeroGPU slot's duration count both."""
    from popcorn.serve import zerogpu

    assert pipeline.llm_calls(Settings(query="x", mode="plus", candidates=3)) == 6
    assert pipeline.llm_calls(Settings(query="x", mode="pe", candidates=3)) == 3
    assert zerogpu.plan_seconds("qwen2.5-72b", 2) > zerogpu.plan_seconds("qwen2.5-72b", 1)


def test_a_draft_that_copies_a_reference_is_dropped_before_ranking_and_pe_s_own_title_stays():
    reference = Reference(video_id=1, title="my cat sees snow for the first time # cute pet", category="Animal",
                          comments=900, label="popular", similarity=0.8)
    retrieval = Retrieval(query="a cat and snow", matched_categories=["Animal"], category_scores=[],
                          references=[reference])
    plan = Plan(title="First snow, first zoomies", cover_prompt="a kitten in snow", video_prompt=VIDEO, mode="plus",
                matched_categories=["Animal"])
    copy = "My cat sees snow for the first time! #cute pet"  # case, punctuation and spacing changed
    best, rows = plus.pick_title(plan, [copy, "Snow day: a kitten's first leap"], retrieval)
    assert "near-copy of a reference title" in rows[1]["dropped"] and "h" not in rows[1] and not rows[1]["chosen"]
    assert best.title != copy and {r["title"] for r in rows if "h" in r} == {plan.title, rows[2]["title"]}


def test_the_drafts_ask_shares_pe_s_fixed_prefix_so_the_kv_cache_serves_the_conversation():
    """The drafts ask goes on PE's conversation: its fixed prefix (popcorn/llm/llama_state.py) is PE's instructions,
    found in memory after PE's plan, not the whole conversation (evaluated afresh: 866 prompt tokens against 231 for
    the same ask, 37 s against 8 s under load, session 9)."""
    from popcorn.llm import llama_state

    retrieval = Retrieval(query="noodles", matched_categories=["Delicacy"], category_scores=[], references=[
        Reference(video_id=1, title="garlic noodles in 5 minutes", category="Delicacy", comments=90,
                  label="popular", similarity=0.7)])
    pe = prompts.pe_messages("15-second garlic butter noodles", retrieval, (25, 45))
    plan = Plan(title="Midnight noodles in Bangkok", cover_prompt="a wok", video_prompt=VIDEO, mode="plus")
    drafts = plus.drafts_messages(pe, plan)

    def render(messages):
        return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages) + "<|assistant|>\n"

    prefix = llama_state.fixed_prefix(render(drafts), drafts)
    assert prefix == llama_state.fixed_prefix(render(pe), pe) and prefix
    assert render(pe).startswith(prefix) and "Midnight noodles" not in prefix and plus.DRAFTS_ASK[:20] not in prefix
