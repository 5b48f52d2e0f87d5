"""The fixed instructions' llama.cpp state kept on disk (popcorn/llm/llama_state.py, issue 27 point 5): a fresh
process loads it instead of evaluating the instructions again, the plan is the same bit for bit, and anything that
changes the state (template, model, build) misses the file."""

from __future__ import annotations

import json
import os
import time

import pytest

from popcorn.llm import llama_state, prompts
from popcorn.llm.llama_models import load_model, unload_all

SCHEMA = {"type": "object", "properties": {"angle": {"type": "string", "minLength": 5, "maxLength": 60},
                                           "title": {"type": "string", "minLength": 5, "maxLength": 45}},
          "required": ["angle", "title"], "additionalProperties": False}
IDEA = "a cat learns to skateboard in the park"


@pytest.fixture()
def smollm2(tmp_path, monkeypatch):
    yield from _fresh("smollm2", tmp_path, monkeypatch)


@pytest.fixture(params=["smollm2", pytest.param("local", marks=pytest.mark.llm)])
def any_llm(request, tmp_path, monkeypatch):
    """SmolLM2 (fast), and the product's Qwen2.5-Coder-1.5B (marked llm)."""
    yield from _fresh(request.param, tmp_path, monkeypatch)


def _fresh(name, tmp_path, monkeypatch):
    from popcorn.llm import get_llm

    llm = get_llm(name)
    ok, why = llm.available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POPCORN_LLM_STATE", raising=False)
    monkeypatch.delenv("POPCORN_LLM_STATE_MB", raising=False)
    unload_all()  # each test starts as a fresh process does: no model, no KV cache
    yield llm
    unload_all()


def plan(llm, messages):
    out = llm.complete(messages, json_schema=SCHEMA, max_tokens=60, temperature=0.0, seed=3)
    return out.text, out.usage


def test_the_fixed_prefix_is_the_system_turn_and_the_instructions_paragraph():
    messages = prompts.basic_messages(IDEA, (25, 45))
    prompt = "<s>system\n" + messages[0]["content"] + "</s>\n<s>user\n" + messages[1]["content"] + "</s>\n"
    prefix = llama_state.fixed_prefix(prompt, messages)
    assert prefix.endswith("The video_prompt has 25 to 45 words.") and IDEA not in prefix
    assert prompt.startswith(prefix) and messages[0]["content"] in prefix
    one = [{"role": "user", "content": "just one paragraph"}]
    assert llama_state.fixed_prefix("<u>just one paragraph</u>", one) == "<u>"  # up to the message
    assert llama_state.fixed_prefix("a prompt that lost the message", one) == ""


