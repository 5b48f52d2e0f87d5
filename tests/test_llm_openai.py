"""The OpenAI-compatible backends: for real against llama-cpp-python's OpenAI server (the local GGUF), and against a
scripted HTTP server on 127.0.0.1 for what only the paid APIs do (429/5xx/timeouts, DeepSeek-R1 reasoning_content,
keys that must never leak)."""

from __future__ import annotations

import logging

import pytest

from popcorn.llm import PLAN_SCHEMA, get_llm, parse_plan
from popcorn.llm.openai_compat import OpenAICompatLLM, deepseek_chat, deepseek_reasoner, openai_compatible, openai_llm
from popcorn.types import StageError

try:
    from tests.llm_server import chat_reply, error_reply, free_port, llama_server, scripted_server  # noqa: F401
except ImportError:
    from llm_server import chat_reply, error_reply, free_port, llama_server, scripted_server  # noqa: F401

KEY = "sk-test-0123456789abcdefSECRET"
PLAN_JSON = ('{"reasoning": "short pet clips do well", "title": "Cat vs Cucumber", '
             '"cover_prompt": "a startled cat next to a cucumber", "video_prompt": "a cat turns, sees a cucumber behind it on the kitchen floor and jumps straight up in surprise while the camera holds a low, steady shot in warm evening light"}')
MESSAGES = [
    {"role": "system", "content": "You plan short videos. Answer with one JSON object with the keys reasoning, "
                                  "title (at most 50 characters), cover_prompt and video_prompt."},
    {"role": "user", "content": "A video about a cat that is afraid of cucumbers."},
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL",
                 "POPCORN_OPENAI_BASE_URL", "POPCORN_OPENAI_MODEL", "POPCORN_OPENAI_API_KEY", "POPCORN_LLM_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POPCORN_LLM_RETRY_DELAY", "0.01")
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "4")


