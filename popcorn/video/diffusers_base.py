"""The shared adapter for diffusers text-to-video pipelines: one `DiffusersSpec` per model, one class that runs it.

A spec says, explicitly, what the model is: hub id and pipeline class, its native sizes, its frame-count rule
(8k+1 for LTX, 4k+1 for the others), fps, and how much GPU memory it needs (measured: bench/RESULTS.md). The recipe
(steps, guidance, scheduler) is the pipeline's own: defaults come from the pipeline's `__call__` signature and its
scheduler config; a spec keeps only deliberate overrides, each with its reason, and an override the pipeline does not
take is refused when the model loads. `DiffusersGenerator(spec)` then:

1. snaps a request onto the model's sizes / frame counts / fps (portrait 9:16 where the model can; says so where it
   cannot); the clip length is a number of seconds (default about 3 s, a micro-video) mapped to a valid frame count,
2. finds the weights: env POPCORN_VIDEO_<NAME>_PATH (a local diffusers folder), else
   <cache_dir>/models/video/<name>/, else the hub (`from_pretrained(hub_id)`, also from the local HF cache offline),
3. before loading, releases every other resident model (popcorn/serve/resident.py: other video pipelines, the cover model,
   a GPU LLM) and empties the allocator's cache; picks the memory mode once per load (all on GPU in bf16 / model CPU
   offload / sequential offload) from the memory PyTorch can use plus what this generator itself holds, unless the
   request names one; later renders keep it, so the pipeline is not reloaded or recompiled back and forth,
4. tiles the VAE decode wherever the untiled decode would not fit (always when offloading),
5. turns the seed into a torch.Generator and runs the pipeline, reporting each denoising step (through
   callback_on_step_end, or by wrapping the scheduler's step where the pipeline has no callback); a progress callback
   that raises (Cancel) stops the render there,
6. on the GPU, runs it on the fast path (popcorn/video/speed.py: exact, compiled on the first render, the compiled
   artifacts kept in the Popcorn cache across restarts) unless the request says speed="plain".
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from popcorn import config
from popcorn.serve import resident
from popcorn.types import StageError
from popcorn.video import parallel
from popcorn.video.base import (
    DEFAULT_SECONDS,
    Clip,
    Progress,
    RenderRequest,
    check_memory_mode,
    check_speed,
    clean_prompt,
    default_seconds,
)

GIB = 1024**3


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


def local_models_dir() -> Path:
    return config.cache_dir() / "models" / "video"


def _aspect_distance(a: tuple[int, int], b: tuple[int, int]) -> float:
    return abs(math.log(a[0] / a[1]) - math.log(b[0] / b[1]))


# ------------------------------------------------------------------------------------------------------- recipe


@functools.lru_cache(maxsize=None)
def pipeline_signature(pipeline_class: str) -> tuple[frozenset[str], dict[str, Any]]:
    """(the argument names of the pipeline's __call__, the defaults it gives them)."""
    import diffusers

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


class DiffusersGenerator:
    """Runs one diffusers text-to-video pipeline described by a DiffusersSpec."""

    def __init__(self, spec: DiffusersSpec):
        self.spec = spec
        self.name = spec.name
        self.description = f"{spec.label} ({spec.pipeline_class}, {spec.hub_id})"
        self._holder = f"video:{spec.name}#{id(self)}"  # this generator's name in popcorn/serve/resident.py
        self._pipe = None
        self._pipe_key: tuple[str, str, bool] | None = None  # (weights source, placement, fast) of the loaded pipeline
        self._auto = False  # the loaded pipeline's memory mode was chosen by "auto" (kept until the next load)
        self._mode_note = ""  # the note that said which mode "auto" chose at the load, and why
        self._held = 0  # GPU bytes the loaded pipeline holds (allocated during its load)
        self._scheduler_config: dict | None = None  # the loaded scheduler's own config (size-based changes start here)
        self._scheduler_changes: dict = {}
        self._fast = None  # the FastPath applied to the loaded pipeline, if any
        self._fast_failed = ""  # why the fast path could not run here (then renders stay plain)
        self._compile_artifacts: set[str] = set()  # compile-cache files loaded or saved in this process
        self.loads = 0  # how many times a pipeline was loaded (for tests and benchmarks)
        self._split = ""  # how the loaded pipeline is split across processes (popcorn/video/parallel.py), if it is

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
            import torch  # noqa: F401
        except ImportError:
            return False, "torch is not installed"
        reading = resident.gpu_memory()
        if reading is None:
            return False, (f"no CUDA GPU here; {self.spec.label} needs about {self.spec.offload_gib:.0f} GiB of GPU "
                           "memory")
        usable = reading[1] / GIB  # other resident models are released before a load: count the whole card
        if usable < 4:
            return False, f"only {usable:.1f} GiB of GPU memory on this card"
        return True, f"weights from {where}: {source}"

    # ----------------------------------------------------------------------------------------------------- snap

    def default_frames(self, seconds: float | None = None) -> int:
        """The valid frame count nearest to `seconds` (default: the configured clip length) at the model's fps."""
        return self.spec.frames.snap(round((seconds or default_seconds()) * self.spec.fps) + 1)

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        spec = self.spec
        notes: list[str] = []
        width, height = self._snap_size(req.width, req.height, notes)
        if req.num_frames:
            frames = spec.frames.snap(req.num_frames)
            if frames != req.num_frames:
                notes.append(f"{spec.label}: {req.num_frames} frames -> {frames} ({spec.frames.describe()})")
        else:
            seconds = req.seconds or default_seconds()
            frames = self.default_frames(seconds)
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
        """'cpu' when there is no GPU; otherwise the requested mode, or for 'auto' the fastest that fits.

        'auto' is decided once per load: while the pipeline it loaded is resident, later renders keep its mode (its
        own weights would otherwise count against it, and the next render would pick another mode and reload). The
        memory counted is what PyTorch can still use plus what this generator already holds; other resident models
        are released before this is read (see render)."""
        requested = check_memory_mode(requested)
        reading = resident.gpu_memory()
        if reading is None:
            return "cpu", ["no CUDA GPU: running on the CPU in float32 (only practical for tiny test pipelines)"]
        if requested != "auto":
            return requested, [f"memory mode {requested} (asked for)"]
        if self._pipe is not None and self._auto:
            return self._pipe_key[1], [self._mode_note.replace("(auto: ", "(auto, chosen at load: ", 1)]
        free, total = reading
        usable_gib = (free + self._held) / GIB
        if usable_gib >= self.spec.gpu_gib:
            mode = "gpu"
        elif usable_gib >= self.spec.offload_gib:
            mode = "model_offload"
        else:
            mode = "sequential_offload"
        why = (f"{usable_gib:.0f} GiB usable of {total / GIB:.0f}; all-on-GPU wants ~{self.spec.gpu_gib:.0f}, "
               f"model offload ~{self.spec.offload_gib:.0f}")
        return mode, [f"memory mode {mode} (auto: {why})"]

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

    def release(self) -> None:
        """Let go of the loaded pipeline (and its compiled blocks) so its memory can be reused."""
        pipe, fast = self._pipe, self._fast
        self._pipe = self._fast = self._pipe_key = self._scheduler_config = None
        self._auto, self._mode_note, self._held, self._scheduler_changes = False, "", 0, {}
        self._split = ""
        resident.drop(self._holder)
        if pipe is None:
            return
        with contextlib.suppress(Exception):
            pipe.remove_all_hooks()  # offload hooks hold references to the modules
        if fast is not None and fast.compiled_blocks:
            import torch

            torch._dynamo.reset()  # compiled code keeps guards on the blocks it was traced from
        del pipe, fast
        resident.free_cache()

    def _dtype(self, mode: str):
        import torch

        if mode == "cpu":
            return torch.float32
        base = getattr(torch, self.spec.dtype)
        if not self.spec.component_dtypes:
            return base
        parts = {name: getattr(torch, dtype) for name, (dtype, _why) in self.spec.component_dtypes.items()}
        return {"default": base, **parts}

    def pipeline(self, mode: str, progress: Progress | None = None, fast: bool = False, auto: bool = False,
                 mode_note: str = ""):
        """The loaded pipeline placed for `mode` (and on the fast path if asked); loaded once and kept, reloaded only
        if the placement or the path changes. A load first releases every other resident model."""
        source, where = self.weights_source()
        key = (source, mode, fast)
        if self._pipe is not None and self._pipe_key == key:
            return self._pipe
        self.release()  # offload hooks and compiled blocks cannot be undone cleanly: load afresh
        resident.make_room(self._holder)
        check_recipe(self.spec)
        if progress is not None:
            progress(0.0, f"loading {self.spec.label} from {where} ({source})")
        import diffusers

        pipeline_class = getattr(diffusers, self.spec.pipeline_class)
        before = resident.gpu_allocated()
        try:
            pipe = pipeline_class.from_pretrained(source, torch_dtype=self._dtype(mode))
        except Exception as exc:
            hint = (f"set {self.spec.env_var} to a local diffusers folder of {self.spec.hub_id}, or go online so it "
                    f"can be downloaded; `python -m popcorn videos` shows what can run here")
            raise StageError("render", f"could not load {self.spec.label} from {source} "
                                       f"({type(exc).__name__}: {str(exc)[:300]})", hint) from exc
        self._place(pipe, mode)
        pipe.set_progress_bar_config(disable=True)
        self._split = parallel.enable(pipe) if parallel.active() else ""  # context parallel across the processes
        self.loads += 1
        if fast:
            from popcorn.video.speed import make_fast

            if progress is not None:
                progress(0.0, f"{self.spec.label}: fast path (the first render compiles the transformer blocks, or "
                              "reads them from the compile cache)")
            self._fast = make_fast(pipe)
        self._pipe, self._pipe_key, self._auto, self._mode_note = pipe, key, auto, mode_note
        self._held = max(0, resident.gpu_allocated() - before)
        scheduler = getattr(pipe, "scheduler", None)
        self._scheduler_config = dict(scheduler.config) if scheduler is not None else None
        resident.hold(self._holder, self.release)
        return pipe

    @staticmethod
    def _place(pipe, mode: str) -> None:
        if mode == "gpu":
            pipe.to(parallel.process_device())  # "cuda", or this process's own GPU in a split render
        elif mode == "model_offload":
            pipe.enable_model_cpu_offload()
        elif mode == "sequential_offload":
            pipe.enable_sequential_cpu_offload()

    def decode_gib(self, req: RenderRequest) -> float:
        """What an untiled VAE decode adds at this request's size and length: the spec's measurement (default size,
        DEFAULT_SECONDS long) scaled by pixels x frames."""
        width, height = self.spec.sizes[0]
        measured_at = width * height * self.default_frames(DEFAULT_SECONDS)
        return self.spec.decode_gib * (req.width * req.height * req.num_frames) / measured_at

    def choose_tiling(self, req: RenderRequest, mode: str) -> tuple[bool, list[str]]:
        """VAE tiling (and slicing) when offloading, and on the GPU wherever the untiled decode would not fit in the
        memory left with the model loaded."""
        if mode == "cpu":
            return False, []
        if mode != "gpu":
            return True, []
        need = self.decode_gib(req)
        reading = resident.gpu_memory()
        usable = reading[0] / GIB if reading else 0.0
        if need <= 0.9 * usable:  # 10% for the allocator's fragmentation
            return False, []
        return True, [f"VAE tiling on: an untiled decode at {req.width}x{req.height}x{req.num_frames} needs "
                      f"~{need:.0f} GiB, {usable:.0f} GiB usable with the model loaded"]

    @staticmethod
    def _set_tiling(pipe, on: bool) -> bool:
        """Switch the VAE's tiling and slicing; False when the VAE cannot tile."""
        vae = getattr(pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return False
        for method in ("tiling", "slicing"):
            name = ("enable_" if on else "disable_") + method
            if hasattr(vae, name):
                getattr(vae, name)()
        return True

    def _apply_scheduler(self, pipe, req: RenderRequest) -> list[str]:
        """The spec's size-dependent scheduler settings (e.g. Wan's flow shift at 720p), from the loaded config."""
        if not self.spec.scheduler_by_size or self._scheduler_config is None:
            return []
        changes, why, notes = {}, "", []
        for min_pixels, settings, reason in sorted(self.spec.scheduler_by_size, key=lambda entry: entry[0]):
            if req.width * req.height >= min_pixels:
                changes, why = dict(settings), reason
        unknown = sorted(key for key in changes if key not in self._scheduler_config)
        if unknown:  # another scheduler class than the recipe's: from_config would drop them silently
            notes.append(f"{type(pipe.scheduler).__name__} has no {', '.join(unknown)}: kept its own settings")
            changes = {k: v for k, v in changes.items() if k not in unknown}
        if changes != self._scheduler_changes:
            pipe.scheduler = type(pipe.scheduler).from_config(self._scheduler_config, **changes)
            self._scheduler_changes = changes
        if changes:
            notes.append(f"scheduler {', '.join(f'{k}={v}' for k, v in changes.items())} ({why})")
        return notes

    # --------------------------------------------------------------------------------------------------- render

    def call_kwargs(self, req: RenderRequest) -> dict[str, Any]:
        """The arguments for pipe(...) besides generator and callback: the request, and the spec's overrides; every
        other argument keeps the pipeline's own default."""
        spec = self.spec
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

    @contextlib.contextmanager
    def _step_reports(self, pipe, kwargs: dict, steps: int, progress: Progress | None,
                      notes: list[str]) -> Iterator[None]:
        """Report each denoising step, through callback_on_step_end where the pipeline has it, else by wrapping its
        scheduler's step (called once per denoising step). Raising from progress (Cancel) stops the pipeline there.
        Where neither exists, progress is reported only before and after the call, and a Cancel takes effect when
        the call returns."""
        if progress is None:
            yield
            return
        label = self.spec.label

        def report(i: int) -> None:
            progress(min(1.0, (i + 1) / steps), f"{label}: denoising step {i + 1}/{steps}")

        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

            def on_step_end(_pipe, i, _t, callback_kwargs):
                report(i)
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
            yield
            return
        scheduler = getattr(pipe, "scheduler", None)
        if scheduler is None or not callable(getattr(scheduler, "step", None)):
            notes.append(f"{label}: no step callback and no scheduler to watch: progress only at the end, and Cancel "
                         "takes effect when the render returns")
            yield
            return
        done = [0]
        plain_step = scheduler.step

        def step(*args, **kw):
            out = plain_step(*args, **kw)
            report(done[0])
            done[0] += 1
            return out

        scheduler.step = step  # an instance attribute: the class's step is untouched
        try:
            yield
        finally:
            scheduler.__dict__.pop("step", None)

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

    def _compile_cache(self, req: RenderRequest, notes: list[str]) -> str | None:
        """Before a fast render of a shape not yet compiled in this process: load the compiled artifacts saved by an
        earlier process (keyed by model, shape, kernel). Returns the artifact file to save after the render, if any."""
        if self._fast is None or not self._fast.compiled_blocks:
            return None
        from popcorn.video import speed

        path = speed.artifact_path(self.spec.name, req.width, req.height, req.num_frames, self._fast.attention)
        if str(path) in self._compile_artifacts:
            return None
        self._compile_artifacts.add(str(path))
        if speed.load_artifacts(path):
            notes.append(f"compiled blocks from the compile cache ({path.name})")
            return None
        return str(path)

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip:
        started = time.perf_counter()
        prompt, notes = clean_prompt(req.prompt)
        req, snap_notes = self.snap(replace(req, prompt=prompt))
        with resident.exclusive():
            resident.make_room(self._holder, empty=False)  # others go before memory is read (they would at load)
            if parallel.active():  # one of N processes of a split render (--gpus N): all of it on this process's GPU
                mode = "gpu" if resident.gpu_memory() is not None else "cpu"
                mode_notes = [f"memory mode {mode} (a split render keeps the whole model on each process's device)"]
                fast, speed_notes = False, ["plain path: the fast path's compiled blocks are not used in a split render"]
            else:
                mode, mode_notes = self.choose_memory_mode(req.memory_mode)
                fast, speed_notes = self.choose_speed(req.speed, mode)
            notes = snap_notes + notes + mode_notes + speed_notes
            loads = self.loads
            pipe = self.pipeline(mode, progress, fast=fast, auto=check_memory_mode(req.memory_mode) == "auto",
                                 mode_note=mode_notes[0] if mode_notes else "")
            loaded_s = round(time.perf_counter() - started, 3) if self.loads != loads else 0.0
            if req.steps is None:
                req = replace(req, steps=default_steps(self.spec))
            tiling, tiling_notes = self.choose_tiling(req, mode)
            if not self._set_tiling(pipe, tiling) and tiling:
                tiling_notes.append(f"{self.spec.label}'s VAE cannot tile: decoding untiled")
                tiling = False
            notes += tiling_notes + self._apply_scheduler(pipe, req) + ([self._split] if self._split else [])
            return self._render_loaded(pipe, req, mode, tiling, loaded_s, started, notes, progress)

    def _render_loaded(self, pipe, req: RenderRequest, mode: str, tiling: bool, loaded_s: float, started: float,
                       notes: list[str], progress: Progress | None) -> Clip:
        import torch

        kwargs = self.call_kwargs(req)
        # a CPU generator gives the same starting noise on any device and under offloading
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(int(req.seed))
        steps = int(kwargs.get("num_inference_steps") or pipeline_signature(self.spec.pipeline_class)[1].get(
            "num_inference_steps", 50))
        save_artifacts = self._compile_cache(req, notes)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        call_started = time.perf_counter()
        try:
            with self._step_reports(pipe, kwargs, steps, progress, notes):
                output = self._call(pipe, kwargs, int(req.seed), notes)
        except torch.OutOfMemoryError as exc:
            free = (resident.gpu_memory() or (0, 0))[0] / GIB
            raise StageError(
                "render",
                f"{self.spec.label} ran out of GPU memory at {req.width}x{req.height}, {req.num_frames} frames "
                f"(memory mode {mode}, {free:.1f} GiB free now)",
                "try --memory-mode model_offload or sequential_offload, fewer frames "
                f"(e.g. {self.spec.frames.snap(req.num_frames // 2)}), a smaller size, or --video storyboard",
            ) from exc
        call_s = time.perf_counter() - call_started
        if save_artifacts and self._fast is not None and self._fast.compiled:
            from popcorn.video import speed

            speed.save_artifacts(Path(save_artifacts))
        frames = to_uint8_frames(output.frames[0])
        if progress is not None:
            progress(1.0, f"{self.spec.label}: decoded {frames.shape[0]} frames")
        _, defaults = pipeline_signature(self.spec.pipeline_class)
        settings = {
            "model": self.spec.label,
            "hub_id": self.spec.hub_id,
            "pipeline_class": self.spec.pipeline_class,
            "weights": self.weights_source()[0],
            "width": int(frames.shape[2]),
            "height": int(frames.shape[1]),
            "num_frames": int(frames.shape[0]),
            "seconds": round(frames.shape[0] / float(req.fps), 3),
            "fps": req.fps,
            "steps": steps,
            "guidance_scale": kwargs.get("guidance_scale", defaults.get("guidance_scale")),
            "overrides": {name: value for name, (value, _why) in self.spec.overrides.items()},
            "scheduler": _scheduler_settings(pipe),
            "seed": int(req.seed),
            "memory_mode": mode,
            "vae_tiling": tiling,
            "speed": self._fast.to_dict() if self._fast is not None else "plain",
            "dtype": str(pipe.dtype).replace("torch.", "") if hasattr(pipe, "dtype") else self.spec.dtype,
            "vae_dtype": str(getattr(getattr(pipe, "vae", None), "dtype", "")).replace("torch.", ""),
            "prompt": req.prompt,
            "negative_prompt": kwargs.get("negative_prompt") or "",
            "seconds_to_load": loaded_s,
            "seconds_to_call": round(call_s, 3),
            "seconds_to_render": round(time.perf_counter() - started, 3),
        }
        if torch.cuda.is_available():
            settings["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
        return Clip(frames=frames, fps=req.fps, width=settings["width"], height=settings["height"],
                    generator=self.name, is_preview=False, notes=notes, settings=settings)


def _scheduler_settings(pipe) -> dict:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return {}
    config_ = scheduler.config
    return {"class": type(scheduler).__name__,
            **{k: config_[k] for k in ("flow_shift", "shift", "use_dynamic_shifting", "timestep_spacing")
               if k in config_}}


def to_uint8_frames(video: Any) -> np.ndarray:
    """A pipeline's video (np float in [0, 1], (T, H, W, 3); or a list of PIL images) as (T, H, W, 3) uint8."""
    if isinstance(video, list):
        return np.stack([np.asarray(im.convert("RGB")) for im in video]).astype(np.uint8)
    array = np.asarray(video)
    if array.dtype == np.uint8:
        return array
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
