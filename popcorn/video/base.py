"""g: the text-to-video protocol and the registry of generators.

A generator is any object with `name`, `description`, `available()`, `snap()` and `render()`. Each one is registered
with a factory:

    register("ltx", lambda: DiffusersGenerator(LTX), "LTX-Video 0.9 (2B, Lightricks)")

`get_generator("ltx")` builds it once and keeps it (so a loaded diffusers pipeline stays loaded); the registry is
popcorn/registry.py's, shared with the LLMs. Factories must be
cheap: no weights are read and no network call is made before the first `render()`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from popcorn.registry import Registry
from popcorn.types import StageError

Progress = Callable[[float, str], None]

MAX_PROMPT_CHARS = 2000  # longer prompts are cut at a sentence/word boundary (every text encoder truncates anyway)
DEFAULT_SECONDS = 3.0  # a micro-video: the plan's video prompt describes "about three seconds" (prompts/system.txt)


def default_seconds() -> float:
    """The clip length when a request names none: POPCORN_CLIP_SECONDS, else DEFAULT_SECONDS."""
    raw = os.environ.get("POPCORN_CLIP_SECONDS", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        raise StageError("render", f"POPCORN_CLIP_SECONDS={raw!r} is not a number of seconds",
                         "set it to e.g. 3 or 5.5, or unset it") from None
    if not 0 < value <= 60:
        raise StageError("render", f"POPCORN_CLIP_SECONDS={raw!r} is out of range", "use a length in (0, 60] seconds")
    return value


@dataclass
class RenderRequest:
    """What the caller wants; None means "the model's default"."""

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None  # wins over seconds when given
    seconds: float | None = None  # clip length, mapped to the nearest valid frame count (None: default_seconds())
    fps: int | None = None
    steps: int | None = None
    seed: int = 0
    memory_mode: str = "auto"  # "auto" | "gpu" | "model_offload" | "sequential_offload"
    speed: str = "auto"  # "auto" (fast when everything is on the GPU) | "fast" | "plain": see popcorn/video/speed.py

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "seconds": self.seconds,
            "fps": self.fps,
            "steps": self.steps,
            "seed": self.seed,
            "memory_mode": self.memory_mode,
            "speed": self.speed,
        }


@dataclass
class Clip:
    """g's output: frames (T, H, W, 3) uint8 and what was actually used to make them."""

    frames: np.ndarray
    fps: int
    width: int
    height: int
    generator: str
    is_preview: bool = False  # True for the storyboard: never a model render
    notes: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def seconds(self) -> float:
        return self.num_frames / float(self.fps)

    def to_dict(self) -> dict[str, Any]:
        """Everything except the pixels (for run.json / video.json)."""
        return {
            "generator": self.generator,
            "is_preview": self.is_preview,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
            "settings": dict(self.settings),
        }


@runtime_checkable
class VideoGenerator(Protocol):
    name: str
    description: str

    def available(self) -> tuple[bool, str]:
        """(ok, why not): cheap: no weights loaded, no network call."""
        ...

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        """The request moved onto the model's native sizes / frame counts / fps, and notes saying what changed."""
        ...

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip: ...


# ----------------------------------------------------------------------------------------------- request checks


def clean_prompt(prompt: str, limit: int = MAX_PROMPT_CHARS) -> tuple[str, list[str]]:
    """Strip the prompt, refuse an empty one, cut a very long one at a sentence or word boundary."""
    text = " ".join((prompt or "").split())
    if not text:
        raise StageError(
            "render",
            "the video prompt is empty",
            "give the plan a video_prompt (one or two sentences describing the ~3 s scene)",
        )
    if len(text) <= limit:
        return text, []
    cut = text[:limit]
    for mark in (". ", "! ", "? ", "。", "！", "？"):
        pos = cut.rfind(mark)
        if pos > limit * 0.6:
            cut = cut[: pos + len(mark)]
            break
    else:
        pos = cut.rfind(" ")
        if pos > limit * 0.6:
            cut = cut[:pos]
    cut = cut.strip()
    return cut, [f"prompt cut from {len(text)} to {len(cut)} characters (the text encoder reads only the start)"]


def check_memory_mode(mode: str) -> str:
    mode = (mode or "auto").strip().lower()
    if mode not in MEMORY_MODES:
        raise StageError("render", f"unknown memory mode {mode!r}", "use one of: " + ", ".join(MEMORY_MODES))
    return mode


MEMORY_MODES = ("auto", "gpu", "model_offload", "sequential_offload")
SPEEDS = ("auto", "fast", "plain")  # see popcorn/video/speed.py


def check_speed(speed: str) -> str:
    speed = (speed or "auto").strip().lower()
    if speed not in SPEEDS:
        raise StageError("render", f"unknown speed {speed!r}", "use one of: " + ", ".join(SPEEDS))
    return speed


# ----------------------------------------------------------------------------------------------------- registry


GENERATORS: Registry[VideoGenerator] = Registry(
    "video generator", stage="render",
    hint=lambda names: "use one of: " + ", ".join(names) + " (`python -m popcorn videos` lists them with what each "
    "needs)")


def register(name: str, factory: Callable[[], VideoGenerator], description: str = "") -> None:
    """Make a generator reachable as get_generator(name). Registering a name again replaces it."""
    GENERATORS.register(name, factory, description)


def registered() -> list[str]:
    return GENERATORS.registered()


def get_generator(name: str) -> VideoGenerator:
    """The generator called `name`, built once per process. Unknown names raise StageError('render', ...)."""
    return GENERATORS.get(name)


def list_generators() -> list[dict]:
    """[{"name", "description", "available", "reason"}] for every registered generator, in registration order."""
    return GENERATORS.rows()