@pytest.fixture
def deepseek_env(monkeypatch, scripted_server):
    monkeypatch.setenv("DEEPSEEK_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    return scripted_server


# --- registry and availability -------------------------------------------------------------------------------------


def test_registered_names_build_the_right_backends():
    assert get_llm("openai").model == "gpt-4o"
    assert get_llm("deepseek-chat").model == "deepseek-chat"
    assert get_llm("deepseek-reasoner").model == "deepseek-reasoner"
    llm = get_llm("openai-compatible:qwen2.5:7b")  # an Ollama-style model name with a colon
    assert isinstance(llm, OpenAICompatLLM) and llm.model == "qwen2.5:7b" and llm.name == "openai-compatible:qwen2.5:7b"


def test_available_says_which_variable_is_missing(monkeypatch):
    ok, why = deepseek_chat().available()
    assert not ok and "DEEPSEEK_API_KEY" in why
    ok, why = openai_compatible().available()
    assert not ok and "POPCORN_OPENAI_BASE_URL" in why
    monkeypatch.setenv("DEEPSEEK_API_KEY", KEY)
    assert deepseek_chat().available() == (True, "")
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert openai_compatible().available() == (True, "")  # no key needed for a local server


def test_unavailable_backend_raises_a_stage_error_without_calling_out():
    with pytest.raises(StageError) as info:
        openai_llm().complete(MESSAGES)
    assert info.value.stage == "plan" and "OPENAI_API_KEY" in str(info.value)


# --- scripted server: the paid APIs' behaviour ---------------------------------------------------------------------


def test_deepseek_reasoner_keeps_reasoning_content_apart(deepseek_env):
    deepseek_env.play(chat_reply(PLAN_JSON, reasoning="The user wants a cat video. Short clips do well.",
                                 model="deepseek-reasoner"))
    out = deepseek_reasoner().complete(MESSAGES, json_schema=PLAN_SCHEMA, max_tokens=512)
    assert out.reasoning == "The user wants a cat video. Short clips do well."
    assert parse_plan(out.text)["title"] == "Cat vs Cucumber"
    assert out.model == "deepseek-reasoner"
    sent = deepseek_env.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["model"] == "deepseek-reasoner"
    assert "response_format" not in sent["json"]  # R1 has no JSON mode
    assert sent["json"]["max_tokens"] >= 8192  # room for its chain of thought
    assert sent["headers"]["authorization"] == f"Bearer {KEY}"


def test_deepseek_chat_uses_json_mode_and_reports_usage(deepseek_env):
    deepseek_env.play(chat_reply(PLAN_JSON, model="deepseek-chat"))
    out = deepseek_chat().complete(MESSAGES, json_schema=PLAN_SCHEMA, max_tokens=300, temperature=0.2, seed=3)
    sent = deepseek_env.requests[0]["json"]
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (300, 0.2, 3)
    assert sent["messages"] == MESSAGES
    assert out.reasoning == ""
    assert out.usage["prompt_tokens"] == 42 and out.usage["completion_tokens"] == 17 and out.usage["tries"] == 1


def test_api_answers_are_reported_once_whole(deepseek_env):
    deepseek_env.play(chat_reply(PLAN_JSON, model="deepseek-chat"))
    seen = []
    out = deepseek_chat().complete(MESSAGES, json_schema=PLAN_SCHEMA, on_text=seen.append)
    assert seen == [out.text] and out.text == PLAN_JSON
    assert "stream" not in deepseek_env.requests[0]["json"]  # not streamed: retries need whole answers


def test_openai_asks_for_the_json_schema(monkeypatch, scripted_server):
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    scripted_server.play(chat_reply(PLAN_JSON, model="gpt-4o"))
    openai_llm().complete(MESSAGES, json_schema=PLAN_SCHEMA)
    rf = scripted_server.requests[0]["json"]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["strict"]
    sent = rf["json_schema"]["schema"]
    assert list(sent["properties"]) == list(PLAN_SCHEMA["properties"]) and sent["required"] == PLAN_SCHEMA["required"]
    # OpenAI's strict subset has no string lengths: they travel as descriptions (checked on the answer)
    title = sent["properties"]["title"]
    assert "maxLength" not in title and title["description"] == "4 to 50 characters"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_errors_are_retried_then_succeed(deepseek_env, status):
    deepseek_env.play(error_reply(status, "busy"), error_reply(status, "busy"), chat_reply(PLAN_JSON))
    out = deepseek_chat().complete(MESSAGES, json_schema=PLAN_SCHEMA)
    assert len(deepseek_env.requests) == 3
    assert out.usage["tries"] == 3
    assert parse_plan(out.text)["cover_prompt"] == "a startled cat next to a cucumber"


@pytest.mark.parametrize("status, tries, hint", [(503, 3, "another backend"), (429, 2, "quota")])
def test_retries_are_bounded_and_the_error_says_what_happened(deepseek_env, monkeypatch, status, tries, hint):
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", str(tries))
    deepseek_env.play(error_reply(status, "overloaded"))
    with pytest.raises(StageError) as info:
        deepseek_chat().complete(MESSAGES)
    assert len(deepseek_env.requests) == tries
    err = info.value
    assert err.stage == "plan"
    assert "deepseek-chat" in err.message and f"HTTP {status} after {tries} tries" in err.message
    assert hint in err.hint


def test_timeout_then_success(deepseek_env, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("POPCORN_LLM_TIMEOUT", "0.5")
    slow = replace(chat_reply(PLAN_JSON), delay=2.0)
    deepseek_env.play(slow, chat_reply(PLAN_JSON))
    out = deepseek_chat().complete(MESSAGES)
    assert out.usage["tries"] == 2 and len(deepseek_env.requests) == 2


def test_persistent_timeout_is_a_clear_error(deepseek_env, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("POPCORN_LLM_TIMEOUT", "0.3")
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "2")
    deepseek_env.play(replace(chat_reply(PLAN_JSON), delay=1.5))
    with pytest.raises(StageError) as info:
        deepseek_chat().complete(MESSAGES)
    assert "timed out after 2 tries" in info.value.message
    assert "POPCORN_LLM_TIMEOUT" in info.value.hint


def test_connection_refused_is_retried_then_reported(monkeypatch):
    port = free_port()  # nothing listens there
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "2")
    with pytest.raises(StageError) as info:
        openai_compatible("m").complete(MESSAGES)
    assert "connection failed after 2 tries" in info.value.message
    assert f"127.0.0.1:{port}" in info.value.hint


def test_bad_key_is_not_retried_and_never_shown(deepseek_env, caplog):
    caplog.set_level(logging.DEBUG)  # everything: popcorn, openai, httpx
    deepseek_env.play(error_reply(401, f"Authentication Fails, Your api key: {KEY} is invalid"))
    llm = deepseek_chat()
    with pytest.raises(StageError) as info:
        llm.complete(MESSAGES)
    assert len(deepseek_env.requests) == 1
    assert "API key was rejected" in info.value.message and "DEEPSEEK_API_KEY" in info.value.hint
    shown = [str(info.value), repr(info.value), info.value.hint, repr(llm), str(llm.__dict__), caplog.text]
    assert not any(KEY in text for text in shown)
    assert not any(KEY[-10:] in text for text in shown)


def test_key_never_in_logs_or_errors_on_server_errors(deepseek_env, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "2")
    deepseek_env.play(error_reply(500, f"internal error while handling key {KEY}"))
    with pytest.raises(StageError) as info:
        deepseek_chat().complete(MESSAGES)
    assert KEY not in str(info.value) and KEY not in caplog.text
    assert "HTTP 500" in caplog.text  # the retries were logged, just without the key


def test_rejected_response_format_steps_down_and_is_remembered(monkeypatch, scripted_server):
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", scripted_server.base_url)
    scripted_server.play(error_reply(400, "response_format.schema is not supported"),
                         error_reply(400, "response_format is not supported"),
                         chat_reply(PLAN_JSON))
    llm = openai_compatible("some-model")
    out = llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    formats = [r["json"].get("response_format") for r in scripted_server.requests]
    assert formats == [{"type": "json_object", "schema": PLAN_SCHEMA}, {"type": "json_object"}, None]
    assert out.usage["tries"] == 1  # stepping down is not a retry
    scripted_server.play(chat_reply(PLAN_JSON))
    llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    assert "response_format" not in scripted_server.requests[0]["json"]


def test_a_format_that_only_meets_server_errors_is_dropped(monkeypatch, scripted_server):
    """llama.cpp's server answers response_format json_schema with HTTP 500: after max_tries, the next format."""
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "2")
    scripted_server.play(error_reply(500, "boom"), error_reply(500, "boom"), chat_reply(PLAN_JSON))
    llm = openai_llm()
    out = llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    kinds = [r["json"]["response_format"]["type"] for r in scripted_server.requests]
    assert kinds == ["json_schema", "json_schema", "json_object"]
    assert out.usage["tries"] == 1 and out.usage["response_format"] == "json_object"
    scripted_server.play(chat_reply(PLAN_JSON))
    llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    assert scripted_server.requests[0]["json"]["response_format"] == {"type": "json_object"}


