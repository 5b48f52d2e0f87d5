"""The shared adapter for diffusers text-to-video pipelines: one `DiffusersSpec` per model, one class that runs it.

A spec says, explicitly, what the model is: hub id and pipeline class, its native sizes, its frame-count rule
(8k+1 for LTX, 4k+1 for the others), fps, default steps and guidance, and roughly how much GPU memory it needs.
`DiffusersGenerator(spec)` then:

1. snaps a request onto the model's sizes / frame counts / fps (portrait 9:16 where the model can; says so where
   it cannot),
2. finds the weights: env POPCORN_VIDEO_<NAME>_PATH (a local diffusers folder), else
   <cache_dir>/models/video/<name>/, else the hub (`from_pretrained(hub_id)`, also from the local HF cache offline),
3. picks a memory mode from free GPU memory (all on GPU in bf16 / model CPU offload / sequential offload, with VAE
   tiling + slicing when offloading), unless the request names one,
4. loads the pipeline once and keeps it, turns the seed into a torch.Generator, and runs it, reporting each step;
5. on the GPU, runs it on the fast path (popcorn/video/speed.py: exact, compiled on the first render) unless the
   request says speed="plain".
"""

from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from popcorn import config
from popcorn.types import StageError
from popcorn.video.base import Clip, Progress, RenderRequest, check_memory_mode, check_speed, clean_prompt

GIB = 1024**3


@dataclass(frozen=True)
class FrameRule:
    """Frame counts the model accepts: multiple * k + 1, between minimum and maximum."""

    multiple: int
    default: int
    minimum: int
    maximum: int

    def snap(self, frames: int) -> int:
        k = round((frames - 1) / self.multiple)
        snapped = k * self.multiple + 1
        return int(min(self.maximum, max(self.minimum, snapped)))

    def describe(self) -> str:
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
    steps: int
    guidance: float | None = None  # passed as guidance_scale; None leaves the pipeline's own (e.g. a guider)
    free_sizes: bool = False  # True: any size divisible by size_multiple, up to max_pixels, is native
    size_multiple: int = 16
    max_pixels: int = 720 * 1280
    size_note: str = ""  # said when the requested shape is not available, e.g. "720x480 only; not portrait"
    dtype: str = "bfloat16"
    frame_rate_arg: str | None = None  # the __call__ argument that takes fps, when the model is fps-conditioned
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    default_negative_prompt: str = ""
    gpu_gib: float = 24.0  # free GPU memory for everything resident in bf16, at the default size
    offload_gib: float = 12.0  # free GPU memory for model CPU offload; below it, sequential offload

    @property
    def env_var(self) -> str:
        return "POPCORN_VIDEO_" + "".join(c if c.isalnum() else "_" for c in self.name.upper()) + "_PATH"


def local_models_dir() -> Path:
    return config.cache_dir() / "models" / "video"