def test_a_plan_from_the_saved_prefix_is_the_plan_evaluated_afresh(any_llm, tmp_path, monkeypatch):
    smollm2 = any_llm
    messages = prompts.basic_messages(IDEA, (25, 45))
    first, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "evaluated" and usage["prefix_tokens"] >= llama_state.MIN_PREFIX_TOKENS
    files = list((tmp_path / "llama_state").glob("*.state"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    assert not list((tmp_path / "llama_state").glob("*.tmp"))  # written through a temporary file, renamed
    _, usage = plan(smollm2, messages)  # the same process: the prefix is in the KV cache
    # (not compared: the same prompt again is found whole in the cache and only its last token is evaluated, alone,
    # which llama.cpp rounds differently from a batch: Qwen's greedy answer changed there, as it did before the file)
    assert usage["prefix_from"] == "memory"

    unload_all()  # a new process: the prefix comes from the file, and the plan is the same
    loaded, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "disk", usage
    assert loaded == first
    assert usage["prompt_eval_tokens"] < usage["prefix_tokens"]  # only what follows the prefix was evaluated

    unload_all()
    monkeypatch.setenv("POPCORN_LLM_STATE", "0")  # no disk at all: evaluated, and still the same plan
    plain, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "evaluated" and plain == first


def test_a_changed_template_model_or_build_misses_the_saved_state(smollm2, tmp_path, monkeypatch):
    from popcorn.llm.token_mask import chat_prompt

    model, lock = load_model(smollm2.model_path())
    messages = prompts.basic_messages(IDEA, (25, 45))
    prompt = chat_prompt(model, messages)
    with lock:
        assert llama_state.prime(model, prompt, messages)["prefix_from"] == "evaluated"
        model.reset()
        assert llama_state.prime(model, prompt, messages)["prefix_from"] == "disk"
        # another system prompt (a changed template): another prefix, another file
        changed = [dict(messages[0], content=messages[0]["content"] + " Be brief."), messages[1]]
        model.reset()
        assert llama_state.prime(model, chat_prompt(model, changed), changed)["prefix_from"] == "evaluated"
        # another word range (the instructions' paragraph) too
        other = prompts.basic_messages(IDEA, (25, 46))
        model.reset()
        assert llama_state.prime(model, chat_prompt(model, other), other)["prefix_from"] == "evaluated"
        assert len(list((tmp_path / "llama_state").glob("*.state"))) == 3
        # the same text with another model file, or another llama.cpp build: a miss
        for name, value in (("model_digest", lambda m: "0" * 64), ("build_id", lambda: "another build")):
            with monkeypatch.context() as patched:
                patched.setattr(llama_state, name, value)
                model.reset()
                assert llama_state.prime(model, prompt, messages)["prefix_from"] == "evaluated", name
        model.reset()
        assert llama_state.prime(model, prompt, messages)["prefix_from"] == "disk"  # the original still hits


def test_a_damaged_state_file_is_evaluated_afresh_and_the_plan_stays_the_same(smollm2, tmp_path):
    messages = prompts.basic_messages(IDEA, (25, 45))
    first, _ = plan(smollm2, messages)
    (path,) = (tmp_path / "llama_state").glob("*.state")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # cut short, as a full disk would leave it without the rename
    unload_all()
    again, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "evaluated" and again == first
    assert path.stat().st_size == len(data)  # and written whole again


def test_the_state_folder_keeps_its_bound_removing_the_least_recently_used(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POPCORN_LLM_STATE_MB", str(2.5 / 1024))  # 2.5 KiB
    folder = llama_state.folder()
    folder.mkdir(parents=True)
    now = time.time()
    for i, name in enumerate(("old", "mid", "new")):
        (folder / f"{name}.state").write_bytes(b"x" * 1024)
        os.utime(folder / f"{name}.state", (now - 100 + i, now - 100 + i))
    (folder / "models.json").write_text(json.dumps({}))
    llama_state.prune(keep=folder / "old.state")  # just written: kept even though it is the oldest
    assert sorted(p.name for p in folder.iterdir()) == ["models.json", "new.state", "old.state"]
    monkeypatch.setenv("POPCORN_LLM_STATE_MB", str(0.5 / 1024))
    llama_state.prune(keep=folder / "new.state")
    assert sorted(p.name for p in folder.iterdir()) == ["models.json", "new.state"]  # alone over the bound: kept


def test_the_vocabularys_value_mask_is_made_once_per_model_and_build_and_read_from_disk_after(smollm2, monkeypatch):
    """token_mask.value_tokens (a Python pass over the whole vocabulary) runs while the model loads, under the load
    lock, and is kept beside the prefix states; a later load (a fresh process) reads the same arrays from disk."""
    import numpy as np

    from popcorn.llm import llama_models, token_mask

    model, _ = load_model(smollm2.model_path())
    loaded = model._popcorn_value_tokens
    assert loaded is not None and len(list(llama_state.folder().glob("*.tokens.npz"))) == 1
    model._popcorn_value_tokens = None
    computed = token_mask.value_tokens(model)
    assert all(np.array_equal(a, b) for a, b in zip(loaded, computed))
    unload_all()
    model, _ = load_model(smollm2.model_path())
    model._popcorn_value_tokens = None
    assert llama_models.attach_value_tokens(model) == "disk"
    assert all(np.array_equal(a, b) for a, b in zip(model._popcorn_value_tokens, computed))
    model._popcorn_value_tokens = None
    monkeypatch.setenv("POPCORN_LLM_STATE", "0")  # the disk off: computed
    assert llama_models.attach_value_tokens(model) == "computed"


def test_instructions_primed_for_a_placeholder_idea_serve_the_real_plan_unchanged(smollm2, tmp_path, monkeypatch):
    """The pipeline primes a PE prompt's instructions beside retrieval, before the references exist, from the same
    mode's messages written for a placeholder idea (pipeline._prepare_llm_meanwhile): the plan that follows finds
    them in the KV cache and is the plan evaluated afresh."""
    from popcorn import pipeline
    from popcorn.types import Reference, Retrieval

    refs = [Reference(video_id=1, title="a cat on a board", category="Animal", comments=40, label="popular",
                      similarity=0.5),
            Reference(video_id=2, title="dull cat clip", category="Animal", comments=1, label="unpopular",
                      similarity=0.3)]
    retrieval = Retrieval(query=IDEA, matched_categories=["Animal"], category_scores=[], references=refs)
    messages = prompts.pe_messages(IDEA, retrieval, (25, 45))
    placeholder = Retrieval(query=pipeline.PRIMING_IDEA, matched_categories=[], category_scores=[], references=[])
    primed = smollm2.prime(prompts.pe_messages(pipeline.PRIMING_IDEA, placeholder, (25, 45)))
    assert primed["prefix_from"] == "evaluated" and primed["prefix_tokens"] >= llama_state.MIN_PREFIX_TOKENS
    after_priming, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "memory" and usage["prefix_tokens"] == primed["prefix_tokens"]

    unload_all()
    monkeypatch.setenv("POPCORN_LLM_STATE", "0")  # a process that evaluates the whole prompt itself
    afresh, usage = plan(smollm2, messages)
    assert usage["prefix_from"] == "evaluated" and afresh == after_priming
