"""The evaluated fixed instructions of a prompt, kept on disk: a plan in a fresh process starts where a warm one does.

Every plan of a mode opens with the same text: the system prompt and the first paragraph of the user's turn (the
mode's instructions, prompts/basic.txt or prompts/pe.txt up to their first blank line, word range included). A
process that has planned once holds that text's KV cache in memory and evaluates only what follows; a new process
(every `popcorn plan`) evaluated it again: ~16 s of a cold plan on a 2-core AVX2 machine (issue 27). So prime()
evaluates that prefix as a batch of its own and writes llama.cpp's state after it (the KV cache of those tokens and
the last token's logits, through llama_state_save_file) to <cache>/llama_state/<key>.state; the next process loads
the file instead of evaluating the prefix.

Never wrong: the key digests everything the state depends on: the model file's sha256, the llama.cpp build
(llama-cpp-python's version, the library's compiled CPU features, its file's size and mtime), n_ctx and n_batch, and
the prefix's exact text and token ids; the file's own token list is checked on load, and a file llama.cpp refuses
(or any error) is evaluated afresh. The prefix is always evaluated as its own batch, with or without a file, so a
plan is bit for bit the same whether its prefix came from disk or not (tests/test_llm_state.py).

Bounded: the folder keeps at most POPCORN_LLM_STATE_MB (default 256) megabytes: after each write the least recently
used files (a load touches its file) are removed, never the one just written. A Qwen2.5-1.5B prefix of ~400 tokens
is ~12 MB (KV cache of 28 KiB a token + one row of logits), so ~20 mode and word-range combinations fit. Written
atomically (a temporary file in the same folder, then a rename).
POPCORN_LLM_STATE=0 turns the disk off (the prefix is still evaluated as its own batch).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from popcorn import config
from popcorn.llm import gguf

MIN_PREFIX_TOKENS = 32  # a shorter prefix costs less to evaluate than a file costs to read
DEFAULT_BOUND_MB = 256
SUFFIX = ".state"


def enabled() -> bool:
    return os.environ.get("POPCORN_LLM_STATE", "1").strip().lower() not in ("0", "off", "false", "no")


def bound_bytes() -> int:
    try:
        return int(float(os.environ.get("POPCORN_LLM_STATE_MB", "") or DEFAULT_BOUND_MB) * (1 << 20))
    except ValueError:
        return DEFAULT_BOUND_MB << 20


def folder() -> Path:
    return config.cache_dir() / "llama_state"


def fixed_prefix(prompt: str, messages: list[dict]) -> str:
    """The part of the chat `prompt` every plan of a mode shares: up to the end of the first paragraph of the first
    user message (its instructions), or up to that message when it has one paragraph only. "" when the message
    cannot be found in the prompt as written. The first, not the last: a conversation that goes on (PE+'s drafts ask,
    after PE's prompt and plan) shares the mode's instructions and finds the rest of its prompt in the KV cache,
    where the last message's would name a prefix no other prompt has and evaluate it all again."""
    user = next((m.get("content") or "" for m in messages if m.get("role") == "user"), "")
    at = prompt.find(user) if user else -1
    if at < 0:
        return ""
    paragraph = user.find("\n\n")
    return prompt[: at + paragraph] if paragraph > 0 else prompt[:at]


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """llama.cpp as this process runs it: llama-cpp-python's version, the CPU features its library was compiled
    with, and the library file (a rebuilt wheel of the same version is another file)."""
    import llama_cpp  # optional (a compiled extension); loaded already with the model
    import llama_cpp.llama_cpp as lib

    parts = [getattr(llama_cpp, "__version__", "?"), llama_cpp.llama_print_system_info().decode("utf-8", "replace")]
    name = getattr(getattr(lib, "_lib", None), "_name", None)
    if name and os.path.exists(name):
        st = os.stat(name)
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def state_key(model, digest: str, prefix: str, tokens: list[int]) -> str:
    record = {"model": digest, "build": build_id(), "n_ctx": int(model.n_ctx()), "n_batch": int(model.n_batch),
              "prefix": prefix, "tokens": list(map(int, tokens))}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode("utf-8")).hexdigest()[:40]


