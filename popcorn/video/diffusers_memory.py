"""GPU memory decisions for a diffusers pipeline: the memory mode, its placement, VAE tiling, and letting go.

The memory mode (all on GPU in bf16 / model CPU offload / sequential offload) is picked once per load from the memory
PyTorch can use plus what the generator itself holds, against the spec's measured `gpu_gib` / `offload_gib`, unless
the request names one. The VAE decode is tiled wherever the untiled decode would not fit (always when offloading).
The readings come from popcorn/serve/resident.py (other resident models are released before they are read), so
tests inject them there.
"""

from __future__ import annotations

import contextlib

from popcorn.serve import resident
from popcorn.serve.resident import GIB
from popcorn.video import parallel
from popcorn.video.base import DEFAULT_SECONDS, RenderRequest, check_memory_mode
from popcorn.video.diffusers_spec import DiffusersSpec, frames_for


def choose_memory_mode(spec: DiffusersSpec, requested: str, held: int = 0,
                       kept: tuple[str, str] | None = None) -> tuple[str, list[str]]:
    """'cpu' when there is no GPU; otherwise the requested mode, or for 'auto' the fastest that fits.

    `held`: the GPU bytes the generator's loaded pipeline holds (counted as usable: a reload frees them). `kept`:
    (mode, note) of a resident pipeline whose mode 'auto' chose; 'auto' keeps it (its own weights would otherwise
    count against it, and the next render would pick another mode and reload)."""
    requested = check_memory_mode(requested)
    reading = resident.gpu_memory()
    if reading is None:
        return "cpu", ["no CUDA GPU: running on the CPU in float32 (only practical for tiny test pipelines)"]
    if requested != "auto":
        return requested, [f"memory mode {requested} (asked for)"]
    if kept is not None:
        mode, note = kept
        return mode, [note.replace("(auto: ", "(auto, chosen at load: ", 1)]
    free, total = reading
    usable_gib = (free + held) / GIB
    if usable_gib >= spec.gpu_gib:
        mode = "gpu"
    elif usable_gib >= spec.offload_gib:
        mode = "model_offload"
    else:
        mode = "sequential_offload"
    why = (f"{usable_gib:.0f} GiB usable of {total / GIB:.0f}; all-on-GPU wants ~{spec.gpu_gib:.0f}, "
           f"model offload ~{spec.offload_gib:.0f}")
    return mode, [f"memory mode {mode} (auto: {why})"]


def place(pipe, mode: str) -> None:
    """Put a loaded pipeline where `mode` says (on the CPU it stays where it loaded)."""
    if mode == "gpu":
        pipe.to(parallel.process_device())  # "cuda", or this process's own GPU in a split render
    elif mode == "model_offload":
        pipe.enable_model_cpu_offload()
    elif mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload()


def decode_gib(spec: DiffusersSpec, req: RenderRequest) -> float:
    """What an untiled VAE decode adds at this request's size and length: the spec's measurement (default size,
    DEFAULT_SECONDS long) scaled by pixels x frames."""
    width, height = spec.sizes[0]
    measured_at = width * height * frames_for(spec, DEFAULT_SECONDS)
    return spec.decode_gib * (req.width * req.height * req.num_frames) / measured_at


def choose_tiling(spec: DiffusersSpec, req: RenderRequest, mode: str) -> tuple[bool, list[str]]:
    """VAE tiling (and slicing) when offloading, and on the GPU wherever the untiled decode would not fit in the
    memory left with the model loaded."""
    if mode == "cpu":
        return False, []
    if mode != "gpu":
        return True, []
    need = decode_gib(spec, req)
    reading = resident.gpu_memory()
    usable = reading[0] / GIB if reading else 0.0
    if need <= 0.9 * usable:  # 10% for the allocator's fragmentation
        return False, []
    return True, [f"VAE tiling on: an untiled decode at {req.width}x{req.height}x{req.num_frames} needs "
                  f"~{need:.0f} GiB, {usable:.0f} GiB usable with the model loaded"]


def set_tiling(pipe, on: bool) -> bool:
    """Switch the VAE's tiling and slicing; False when the VAE cannot tile."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return False
    for method in ("tiling", "slicing"):
        name = ("enable_" if on else "disable_") + method
        if hasattr(vae, name):
            getattr(vae, name)()
    return True


def unhook(pipe, compiled: bool) -> None:
    """Before a pipeline is let go: remove its offload hooks and the compiled code traced from it, which would
    otherwise keep its modules alive. The caller then drops its references and empties the allocator's cache."""
    with contextlib.suppress(Exception):
        pipe.remove_all_hooks()  # offload hooks hold references to the modules
    if compiled:
        import torch  # heavy, and optional: only a diffusers model needs it (and then it is loaded already)

        torch._dynamo.reset()  # compiled code keeps guards on the blocks it was traced from
