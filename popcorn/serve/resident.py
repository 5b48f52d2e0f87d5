"""One resident GPU model per process: loading a model first releases the ones loaded before it.

A GPU has room for one large model at a time, and a studio switches between them (a video model, another video model,
the cover model, a GPU LLM). Whatever loads weights onto the GPU registers here once loaded:

    with resident.exclusive():                      # one load-and-run on the GPU at a time
        resident.make_room("video:ltx#1")           # releases every other holder, empties the allocator's cache
        pipe = load(...)
        resident.hold("video:ltx#1", release)       # release() drops the holder's references to its weights

A holder that lets go of its own model calls `drop(name)`. The GPU readings (`gpu_memory`, `gpu_allocated`) live
here too, so tests can inject them.

How many models may stay loaded is `limit()`: 1 by default, POPCORN_RESIDENT_MODELS or `set_limit(n)` otherwise (0 =
no limit: on ZeroGPU, where the weights of every enabled backend are loaded at start-up and mapped into each worker,
nothing may be released).
"""

from __future__ import annotations

import gc
import os
import threading
from typing import Callable

GIB = 1024**3

_LOCK = threading.RLock()
_HOLDERS: dict[str, Callable[[], None]] = {}  # name -> release, in load order
_LIMIT: list[int | None] = [None]  # set_limit's value; None: POPCORN_RESIDENT_MODELS, else 1


def limit() -> int:
    """How many models may be loaded at once (0: any number)."""
    if _LIMIT[0] is not None:
        return _LIMIT[0]
    raw = os.environ.get("POPCORN_RESIDENT_MODELS", "").strip()
    return int(raw) if raw.isdigit() else 1


def set_limit(n: int | None) -> None:
    """Allow n models at once (0: any number; None: back to POPCORN_RESIDENT_MODELS / 1)."""
    _LIMIT[0] = None if n is None else max(0, int(n))


def exclusive() -> threading.RLock:
    """The process-wide lock around loading and running GPU models (re-entrant: a render may load its model)."""
    return _LOCK


def hold(name: str, release: Callable[[], None]) -> None:
    """`name` now has a model loaded; `release()` lets go of it (called by make_room on a later load)."""
    with _LOCK:
        _HOLDERS[name] = release


def drop(name: str) -> None:
    """`name` let go of its model by itself (no release call)."""
    with _LOCK:
        _HOLDERS.pop(name, None)


def held() -> list[str]:
    """Names of the holders with a model loaded, oldest first."""
    with _LOCK:
        return list(_HOLDERS)


def make_room(name: str, empty: bool = True) -> list[str]:
    """Release the other holders, oldest first, until `name` fits under limit(); then empty the allocator's cache
    (always when `empty`, else only if something was released). Returns the names released."""
    released = []
    with _LOCK:
        cap = limit()
        others = [(other, release) for other, release in _HOLDERS.items() if other != name]
        excess = len(others) - (cap - 1) if cap else 0
        for other, release in others[:max(0, excess)]:
            _HOLDERS.pop(other, None)
            release()
            released.append(other)
    if released or empty:
        free_cache()
    return released


def free_cache() -> None:
    """Collect unreachable models and give the CUDA caching allocator's unused blocks back to the driver."""
    gc.collect()
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def gpu_memory() -> tuple[int, int] | None:
    """(bytes PyTorch can still allocate, total bytes) of the current CUDA device, or None without one. 'Can still
    allocate' is the driver's free memory plus what the caching allocator holds unused."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info()
    return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated(), total


def gpu_allocated() -> int:
    """Bytes of tensors allocated on the current CUDA device (0 without one)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
