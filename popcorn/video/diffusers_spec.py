"""What a diffusers text-to-video model is, and a request snapped onto what it accepts.

A `DiffusersSpec` says, explicitly: hub id and pipeline class, its native sizes, its frame-count rule (8k+1 for LTX,
4k+1 for the others), fps, and how much GPU memory it needs (measured: bench/RESULTS.md). The recipe (steps,
guidance, scheduler) is the pipeline's own: defaults come from the pipeline's `__call__` signature and its scheduler
config; a spec keeps only deliberate overrides, each with its reason, and an override the pipeline does not take is
refused when the model loads (`check_recipe`). `snap_request` maps a request onto the model's sizes, frame counts
and fps (portrait 9:16 where the model can; says so where it cannot); a clip length in seconds becomes a valid frame
count.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field, replace
from typing import Any

from popcorn.types import StageError
from popcorn.video.base import RenderRequest, default_seconds


@dataclass(frozen=True)
class FrameRule:
    """Frame counts the model accepts: multiple * k + 1, between minimum and maximum."""

    multiple: int
    default: int  # the model's own default length (its model card / pipeline); requests default to seconds instead
    minimum: int
    maximum: int

    def snap(self, frames: int) -> int:
        k = round((frames - 1) / self.multiple)
        snapped = k * self.multiple + 1
        return int(min(self.maximum, max(self.minimum, snapped)))

    def describe(self) -> str:
        if self.minimum == self.maximum:
            return f"{self.minimum} frames only"
        return f"{self.multiple}k+1 frames, {self.minimum}..{self.maximum}"


@dataclass(frozen=True)
class DiffusersSpec:
    name: str  # registry name, e.g. "ltx"
    label: str  # for people, e.g. "LTX-Video 0.9 (2B)"
    hub_id: str
    pipeline_class: str  # a class name in the diffusers package
    sizes: tuple[tuple[int, int], ...]  # native (width, height); the first is the default (portrait where possible)
    frames: FrameRule
    fps: int
    free_sizes: bool = False  # True: any size divisible by size_multiple, up to max_pixels, is native
    size_multiple: int = 16
    max_pixels: int = 720 * 1280
    size_note: str = ""  # said when the requested shape is not available, e.g. "720x480 only; not portrait"
    dtype: str = "bfloat16"
    component_dtypes: dict[str, tuple[str, str]] = field(default_factory=dict)  # component -> (dtype, why)
    frame_rate_arg: str | None = None  # the __call__ argument that takes fps, when the model is fps-conditioned
    steps: int | None = None  # num_inference_steps override; None: the pipeline's own default
    overrides: dict[str, tuple[Any, str]] = field(default_factory=dict)  # __call__ argument -> (value, why)
    scheduler_by_size: tuple[tuple[int, dict, str], ...] = ()  # (from this many pixels, scheduler config, why)
    default_negative_prompt: str = ""  # the model card's / demo's negative prompt, when it has one
    gpu_gib: float = 24.0  # memory PyTorch must be able to use for everything resident in bf16, at the default size
    offload_gib: float = 12.0  # the same for model CPU offload; below it, sequential offload
    decode_gib: float = 8.0  # what an untiled VAE decode adds at the default size and length (scales with pixels)

    @property
    def env_var(self) -> str:
        return "POPCORN_VIDEO_" + "".join(c if c.isalnum() else "_" for c in self.name.upper()) + "_PATH"


# ------------------------------------------------------------------------------------------------------- recipe


@functools.lru_cache(maxsize=None)
def pipeline_signature(pipeline_class: str) -> tuple[frozenset[str], dict[str, Any]]:
    """(the argument names of the pipeline's __call__, the defaults it gives them)."""
    import diffusers  # heavy (torch), and optional: only a diffusers model needs it

    parameters = inspect.signature(getattr(diffusers, pipeline_class).__call__).parameters
    names = frozenset(n for n in parameters if n != "self")
    defaults = {n: p.default for n, p in parameters.items() if n != "self" and p.default is not inspect.Parameter.empty}
    return names, defaults


def check_recipe(spec: DiffusersSpec) -> None:
    """Refuse a spec whose overrides the pipeline does not take (they would be dropped or fail deep in the call)."""
    names, _ = pipeline_signature(spec.pipeline_class)
    asked = set(spec.overrides) | ({spec.frame_rate_arg} if spec.frame_rate_arg else set())
    unknown = sorted(asked - names)
    if unknown:
        raise StageError("render", f"{spec.label}: {spec.pipeline_class} takes no argument {', '.join(unknown)}",
                         f"fix the adapter's overrides in popcorn/video/ for {spec.name} (the installed diffusers "
                         "may have renamed them)")


def default_steps(spec: DiffusersSpec) -> int | None:
    """The spec's override, else the pipeline's default num_inference_steps (None if diffusers is not installed)."""
    if spec.steps:
        return spec.steps
    try:
        return pipeline_signature(spec.pipeline_class)[1].get("num_inference_steps")
    except (ImportError, AttributeError):
        return None


# ------------------------------------------------------------------------------------------------------- snap


def frames_for(spec: DiffusersSpec, seconds: float | None = None) -> int:
    """The valid frame count nearest to `seconds` (default: the configured clip length) at the model's fps."""
    return spec.frames.snap(round((seconds or default_seconds()) * spec.fps) + 1)


def snap_request(spec: DiffusersSpec, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
    """`req` on the model's sizes, frame counts, fps and steps, with a note for each change a user would notice."""
    notes: list[str] = []
    width, height = snap_size(spec, req.width, req.height, notes)
    if req.num_frames:
        frames = spec.frames.snap(req.num_frames)
        if frames != req.num_frames:
            notes.append(f"{spec.label}: {req.num_frames} frames -> {frames} ({spec.frames.describe()})")
    else:
        seconds = req.seconds or default_seconds()
        frames = frames_for(spec, seconds)
        if abs(frames - 1 - seconds * spec.fps) > spec.frames.multiple:  # further than the frame rule's step
            notes.append(f"{spec.label}: {seconds:g} s -> {frames} frames = {frames / spec.fps:.1f} s at "
                         f"{spec.fps} fps ({spec.frames.describe()})")
    fps = spec.fps
    if req.fps and req.fps != fps:
        notes.append(f"{spec.label} renders at {spec.fps} fps; {req.fps} fps was asked for")
    steps = req.steps if req.steps is not None else default_steps(spec)
    if steps is not None and int(steps) < 1:
        steps = default_steps(spec)
        notes.append(f"steps must be >= 1; using {steps}")
    return replace(req, width=width, height=height, num_frames=frames, seconds=round(frames / fps, 3), fps=fps,
                   steps=int(steps) if steps is not None else None), notes


def _aspect_distance(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs(math.log(a[0] / a[1]) - math.log(b[0] / b[1]))


def snap_size(spec: DiffusersSpec, width: int | None, height: int | None, notes: list[str]) -> tuple[int, int]:
    """The native size nearest to the asked one (same shape first, then the nearest pixel count)."""
    default_w, default_h = spec.sizes[0]
    if width is None and height is None:
        return default_w, default_h
    # one side given: keep the default shape's aspect ratio
    want_w = width or round(height * default_w / default_h)
    want_h = height or round(width * default_h / default_w)
    if spec.free_sizes:
        m = spec.size_multiple
        scale = min(1.0, math.sqrt(spec.max_pixels / float(want_w * want_h)))
        snap = round if scale >= 1 else math.floor  # never round back over the pixel budget
        w = max(m, int(snap(want_w * scale / m)) * m)
        h = max(m, int(snap(want_h * scale / m)) * m)
        if (w, h) != (want_w, want_h):
            why = f"multiples of {m}" + (f", at most {spec.max_pixels} pixels" if scale < 1 else "")
            notes.append(f"{spec.label}: size {want_w}x{want_h} -> {w}x{h} ({why})")
        return w, h
    want = (want_w, want_h)
    closest = min(_aspect_distance(s, want) for s in spec.sizes)
    same_shape = [s for s in spec.sizes if _aspect_distance(s, want) <= closest + 0.05]
    best = min(same_shape, key=lambda s: abs(s[0] * s[1] - want_w * want_h))
    if best != want:
        sizes = ", ".join(f"{w}x{h}" for w, h in spec.sizes)
        if closest > 0.05:
            notes.append(f"{spec.label} renders {sizes} only" + (f"; {spec.size_note}" if spec.size_note else "")
                         + f": {want_w}x{want_h} -> {best[0]}x{best[1]}")
        else:
            notes.append(f"{spec.label}: size {want_w}x{want_h} -> {best[0]}x{best[1]} (native sizes: {sizes})")
    return best


# ------------------------------------------------------------------------------------------------- the call


def call_arguments(spec: DiffusersSpec, req: RenderRequest) -> dict[str, Any]:
    """The arguments for pipe(...) besides generator and callback: the request, and the spec's overrides; every
    other argument keeps the pipeline's own default."""
    kwargs: dict[str, Any] = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt or spec.default_negative_prompt or None,
        "width": req.width,
        "height": req.height,
        "num_frames": req.num_frames,
        "output_type": "np",
    }
    if req.steps:
        kwargs["num_inference_steps"] = req.steps
    if spec.frame_rate_arg:
        kwargs[spec.frame_rate_arg] = req.fps
    kwargs.update({name: value for name, (value, _why) in spec.overrides.items()})
    return kwargs


def scheduler_for_size(spec: DiffusersSpec, req: RenderRequest, scheduler_class: str, loaded_config: dict
                       ) -> tuple[dict, list[str]]:
    """The spec's size-dependent scheduler settings for `req` (e.g. Wan's flow shift at 720p) that the loaded
    scheduler has (another scheduler class than the recipe's would drop the others silently: said in a note)."""
    changes, why, notes = {}, "", []
    for min_pixels, settings, reason in sorted(spec.scheduler_by_size, key=lambda entry: entry[0]):
        if req.width * req.height >= min_pixels:
            changes, why = dict(settings), reason
    unknown = sorted(key for key in changes if key not in loaded_config)
    if unknown:
        notes.append(f"{scheduler_class} has no {', '.join(unknown)}: kept its own settings")
        changes = {k: v for k, v in changes.items() if k not in unknown}
    if changes:
        notes.append(f"scheduler {', '.join(f'{k}={v}' for k, v in changes.items())} ({why})")
    return changes, notes
