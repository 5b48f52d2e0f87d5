"""The llama.cpp model cache: at most POPCORN_LLM_MAX_LOADED (default 1) GGUF models loaded per process.

Each loaded model holds its weights and a KV cache of n_ctx tokens, so loading one more frees the least recently used
(once nobody generates with it). A model is shared by every backend that points at its file; loading and generating
are serialised with locks (a llama.cpp context is not thread-safe). Threads = physical cores (hyper-threads only
contend for the same units); prompts are evaluated in batches of 512.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from popcorn.llm import gguf, llama_state, token_mask
from popcorn.types import StageError

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
            from llama_cpp import Llama  # optional (a compiled extension), and read OMP_WAIT_POLICY at import: above
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
        attach_value_tokens(model)
        _MODELS[key] = (model, threading.Lock())
        return _MODELS[key]


def _value_tokens_path(model) -> Path:
    """Where the vocabulary's value mask of this model, this llama.cpp build and this definition of the mask is kept
    (beside the prefix states: popcorn/llm/llama_state.py)."""
    definition = inspect.getsource(token_mask.value_tokens) + token_mask._VALUE_TOKEN.pattern.decode("latin-1")
    record = {"model": llama_state.model_digest(model), "build": llama_state.build_id(),
              "n_vocab": int(model.n_vocab()), "definition": hashlib.sha256(definition.encode()).hexdigest()}
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:40]
    return llama_state.folder() / f"{key}.tokens.npz"


def attach_value_tokens(model) -> str:
    """The vocabulary's value mask (token_mask.value_tokens: ~1.5 CPU-s of Python over ~150k tokens for Qwen) made
    once per model and build and kept on disk, then read by later processes; made here, while the model loads under
    the load lock, so that the plan and the LLM's warm-up thread never compute it side by side (a fresh `popcorn plan`
    did, on its critical path). Returns where it came from: "memory" (attached already), "disk" or "computed"."""
    if getattr(model, "_popcorn_value_tokens", None) is not None:
        return "memory"
    path = _value_tokens_path(model) if llama_state.enabled() else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as saved:
                arrays = (saved["banned"], saved["closing"], saved["chars"])
            if all(len(a) == int(model.n_vocab()) for a in arrays):
                model._popcorn_value_tokens = arrays
                return "disk"
        except (OSError, ValueError, KeyError):
            pass
    banned, closing, chars = token_mask.value_tokens(model)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                np.savez(f, banned=banned, closing=closing, chars=chars)
            tmp.replace(path)
        except OSError:  # a read-only cache: computed again next time
            pass
    return "computed"


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
