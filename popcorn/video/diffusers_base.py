"""The shared adapter for diffusers text-to-video pipelines: `DiffusersGenerator(spec)` renders one model.

The model itself is a `DiffusersSpec` (popcorn/video/diffusers_spec.py: sizes, frame rule, fps, recipe, measured
memory). A render:

1. snaps the request onto the model's sizes / frame counts / fps (diffusers_spec.snap_request); the clip length is a
   number of seconds (default about 3 s, a micro-video) mapped to a valid frame count,
2. finds the weights (diffusers_weights.py: env POPCORN_VIDEO_<NAME>_PATH, else <cache_dir>/models/video/<name>/,
   else the hub),
3. before loading, releases every other resident model (popcorn/serve/resident.py: other video pipelines, the cover
   model, a GPU LLM) and empties the allocator's cache; picks the memory mode once per load (diffusers_memory.py: all
   on GPU in bf16 / model CPU offload / sequential offload) unless the request names one; later renders keep it, so
   the pipeline is not reloaded or recompiled back and forth,
4. tiles the VAE decode wherever the untiled decode would not fit (always when offloading),
5. turns the seed into a torch.Generator and runs the pipeline, reporting each denoising step (through
   callback_on_step_end, or by wrapping the scheduler's step where the pipeline has no callback); a progress callback
   that raises (Cancel) stops the render there,
6. on the GPU, runs it on the fast path (diffusers_speed.py applies popcorn/video/speed.py: exact, compiled on the
   first render, the compiled artifacts kept in the Popcorn cache across restarts) unless the request says
   speed="plain".

This module holds the generator's state (the loaded pipeline and how it was placed) and the render itself; the
decisions live in the modules named above.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from dataclasses import replace
from typing import Any, Iterator

import numpy as np

from popcorn.serve import resident
from popcorn.serve.resident import GIB
from popcorn.types import StageError
from popcorn.video import diffusers_memory as memory
from popcorn.video import diffusers_speed as speed_path
from popcorn.video import diffusers_weights as weights
from popcorn.video import parallel
from popcorn.video.base import Clip, Progress, RenderRequest, check_memory_mode, clean_prompt
from popcorn.video.diffusers_spec import (
    DiffusersSpec,
    FrameRule,
    call_arguments,
    check_recipe,
    default_steps,
    pipeline_signature,
    scheduler_for_size,
    snap_request,
)

__all__ = ["DiffusersGenerator", "DiffusersSpec", "FrameRule", "to_uint8_frames"]


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
        return weights.weights_source(self.spec)

    def available(self) -> tuple[bool, str]:
        problem = weights.weights_problem(self.spec)
        if problem:
            return False, problem
        try:
            import torch  # noqa: F401  (heavy and optional: only asked whether it is installed)
        except ImportError:
            return False, "torch is not installed"
        reading = resident.gpu_memory()
        if reading is None:
            return False, (f"no CUDA GPU here; {self.spec.label} needs about {self.spec.offload_gib:.0f} GiB of GPU "
                           "memory")
        usable = reading[1] / GIB  # other resident models are released before a load: count the whole card
        if usable < 4:
            return False, f"only {usable:.1f} GiB of GPU memory on this card"
        source, where = self.weights_source()
        return True, f"weights from {where}: {source}"

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        return snap_request(self.spec, req)

    # ---------------------------------------------------------------------------------------------- memory/load

    def choose_memory_mode(self, requested: str) -> tuple[str, list[str]]:
        """'cpu' when there is no GPU; otherwise the requested mode, or for 'auto' the fastest that fits (decided once
        per load: while the pipeline it loaded is resident, later renders keep its mode). Other resident models are
        released before this is read (see render)."""
        kept = (self._pipe_key[1], self._mode_note) if self._pipe is not None and self._auto else None
        return memory.choose_memory_mode(self.spec, requested, self._held, kept)

    def choose_speed(self, requested: str, mode: str) -> tuple[bool, list[str]]:
        """Whether to run on the fast path: 'auto' takes it when the whole model is on the GPU."""
        return speed_path.choose_speed(requested, mode, self._fast_failed)

    def release(self) -> None:
        """Let go of the loaded pipeline (and its compiled blocks) so its memory can be reused."""
        pipe, fast = self._pipe, self._fast
        self._pipe = self._fast = self._pipe_key = self._scheduler_config = None
        self._auto, self._mode_note, self._held, self._scheduler_changes = False, "", 0, {}
        self._split = ""
        resident.drop(self._holder)
        if pipe is None:
            return
        memory.unhook(pipe, compiled=bool(fast is not None and fast.compiled_blocks))
        del pipe, fast
        resident.free_cache()

    def _dtype(self, mode: str):
        return weights.torch_dtype(self.spec, mode)

    _place = staticmethod(memory.place)

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
        before = resident.gpu_allocated()
        pipe = weights.load_pipeline(self.spec, source, self._dtype(mode))
        self._place(pipe, mode)
        pipe.set_progress_bar_config(disable=True)
        self._split = parallel.enable(pipe) if parallel.active() else ""  # context parallel across the processes
        self.loads += 1
        if fast:
            if progress is not None:
                progress(0.0, f"{self.spec.label}: fast path (the first render compiles the transformer blocks, or "
                              "reads them from the compile cache)")
            self._fast = speed_path.make_fast(pipe)
        self._pipe, self._pipe_key, self._auto, self._mode_note = pipe, key, auto, mode_note
        self._held = max(0, resident.gpu_allocated() - before)
        scheduler = getattr(pipe, "scheduler", None)
        self._scheduler_config = dict(scheduler.config) if scheduler is not None else None
        resident.hold(self._holder, self.release)
        return pipe

    def decode_gib(self, req: RenderRequest) -> float:
        """What an untiled VAE decode adds at this request's size and length (diffusers_memory.decode_gib)."""
        return memory.decode_gib(self.spec, req)

    def choose_tiling(self, req: RenderRequest, mode: str) -> tuple[bool, list[str]]:
        """VAE tiling when offloading, and on the GPU wherever the untiled decode would not fit."""
        return memory.choose_tiling(self.spec, req, mode)

    def _apply_scheduler(self, pipe, req: RenderRequest) -> list[str]:
        """The spec's size-dependent scheduler settings (e.g. Wan's flow shift at 720p), from the loaded config."""
        if not self.spec.scheduler_by_size or self._scheduler_config is None:
            return []
        changes, notes = scheduler_for_size(self.spec, req, type(pipe.scheduler).__name__, self._scheduler_config)
        if changes != self._scheduler_changes:
            pipe.scheduler = type(pipe.scheduler).from_config(self._scheduler_config, **changes)
            self._scheduler_changes = changes
        return notes

    # --------------------------------------------------------------------------------------------------- render

    def call_kwargs(self, req: RenderRequest) -> dict[str, Any]:
        """The arguments for pipe(...) besides generator and callback (diffusers_spec.call_arguments)."""
        return call_arguments(self.spec, req)

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
        """pipe(**kwargs), on the fast path when it is on; a fast path whose first call failed for a reason of its own
        is dropped for this pipeline and the next renders (diffusers_speed.call)."""
        output, failed = speed_path.call(pipe, kwargs, seed, self._fast, notes)
        if failed:
            self._fast, self._fast_failed = None, failed
            self._pipe_key = (self._pipe_key[0], self._pipe_key[1], False)
        return output

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
            if not memory.set_tiling(pipe, tiling) and tiling:
                tiling_notes.append(f"{self.spec.label}'s VAE cannot tile: decoding untiled")
                tiling = False
            notes += tiling_notes + self._apply_scheduler(pipe, req) + ([self._split] if self._split else [])
            return self._render_loaded(pipe, req, mode, tiling, loaded_s, started, notes, progress)

    def _render_loaded(self, pipe, req: RenderRequest, mode: str, tiling: bool, loaded_s: float, started: float,
                       notes: list[str], progress: Progress | None) -> Clip:
        import torch  # heavy, and optional: only a diffusers render needs it (loaded already with the pipeline)

        kwargs = self.call_kwargs(req)
        # a CPU generator gives the same starting noise on any device and under offloading
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(int(req.seed))
        steps = int(kwargs.get("num_inference_steps") or pipeline_signature(self.spec.pipeline_class)[1].get(
            "num_inference_steps", 50))
        save_artifacts = speed_path.artifacts_to_save(self.spec.name, req, self._fast, self._compile_artifacts, notes)
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
        speed_path.save_artifacts(save_artifacts, self._fast)
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
