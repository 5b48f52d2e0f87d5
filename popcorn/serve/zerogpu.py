"""GPU work on a Hugging Face ZeroGPU Space, the way ZeroGPU runs it (and plainly everywhere else).

On ZeroGPU the main process has no GPU: a function decorated with `spaces.GPU` runs in a GPU worker process for at most
its `duration` seconds, and gets the weights the main process loaded at start-up. So:

- only backends that need a GPU run in a slot (`needs_gpu`: transformers LLMs, diffusers video models); the llama.cpp
  plan, the storyboard, the API backends, retrieval and scoring stay in the main process, holding no GPU;
- each slot's duration is computed from the model and the settings (`plan_seconds`, `render_seconds`);
- the main process never calls CUDA: `active()` reads the `spaces` configuration, not torch;
- `preload(...)` loads the enabled GPU backends' weights at start-up (ZeroGPU moves them to the worker's GPU);
- Cancel and progress cross the process boundary through a `Channel`: a folder with a cancel flag file the worker
  checks at each progress report and a progress log the main process relays to the page.

`gpu(duration)` is `spaces.GPU(duration=...)` when the `spaces` package can be imported and the identity otherwise.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("popcorn.serve.zerogpu")

MIN_SECONDS, MAX_SECONDS = 20, int(os.environ.get("POPCORN_ZEROGPU_MAX_SECONDS", "300"))

# plain bf16 seconds per denoising step at the model's default size (bench/RESULTS.md, one H100: ltx, wan-1.3b,
# cogvideox-5b measured; the others scaled from those by transformer size and tokens); x1.5 headroom for other cards
SECONDS_PER_STEP = {"ltx": 0.19, "wan-1.3b": 1.29, "cogvideox-5b": 1.83, "cogvideox-2b": 0.9, "wan-14b": 9.0,
                    "hunyuan": 12.0, "hunyuan-1.5": 6.0}
UNKNOWN_STEP_SECONDS = 2.0
DECODE_AND_COMPOSE_SECONDS = 25
# generated tokens per second of a transformers LLM in a slot (4-bit 70B-class models are the slow ones)
TOKENS_PER_SECOND = {"llama-3.3-70b": 8.0, "qwen2.5-72b": 8.0}
DEFAULT_TOKENS_PER_SECOND = 30.0
DEFAULT_PLAN_TOKENS = 700


def _spaces():
    try:
        import spaces
    except ImportError:
        return None
    return spaces


def active() -> bool:
    """True on ZeroGPU hardware (asks the `spaces` package's configuration, never CUDA)."""
    spaces = _spaces()
    if spaces is None:
        return False
    try:
        return bool(spaces.config.Config.zero_gpu)
    except AttributeError:
        return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu(duration: int | Callable[..., int]) -> Callable:
    """spaces.GPU(duration=...) where `spaces` can be imported (effect-free off ZeroGPU); else the identity."""
    spaces = _spaces()
    if spaces is None:
        return lambda fn: fn
    return spaces.GPU(duration=duration)


def needs_gpu(backend: Any) -> bool:
    """Does this LLM or video backend run on a GPU (so on ZeroGPU it must run inside a slot)?

    A backend may say so itself (`needs_gpu` attribute); otherwise the torch-based kinds do: transformers LLMs and
    diffusers video models."""
    flag = getattr(backend, "needs_gpu", None)
    if flag is not None:
        return bool(flag)
    from popcorn.llm.hf_transformers import TransformersLLM
    from popcorn.video.diffusers_base import DiffusersGenerator

    return isinstance(backend, (TransformersLLM, DiffusersGenerator))


# ------------------------------------------------------------------------------------------------------------ durations


def _clamp(seconds: float) -> int:
    return int(max(MIN_SECONDS, min(MAX_SECONDS, round(seconds))))


def plan_seconds(llm: str, candidates: int = 1, max_tokens: int = 0, attempts: int = 3) -> int:
    """A plan slot: every candidate may be drawn `attempts` times (pipeline.Settings.attempts: a cut-off or unusable
    answer is drawn again), at the model's token rate, plus 10 s. max_tokens 0 means the plan's own bound (about
    DEFAULT_PLAN_TOKENS)."""
    rate = TOKENS_PER_SECOND.get(str(llm).partition(":")[0], DEFAULT_TOKENS_PER_SECOND)
    tries = max(1, int(candidates)) * max(1, int(attempts))
    return _clamp(10 + tries * (int(max_tokens) or DEFAULT_PLAN_TOKENS) / rate)


def render_seconds(video: str, steps: int | None = None, memory_mode: str = "auto") -> int:
    """A render slot: steps x seconds per step (x1.5 headroom; x3 when offloading) + decode and compose."""
    name = str(video).partition(":")[0]
    if steps is None:
        try:
            from popcorn.video import get_generator

            steps = getattr(getattr(get_generator(name), "spec", None), "steps", None)
        except Exception:  # an unknown name fails later with its own message; the slot just gets the default
            steps = None
    per_step = SECONDS_PER_STEP.get(name, UNKNOWN_STEP_SECONDS) * 1.5
    if memory_mode in ("model_offload", "sequential_offload"):
        per_step *= 3
    return _clamp(int(steps or 50) * per_step + DECODE_AND_COMPOSE_SECONDS)


# ------------------------------------------------------------------------------------------------------------ preload


def preload(llms: list[str], videos: list[str]) -> list[str]:
    """Load the weights of the given GPU backends now (start-up on ZeroGPU); returns what was loaded.

    ZeroGPU expects weights loaded (and moved to "cuda") in the main process at start-up: it maps them into each
    GPU worker. Backends that do not need a GPU, or that cannot run here, are skipped with a log line."""
    from popcorn.serve import resident
    from popcorn.llm import get_llm
    from popcorn.video import get_generator

    # ZeroGPU maps every preloaded model into each worker: they must all stay, not evict each other (popcorn/resident)
    resident.set_limit(0)
    loaded = []
    for kind, names, get in (("llm", llms, get_llm), ("video", videos, get_generator)):
        for name in names:
            try:
                backend = get(name)
                if not needs_gpu(backend):
                    continue
                if kind == "llm":
                    backend.load()
                else:
                    backend.pipeline("gpu")
                loaded.append(name)
            except Exception as exc:  # a backend that cannot load is reported when chosen, with why
                log.warning("preload of %s %s failed: %s", kind, name, exc)
    return loaded


# ------------------------------------------------------------------------------------------------------------ channel


class Channel:
    """A folder both sides of a slot can reach: a cancel flag (a file) and a progress log (JSON lines).

    Picklable (it is a path), so it travels to a GPU worker as an argument. `set()`/`is_set()` make it usable wherever
    a threading.Event was (the studio's Cancel)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else Path(tempfile.mkdtemp(prefix="popcorn-slot-"))
        self._read = 0

    def __reduce__(self):
        return (Channel, (str(self.path),))

    def set(self) -> None:
        (self.path / "cancel").touch()

    def is_set(self) -> bool:
        return (self.path / "cancel").exists()

    def report(self, stage: str, fraction: float, message: str) -> None:
        with open(self.path / "progress.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps([stage, float(fraction), str(message)]) + "\n")

    def read_new(self) -> list[tuple[str, float, str]]:
        """Progress lines written since the last call (complete lines only)."""
        try:
            with open(self.path / "progress.jsonl", "rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1
        self._read += end
        return [tuple(json.loads(line)) for line in data[:end].splitlines() if line.strip()]

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def call(fn: Callable, *args, channel: Channel, progress: Callable[[str, float, str], None] | None = None,
         poll_s: float = 0.25):
    """fn(*args) (a GPU slot, perhaps in another process) while this thread relays the channel's progress to
    `progress(stage, fraction, message)`; returns fn's result or raises its exception here."""
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # the caller's request context: spaces.GPU bills the visitor who asked

    def target():
        try:
            box["result"] = context.run(fn, *args)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="popcorn-gpu-slot", daemon=True)
    thread.start()
    while True:
        thread.join(poll_s)
        for stage, fraction, message in channel.read_new():
            if progress is not None:
                progress(stage, fraction, message)
        if not thread.is_alive():
            break
    if "error" in box:
        raise box["error"]
    return box.get("result")