def _aspect_distance(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs(math.log(a[0] / a[1]) - math.log(b[0] / b[1]))


class DiffusersGenerator:
    """Runs one diffusers text-to-video pipeline described by a DiffusersSpec."""

    def __init__(self, spec: DiffusersSpec):
        self.spec = spec
        self.name = spec.name
        self.description = f"{spec.label} ({spec.pipeline_class}, {spec.hub_id})"
        self._pipe = None
        self._pipe_key: tuple[str, str, bool] | None = None  # (weights source, placement, fast) of the loaded pipeline
        self._fast = None  # the FastPath applied to the loaded pipeline, if any
        self._fast_failed = ""  # why the fast path could not run here (then renders stay plain)

    # ----------------------------------------------------------------------------------------------- where/what

    def weights_source(self) -> tuple[str, str]:
        """(path or hub id, "env" | "local" | "hub") without touching the network."""
        explicit = os.environ.get(self.spec.env_var, "").strip()
        if explicit:
            return str(Path(explicit).expanduser()), "env"
        local = local_models_dir() / self.spec.name
        if (local / "model_index.json").exists():
            return str(local), "local"
        return self.spec.hub_id, "hub"

    def _hub_cached(self) -> bool:
        try:
            from huggingface_hub import try_to_load_from_cache

            return isinstance(try_to_load_from_cache(self.spec.hub_id, "model_index.json"), str)
        except Exception:
            return False

    def available(self) -> tuple[bool, str]:
        source, where = self.weights_source()
        if where == "env" and not (Path(source) / "model_index.json").exists():
            return False, f"{self.spec.env_var}={source} is not a diffusers folder (no model_index.json)"
        if where == "hub" and config.offline() and not self._hub_cached():
            return False, (f"offline and {self.spec.hub_id} is not in the HF cache: set {self.spec.env_var} to a "
                           f"local diffusers folder or put one at {local_models_dir() / self.spec.name}")
        try:
            import torch
        except ImportError:
            return False, "torch is not installed"
        if not torch.cuda.is_available():
            return False, f"no CUDA GPU here; {self.spec.label} needs about {self.spec.offload_gib:.0f} GiB of GPU memory"
        free, _ = torch.cuda.mem_get_info()
        if free < 4 * GIB:
            return False, f"only {free / GIB:.1f} GiB of GPU memory free"
        return True, f"weights from {where}: {source}"

    # ----------------------------------------------------------------------------------------------------- snap

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        spec = self.spec
        notes: list[str] = []
        width, height = self._snap_size(req.width, req.height, notes)
        frames = spec.frames.snap(req.num_frames or spec.frames.default)
        if req.num_frames and frames != req.num_frames:
            notes.append(f"{spec.label}: {req.num_frames} frames -> {frames} ({spec.frames.describe()})")
        fps = spec.fps
        if req.fps and req.fps != fps:
            notes.append(f"{spec.label} renders at {spec.fps} fps; {req.fps} fps was asked for")
        steps = int(req.steps or spec.steps)
        if steps < 1:
            steps = spec.steps
            notes.append(f"steps must be >= 1; using {spec.steps}")
        return replace(req, width=width, height=height, num_frames=frames, fps=fps, steps=steps), notes

    def _snap_size(self, width: int | None, height: int | None, notes: list[str]) -> tuple[int, int]:
        spec = self.spec
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

    # ---------------------------------------------------------------------------------------------- memory/load

    def choose_memory_mode(self, requested: str) -> tuple[str, list[str]]:
        """'cpu' when there is no GPU; otherwise the requested mode, or for 'auto' the fastest that fits."""
        import torch

        requested = check_memory_mode(requested)
        if not torch.cuda.is_available():
            return "cpu", ["no CUDA GPU: running on the CPU in float32 (only practical for tiny test pipelines)"]
        if requested != "auto":
            return requested, [f"memory mode {requested} (asked for)"]
        free, total = torch.cuda.mem_get_info()
        free_gib = free / GIB
        if free_gib >= self.spec.gpu_gib:
            mode = "gpu"
        elif free_gib >= self.spec.offload_gib:
            mode = "model_offload"
        else:
            mode = "sequential_offload"
        return mode, [f"memory mode {mode} (auto: {free_gib:.0f} GiB free of {total / GIB:.0f}; all-on-GPU wants "
                      f"~{self.spec.gpu_gib:.0f}, model offload ~{self.spec.offload_gib:.0f})"]

    def choose_speed(self, requested: str, mode: str) -> tuple[bool, list[str]]:
        """Whether to run on the fast path: 'auto' takes it when the whole model is on the GPU."""
        requested = check_speed(requested)
        if requested != "plain" and self._fast_failed:
            return False, [f"plain path: the fast path failed here before ({self._fast_failed})"]
        if requested == "auto":
            return mode == "gpu", []
        if requested == "fast" and mode not in ("gpu", "cpu"):
            return False, [f"speed fast ignored under {mode} (compiled blocks and offload hooks do not mix)"]
        return requested == "fast", []

    def pipeline(self, mode: str, progress: Progress | None = None, fast: bool = False):
        """The loaded pipeline placed for `mode` (and on the fast path if asked); loaded once and kept, reloaded only
        if the placement or the path changes."""
        import torch

        source, where = self.weights_source()
        key = (source, mode, fast)
        if self._pipe is not None and self._pipe_key == key:
            return self._pipe
        self._pipe = self._fast = None  # offload hooks and compiled blocks cannot be undone cleanly: load afresh
        if progress is not None:
            progress(0.0, f"loading {self.spec.label} from {where} ({source})")
        import diffusers

        pipeline_class = getattr(diffusers, self.spec.pipeline_class)
        dtype = getattr(torch, self.spec.dtype) if mode != "cpu" else torch.float32
        try:
            pipe = pipeline_class.from_pretrained(source, torch_dtype=dtype)
        except Exception as exc:
            hint = (f"set {self.spec.env_var} to a local diffusers folder of {self.spec.hub_id}, or go online so it "
                    f"can be downloaded; `python -m popcorn videos` shows what can run here")
            raise StageError("render", f"could not load {self.spec.label} from {source} "
                                       f"({type(exc).__name__}: {str(exc)[:300]})", hint) from exc
        self._place(pipe, mode)
        pipe.set_progress_bar_config(disable=True)
        if fast:
            from popcorn.video.speed import make_fast

            if progress is not None:
                progress(0.0, f"{self.spec.label}: fast path (the first render compiles the transformer blocks)")
            self._fast = make_fast(pipe)
        self._pipe, self._pipe_key = pipe, key
        return pipe

    @staticmethod
    def _place(pipe, mode: str) -> None:
        if mode == "gpu":
            pipe.to("cuda")
        elif mode == "model_offload":
            pipe.enable_model_cpu_offload()
        elif mode == "sequential_offload":
            pipe.enable_sequential_cpu_offload()
        if mode in ("model_offload", "sequential_offload"):
            vae = getattr(pipe, "vae", None)
            for method in ("enable_tiling", "enable_slicing"):
                if hasattr(vae, method):
                    getattr(vae, method)()

    # --------------------------------------------------------------------------------------------------- render

    def call_kwargs(self, req: RenderRequest) -> dict[str, Any]:
        """The arguments for pipe(...) besides generator and callback."""
        spec = self.spec
        kwargs: dict[str, Any] = {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt or spec.default_negative_prompt or None,
            "width": req.width,
            "height": req.height,
            "num_frames": req.num_frames,
            "num_inference_steps": req.steps,
            "output_type": "np",
        }
        if spec.guidance is not None:
            kwargs["guidance_scale"] = spec.guidance
        if spec.frame_rate_arg:
            kwargs[spec.frame_rate_arg] = req.fps
        kwargs.update(spec.call_kwargs)
        return kwargs

    def _call(self, pipe, kwargs: dict, seed: int, notes: list[str]):
        """pipe(**kwargs), on the fast path when it is on. If the fast path's first call (the one that compiles)
        fails for a reason of its own, the pipeline goes back to plain, says why, and runs again with the same seed."""
        import torch

        if self._fast is None:
            with torch.inference_mode():
                return pipe(**kwargs)
        try:
            with torch.inference_mode(), self._fast.context():
                return pipe(**kwargs)
        except (torch.OutOfMemoryError, StageError):  # out of memory, or a stage error such as Cancel: not ours
            raise
        except Exception as exc:
            if self._fast.compiled:
                raise
            from popcorn.video.speed import undo_fast

            undo_fast(pipe)
            self._fast = None
            self._pipe_key = (self._pipe_key[0], self._pipe_key[1], False)
            self._fast_failed = f"{type(exc).__name__}: {str(exc)[:160]}"
            notes.append(f"fast path failed ({self._fast_failed}); rendered on the plain path")
            kwargs["generator"] = torch.Generator(device="cpu").manual_seed(seed)
            with torch.inference_mode():
                return pipe(**kwargs)

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip:
        import torch

        started = time.perf_counter()
        prompt, notes = clean_prompt(req.prompt)
        req, snap_notes = self.snap(replace(req, prompt=prompt))
        mode, mode_notes = self.choose_memory_mode(req.memory_mode)
        fast, speed_notes = self.choose_speed(req.speed, mode)
        notes = snap_notes + notes + mode_notes + speed_notes
        pipe = self.pipeline(mode, progress, fast=fast)

        kwargs = self.call_kwargs(req)
        # a CPU generator gives the same starting noise on any device and under offloading
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(int(req.seed))
        steps = req.steps
        if progress is not None and "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

            def on_step_end(_pipe, i, _t, callback_kwargs):
                progress((i + 1) / steps, f"{self.spec.label}: denoising step {i + 1}/{steps}")
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            output = self._call(pipe, kwargs, int(req.seed), notes)
        except torch.OutOfMemoryError as exc:
            free = torch.cuda.mem_get_info()[0] / GIB if torch.cuda.is_available() else 0.0
            raise StageError(
                "render",
                f"{self.spec.label} ran out of GPU memory at {req.width}x{req.height}, {req.num_frames} frames "
                f"(memory mode {mode}, {free:.1f} GiB free now)",
                "try --memory-mode model_offload or sequential_offload, fewer frames "
                f"(e.g. {self.spec.frames.snap(self.spec.frames.default // 2)}), a smaller size, or --video storyboard",
            ) from exc
        frames = to_uint8_frames(output.frames[0])
        if progress is not None:
            progress(1.0, f"{self.spec.label}: decoded {frames.shape[0]} frames")
        settings = {
            "model": self.spec.label,
            "hub_id": self.spec.hub_id,
            "pipeline_class": self.spec.pipeline_class,
            "weights": self.weights_source()[0],
            "width": int(frames.shape[2]),
            "height": int(frames.shape[1]),
            "num_frames": int(frames.shape[0]),
            "fps": req.fps,
            "steps": req.steps,
            "guidance_scale": self.spec.guidance,
            "seed": int(req.seed),
            "memory_mode": mode,
            "speed": self._fast.to_dict() if self._fast is not None else "plain",
            "dtype": str(pipe.dtype).replace("torch.", "") if hasattr(pipe, "dtype") else self.spec.dtype,
            "prompt": req.prompt,
            "negative_prompt": kwargs.get("negative_prompt") or "",
            "seconds_to_render": round(time.perf_counter() - started, 3),
        }
        if torch.cuda.is_available():
            settings["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        return Clip(frames=frames, fps=req.fps, width=settings["width"], height=settings["height"],
                    generator=self.name, is_preview=False, notes=notes, settings=settings)


def to_uint8_frames(video: Any) -> np.ndarray:
    """A pipeline's video (np float in [0, 1], (T, H, W, 3); or a list of PIL images) as (T, H, W, 3) uint8."""
    if isinstance(video, list):
        return np.stack([np.asarray(im.convert("RGB")) for im in video]).astype(np.uint8)
    array = np.asarray(video)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
