"""The local GGUF backend: assembling and verifying GGUF files (with small fake GGUFs and fake part packages), and
the real Qwen2.5-Coder-1.5B through llama.cpp (marked `llm`: slow on a CPU, but run in CI).

`python tests/test_llm_local.py --make-fixtures DIR` asks the real local model for plans in ways that go wrong
(no grammar, too few tokens, other formats) and writes the answers to DIR as real_<backend>_*.txt: that is how the real
outputs in tests/fixtures/llm_outputs were made (their expected values were then checked by hand).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
from pathlib import Path

import pytest

from popcorn.llm import PLAN_SCHEMA, get_llm, gguf, parse_plan
from popcorn.llm.llama_models import load_model
from popcorn.llm.local import LlamaCppLLM, gguf_file, local
from popcorn.llm.plan_schema import plan_schema
from popcorn.types import StageError

needs_llama = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")

MESSAGES = [
    {"role": "system", "content": "You plan short videos for a video platform. Answer with one JSON object with the "
                                  "keys reasoning, title (at most 50 characters), cover_prompt and video_prompt."},
    {"role": "user", "content": "A video about a cat that is afraid of cucumbers."},
]


# --- fake GGUF files -----------------------------------------------------------------------------------------------


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_fake_gguf(path: Path, metadata: dict, tensor_count: int = 1, payload: bytes = b"\0" * 64) -> Path:
    """A GGUF v3 header with string / uint32 / float32 / string-array metadata, then `payload` as tensor data."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, len(metadata)))
    for key, value in metadata.items():
        out += _gguf_string(key)
        if isinstance(value, str):
            out += struct.pack("<I", 8) + _gguf_string(value)
        elif isinstance(value, float):
            out += struct.pack("<If", 6, value)
        elif isinstance(value, int):
            out += struct.pack("<II", 4, value)
        elif isinstance(value, list):  # of strings
            out += struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_gguf_string(v) for v in value)
    path.write_bytes(bytes(out) + payload)
    return path


FAKE_META = {
    "general.architecture": "qwen2",
    "general.name": "Fake Qwen",
    "qwen2.context_length": 4096,
    "qwen2.rope.freq_base": 10000.0,
    "tokenizer.ggml.tokens": [f"tok{i}" for i in range(100)],  # long: summarised
    "tokenizer.ggml.merges": ["a b", "c d"],  # short: kept
}


def test_read_metadata_of_a_fake_gguf(tmp_path):
    info = gguf.read_metadata(write_fake_gguf(tmp_path / "m.gguf", FAKE_META, tensor_count=7))
    assert (info.version, info.tensor_count) == (3, 7)
    assert info.architecture == "qwen2" and info.model_name == "Fake Qwen" and info.context_length() == 4096
    assert info.metadata["qwen2.rope.freq_base"] == 10000.0
    assert info.metadata["tokenizer.ggml.tokens"] == gguf.ArraySummary("string", 100)
    assert info.metadata["tokenizer.ggml.merges"] == ["a b", "c d"]


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"GGML" + b[4:], "not b'GGUF'"),
        (lambda b: b[:40], "truncated"),
        (lambda b: b[:4] + struct.pack("<I", 9) + b[8:], "unknown GGUF version 9"),
        (lambda b: b"", "not b'GGUF'"),
    ],
)
def test_damaged_headers_fail_with_a_clear_message(tmp_path, damage, message):
    good = write_fake_gguf(tmp_path / "good.gguf", FAKE_META).read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good))
    with pytest.raises(StageError) as info:
        gguf.verify(bad)
    assert info.value.stage == "plan"
    assert "not a valid GGUF" in info.value.message and message in info.value.message
    assert "POPCORN_GGUF" in info.value.hint


def test_verify_checks_size_checksum_and_architecture(tmp_path):
    path = write_fake_gguf(tmp_path / "m.gguf", FAKE_META)
    size, digest = path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest()
    assert gguf.verify(path, size=size, sha256=digest, architecture="qwen2").architecture == "qwen2"
    with pytest.raises(StageError, match="expected 123"):
        gguf.verify(path, size=123)
    with pytest.raises(StageError, match="sha256 is"):
        gguf.verify(path, sha256="0" * 64)
    with pytest.raises(StageError, match="general.architecture is 'qwen2', expected 'llama'"):
        gguf.verify(path, architecture="llama")
    with pytest.raises(StageError, match="holds no tensors"):
        gguf.verify(write_fake_gguf(tmp_path / "empty.gguf", FAKE_META, tensor_count=0))
    with pytest.raises(StageError, match="does not exist"):
        gguf.verify(tmp_path / "missing.gguf")