def test_server_errors_for_an_accepted_format_are_only_retried(monkeypatch, scripted_server):
    monkeypatch.setenv("OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "2")
    llm = openai_llm()
    scripted_server.play(chat_reply(PLAN_JSON))
    llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)  # json_schema accepted once
    scripted_server.play(error_reply(503, "down"))
    with pytest.raises(StageError, match="HTTP 503 after 2 tries"):
        llm.complete(MESSAGES, json_schema=PLAN_SCHEMA)
    assert [r["json"]["response_format"]["type"] for r in scripted_server.requests] == ["json_schema"] * 2


def test_other_client_errors_fail_at_once(monkeypatch, scripted_server):
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", scripted_server.base_url)
    scripted_server.play(error_reply(400, "This model's maximum context length is 4096 tokens"))
    with pytest.raises(StageError) as info:
        openai_compatible("m").complete(MESSAGES)  # no schema: no response_format to blame
    assert len(scripted_server.requests) == 1
    assert "HTTP 400" in info.value.message and "maximum context length" in info.value.message


def test_model_defaults_to_what_the_server_serves(monkeypatch, scripted_server):
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", scripted_server.base_url)
    scripted_server.play(chat_reply(PLAN_JSON))
    llm = openai_compatible()
    llm.complete(MESSAGES)
    assert scripted_server.requests[0]["json"]["model"] == "scripted-model"


# --- the real thing: llama-cpp-python's OpenAI-compatible server with the local GGUF -------------------------------


@pytest.mark.llm
def test_plan_through_llama_cpp_openai_server(llama_server, monkeypatch):
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", llama_server.base_url)
    llm = openai_compatible()
    out = llm.complete(MESSAGES, json_schema=PLAN_SCHEMA, max_tokens=200, temperature=0.2, seed=1)
    plan = parse_plan(out.text)
    assert all(plan[k] for k in ("title", "cover_prompt", "video_prompt"))
    assert len(plan["title"]) <= 50
    assert out.usage["completion_tokens"] > 0 and out.usage["response_format"] == "json_object"
    assert out.model  # the server names the model it served


@pytest.mark.llm
def test_openai_backend_against_llama_cpp_server(llama_server, monkeypatch):
    """The `openai` backend as registered, pointed at the local server (OPENAI_BASE_URL): whatever response_format
    llama.cpp accepts, a plan comes back."""
    monkeypatch.setenv("OPENAI_BASE_URL", llama_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    llm = openai_llm("local-qwen")
    out = llm.complete(MESSAGES, json_schema=PLAN_SCHEMA, max_tokens=200, temperature=0.2, seed=2)
    plan = parse_plan(out.text)
    assert all(plan[k] for k in ("title", "cover_prompt", "video_prompt"))