def model_digest(model) -> str:
    """The model file's sha256: from gguf.verify's stamp beside the file when it is of this very file (the packaged
    Qwen has one), else from this folder's record of files hashed before (same path, size and mtime), else hashed
    now (SmolLM2's 98 MB: ~0.1 s; a 1 GB file ~1 s, once) and recorded here, never beside the model."""
    path = Path(model.model_path).resolve()
    try:
        stamped = json.loads(gguf._stamp_path(path).read_text()).get("sha256", "")
        if stamped and gguf._stamp_matches(path, stamped):
            return stamped
    except (OSError, ValueError, AttributeError):
        pass
    st = path.stat()
    record_path = folder() / "models.json"
    try:
        records = json.loads(record_path.read_text())
    except (OSError, ValueError):
        records = {}
    seen = records.get(str(path)) or {}
    if seen.get("size") == st.st_size and seen.get("mtime_ns") == st.st_mtime_ns and seen.get("sha256"):
        return seen["sha256"]
    digest = gguf.sha256_file(path)
    records[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = record_path.with_name(f"models.json.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(record_path)
    except OSError:
        pass  # a read-only cache: hashed again next time
    return digest


_WRITE_LOCK = threading.Lock()


def prime(model, prompt: str, messages: list[dict]) -> dict:
    """Make the model's KV cache start with the prompt's fixed prefix (from memory, from disk, or evaluated now and
    written to disk), so that generating from `prompt` evaluates only what follows it. Returns what happened, for
    the answer's usage: {"prefix_tokens": n, "prefix_from": "memory" | "disk" | "evaluated"}, or {} when the
    prompt has no prefix worth keeping. Call with the model's generation lock held."""
    prefix = fixed_prefix(prompt, messages)
    if not prefix:
        return {}
    full = model.tokenize(prompt.encode("utf-8"), special=True)
    head = model.tokenize(prefix.encode("utf-8"), special=True)
    n = 0
    for a, b in zip(full, head):  # the prefix's tokens as the whole prompt tokenizes them (a boundary may merge)
        if a != b:
            break
        n += 1
    if n < MIN_PREFIX_TOKENS or n >= len(full):
        return {}
    tokens = full[:n]
    if model.n_tokens >= n and model.input_ids[:n].tolist() == tokens:
        return {"prefix_tokens": n, "prefix_from": "memory"}
    started = time.perf_counter()
    path = folder() / f"{state_key(model, model_digest(model), prefix, tokens)}{SUFFIX}" if enabled() else None
    source = "disk" if path is not None and _load(model, path, tokens) else "evaluated"
    if source == "evaluated":
        model.reset()
        model.eval(tokens)
        if path is not None:
            _save(model, path, tokens)
    return {"prefix_tokens": n, "prefix_from": source, "prefix_s": round(time.perf_counter() - started, 3)}


def _load(model, path: Path, tokens: list[int]) -> bool:
    import llama_cpp  # optional (a compiled extension); loaded already with the model

    if not path.is_file():
        return False
    out = (llama_cpp.llama_token * len(tokens))()
    count = ctypes.c_size_t(0)
    try:
        ok = llama_cpp.llama_state_load_file(model._ctx.ctx, str(path).encode("utf-8"), out, len(tokens),
                                             ctypes.byref(count))
    except Exception:
        ok = False
    if not ok or count.value != len(tokens) or list(out[: count.value]) != tokens:
        model.reset()  # whatever the failed load left in the context is evaluated over
        return False
    model.input_ids[: len(tokens)] = tokens
    model.n_tokens = len(tokens)
    try:
        os.utime(path)  # recently used: kept longest by prune()
    except OSError:
        pass
    return True


def _save(model, path: Path, tokens: list[int]) -> None:
    import llama_cpp  # optional (a compiled extension); loaded already with the model

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        if not llama_cpp.llama_state_save_file(model._ctx.ctx, str(tmp).encode("utf-8"), array, len(tokens)):
            tmp.unlink(missing_ok=True)
            return
        with _WRITE_LOCK:
            tmp.replace(path)
            prune(keep=path)
    except OSError:  # a read-only or full cache folder: the next process evaluates the prefix again
        pass


def prune(keep: Path | None = None) -> None:
    """Remove the least recently used state files until the folder holds at most bound_bytes() (`keep`, the file
    just written, is never removed: it is the one the next plan loads)."""
    files = []
    for path in folder().glob(f"*{SUFFIX}"):
        try:
            st = path.stat()
        except OSError:
            continue
        files.append((st.st_mtime, path, st.st_size))
    total = sum(size for _, _, size in files)
    limit = bound_bytes()
    for _, path, size in sorted(files):
        if total <= limit:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