def test_a_changed_file_is_hashed_again(tmp_path, monkeypatch):
    path = write_fake_gguf(tmp_path / "m.gguf", FAKE_META)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    gguf.verify(path, sha256=digest)  # hashes and writes the stamp
    calls = []
    real = gguf.sha256_file
    monkeypatch.setattr(gguf, "sha256_file", lambda p, progress=None: calls.append(p) or real(p))
    gguf.verify(path, sha256=digest)
    assert calls == []  # the stamp matched: no second pass over the file
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one byte of tensor data flipped (the mtime changes with the write)
    path.write_bytes(bytes(data))
    with pytest.raises(StageError, match="corrupt"):
        gguf.verify(path, sha256=digest)
    assert calls == [path]


# --- assembling from (fake) part packages --------------------------------------------------------------------------


def fake_parts(root: Path, blob: bytes, n: int, prefix: str = "fakeparts_p") -> tuple[str, ...]:
    """n importable packages <prefix>1..n, each with data/partNN.bin holding one slice of blob."""
    step = -(-len(blob) // n)
    names = []
    for i in range(n):
        pkg = root / f"{prefix}{i + 1}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i + 1:02d}.bin").write_bytes(blob[i * step:(i + 1) * step])
        names.append(pkg.name)
    return tuple(names)


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    blob = write_fake_gguf(tmp_path / "src.gguf", FAKE_META, payload=bytes(range(256)) * 40).read_bytes()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    parts = fake_parts(tmp_path / "site", blob, 5)
    return gguf.PackagedGGUF("fake-qwen", parts, len(blob), hashlib.sha256(blob).hexdigest(), "qwen2",
                             "fake-parts==1"), blob


def test_assemble_concatenates_the_parts_in_order(tmp_path, fake_model):
    model, blob = fake_model
    assert gguf.parts_installed(model) == (True, "")
    fractions = []
    out = gguf.assemble(model, tmp_path / "models" / "fake.gguf", progress=fractions.append)
    assert out.read_bytes() == blob
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    # no temporary file left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]
    mtime = out.stat().st_mtime_ns
    assert gguf.assemble(model, out) == out and out.stat().st_mtime_ns == mtime  # already there: not rebuilt


def test_a_bad_earlier_copy_is_rebuilt(tmp_path, fake_model):
    model, blob = fake_model
    dest = tmp_path / "fake.gguf"
    dest.write_bytes(blob[:-1] + b"X")  # right size, wrong content
    assert gguf.assemble(model, dest).read_bytes() == blob


def test_corrupt_part_fails_and_leaves_nothing(tmp_path, fake_model):
    model, _ = fake_model
    part = gguf.part_files(model)[2]
    data = bytearray(part.read_bytes())
    data[5] ^= 1
    part.write_bytes(bytes(data))
    dest = tmp_path / "out" / "fake.gguf"
    with pytest.raises(StageError) as info:
        gguf.assemble(model, dest)
    assert "sha256" in info.value.message and "--force-reinstall fake-parts==1" in info.value.hint
    assert list(dest.parent.iterdir()) == []  # neither the final file nor a temporary one


def test_missing_parts_name_the_packages_to_install(tmp_path, fake_model):
    model, _ = fake_model
    broken = gguf.PackagedGGUF(model.name, model.parts + ("fakeparts_p_absent",), model.size, model.sha256,
                               "qwen2", "fake-parts==1")
    ok, why = gguf.parts_installed(broken)
    assert not ok and "1 of 6 parts missing" in why and "fakeparts-p-absent" in why and "pip install" in why
    with pytest.raises(StageError):
        gguf.assemble(broken, tmp_path / "x.gguf")


# --- the real packaged model ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def qwen_path():
    ok, why = gguf.parts_installed(gguf.QWEN_CODER)
    if not ok:
        pytest.skip(why)
    return gguf.assemble()  # ~15 s the first time (1.1 GB), then only the header is read


def test_packaged_qwen_is_assembled_and_verified(qwen_path):
    assert qwen_path.stat().st_size == 1_117_320_768
    info = gguf.verify(qwen_path, size=gguf.QWEN_CODER.size, sha256=gguf.QWEN_CODER.sha256, architecture="qwen2")
    assert info.architecture == "qwen2"
    assert info.model_name == "Qwen2.5 Coder 1.5B Instruct GGUF"
    assert info.tensor_count == 339 and info.version == 3
    assert info.metadata["qwen2.block_count"] == 28 and info.context_length() == 32768
    assert info.metadata["tokenizer.ggml.tokens"].length == 151936
    assert "<|im_start|>" in info.metadata["tokenizer.chat_template"]


def test_local_backends_report_availability_without_loading(tmp_path, monkeypatch):
    ok, why = gguf_file(str(tmp_path / "nope.gguf")).available()
    assert not ok and "no GGUF file" in why
    (tmp_path / "text.gguf").write_text("hello")
    ok, why = gguf_file(str(tmp_path / "text.gguf")).available()
    assert not ok and "not a GGUF file" in why
    monkeypatch.setenv("POPCORN_GGUF", str(tmp_path / "nope.gguf"))
    assert local().available()[0] is False  # POPCORN_GGUF replaces the packaged model
    monkeypatch.delenv("POPCORN_GGUF")
    assert isinstance(get_llm("local:" + str(tmp_path / "x.gguf")), LlamaCppLLM)


@needs_llama
def test_missing_file_is_a_stage_error(tmp_path):
    with pytest.raises(StageError) as info:
        gguf_file(str(tmp_path / "nope.gguf")).complete(MESSAGES, max_tokens=4)
    assert info.value.stage == "plan" and "no GGUF file" in info.value.message


@pytest.mark.llm
@needs_llama
def test_local_model_writes_a_plan_constrained_to_the_schema(qwen_path):
    schema = plan_schema("basic", video_chars=330)
    out = get_llm("local").complete(MESSAGES, json_schema=schema, max_tokens=300, temperature=0.3, seed=7)
    assert out.usage["finish_reason"] == "stop", out.text  # the grammar closed the object within the budget
    data = json.loads(out.text)  # strict JSON: the grammar allows nothing else
    assert list(data) == ["angle", "title", "cover_prompt", "video_prompt"]
    for key, prop in schema["properties"].items():
        assert prop["minLength"] <= len(data[key]) <= prop["maxLength"], key
    plan = parse_plan(out.text)
    assert all(plan[k].strip() for k in ("title", "cover_prompt", "video_prompt"))
    assert len(plan["title"]) <= 50
    assert out.model == qwen_path.name and out.usage["completion_tokens"] > 10


@pytest.mark.llm
@needs_llama
def test_model_is_loaded_once_and_shared(qwen_path):
    a, lock_a = load_model(qwen_path)
    b, lock_b = load_model(qwen_path)
    assert a is b and lock_a is lock_b
    assert get_llm(f"local:{qwen_path}").model_path() == qwen_path


@pytest.mark.llm
@needs_llama
def test_concurrent_calls_are_serialised_safely(qwen_path):
    llm = get_llm("local")
    results, errors = {}, []

    def ask(i):
        try:
            results[i] = llm.complete([{"role": "user", "content": f"Say the number {i}."}], max_tokens=8,
                                      temperature=0.0)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(i,)) for i in (3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(results) == {3, 4}
    assert all(0 < r.usage["completion_tokens"] <= 8 for r in results.values())
    assert str(3) in results[3].text and str(4) in results[4].text


@pytest.mark.llm
@needs_llama
def test_smollm2_smoke():
    llm = get_llm("smollm2")
    ok, why = llm.available()
    if not ok:
        pytest.skip(why)
    out = llm.complete(MESSAGES, json_schema=PLAN_SCHEMA, max_tokens=120, temperature=0.0)
    data = json.loads(out.text) if out.usage["finish_reason"] == "stop" else None
    assert out.text.startswith("{") and out.usage["completion_tokens"] > 0
    if data is not None:
        assert set(data) <= set(PLAN_SCHEMA["properties"])


@pytest.mark.llm
@needs_llama
def test_a_plan_written_field_by_field_counts_each_token_once():
    """The values written for one field are part of the next field's prompt: they are counted as completion tokens
    only, so prompt + completion tokens are the tokens of the chat prompt and the answer."""
    from popcorn.llm.token_mask import chat_prompt

    llm = get_llm("smollm2")
    ok, why = llm.available()
    if not ok:
        pytest.skip(why)
    schema = plan_schema("basic", video_chars=200)
    # a value cut to its bound or drawn again leaves generated tokens out of the answer: take a draw with neither
    # (which seed gives one depends on llama.cpp's build: its numerics differ between instruction sets)
    for seed in range(3, 13):
        out = llm.complete(MESSAGES, json_schema=schema, max_tokens=300, temperature=0.7, seed=seed)
        if not out.usage.get("capped_fields") and not out.usage.get("redrawn_fields"):
            break
    else:
        pytest.fail("ten draws in a row had a value cut or drawn again")
    assert out.usage["finish_reason"] == "stop", out.text
    model, _ = load_model(llm.model_path())
    count = lambda text: len(model.tokenize(text.encode("utf-8"), add_bos=False, special=True))  # noqa: E731
    prompt, fields = chat_prompt(model, MESSAGES), len(schema["properties"])
    # re-tokenising may join or split a token at each of the 2 x 4 quotes around the values
    assert abs(out.usage["prompt_tokens"] + out.usage["completion_tokens"] - count(prompt + out.text)) <= 2 * fields
    assert count(prompt) < out.usage["prompt_tokens"] < count(prompt) + 8 * fields  # the keys, not the values


# --- making the corpus of real bad outputs ---------------------------------------------------------------------------

FIXTURE_PROMPTS = {
    # name: (messages, max_tokens): no grammar, so the model answers as it likes
    "truncated_60": (MESSAGES, 60),
    "truncated_110": (MESSAGES, 110),
    "unconstrained": (MESSAGES, 400),
    "labelled_text": ([
        {"role": "system", "content": "You plan short videos."},
        {"role": "user", "content": "Plan a video about street food in Bangkok. Write three lines: 'Title: ...', "
                                    "'Cover prompt: ...' and 'Video prompt: ...'. No JSON."}], 200),
    "loose_keys": ([
        {"role": "user", "content": "Give me a title, a description of a cover image and a description of a 3 second "
                                    "video for a clip about morning yoga on the beach, as JSON."}], 250),
}


def make_fixtures(folder: Path, backend: str = "local") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    llm = get_llm(backend)
    for name, (messages, max_tokens) in FIXTURE_PROMPTS.items():
        out = llm.complete(messages, max_tokens=max_tokens, temperature=0.7, seed=1)
        (folder / f"real_{backend.replace(':', '_')}_{name}.txt").write_text(out.text, encoding="utf-8")
        print(name, out.usage, flush=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--make-fixtures":
        make_fixtures(Path(sys.argv[2]), *(sys.argv[3:4]))
    else:
        print(__doc__)


@pytest.mark.llm
@needs_llama
def test_streamed_answer_is_reported_as_it_grows_and_stops_when_told(qwen_path):
    llm = get_llm("local")
    messages = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
    seen: list[str] = []
    out = llm.complete(messages, max_tokens=40, temperature=0.0, seed=1, on_text=seen.append)
    assert len(seen) > 5 and all(b.startswith(a) for a, b in zip(seen, seen[1:])) and seen[-1] == out.text
    plain = llm.complete(messages, max_tokens=40, temperature=0.0, seed=1)
    assert plain.text == out.text  # streaming changes nothing
    assert out.usage["completion_tokens"] == plain.usage["completion_tokens"]
    # a CJK + emoji answer: several tokens may arrive as one chunk, and the count is still the tokens'
    cjk = [{"role": "user", "content": "用中文写一句关于街头小吃的话，加上表情符号🍜🔥。"}]
    # each from an empty KV cache: a prompt found whole in the cache has only its last token evaluated again, alone,
    # and llama.cpp's one-token kernels round differently from its batch kernels (enough to flip a greedy near-tie)
    model, _ = load_model(llm.model_path())
    model.reset()
    streamed = llm.complete(cjk, max_tokens=30, temperature=0.0, seed=1, on_text=lambda t: None)
    model.reset()
    whole = llm.complete(cjk, max_tokens=30, temperature=0.0, seed=1)
    assert streamed.text == whole.text
    assert streamed.usage["completion_tokens"] == whole.usage["completion_tokens"]

    class Stop(Exception):
        pass

    calls = []

    def stop_after_three(text):
        calls.append(text)
        if len(calls) == 3:
            raise Stop()

    with pytest.raises(Stop):
        llm.complete(messages, max_tokens=40, temperature=0.0, seed=1, on_text=stop_after_three)
    assert len(calls) == 3  # generation ended there
    again = llm.complete(messages, max_tokens=40, temperature=0.0, seed=1)  # the model and its lock are free again
    assert again.text == out.text
