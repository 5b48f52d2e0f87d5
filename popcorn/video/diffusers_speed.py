"""Applying the fast path (popcorn/video/speed.py) to a diffusers render: whether to take it, running a call on it
(back to the plain path, with the same seed, if its first, compiling call fails for a reason of its own), and the
compile cache around a render of a shape not yet compiled in this process.

popcorn.video.speed imports torch at its top, so it is imported here only where the fast path is used.
"""

from __future__ import annotations

from pathlib import Path

from popcorn.types import StageError
from popcorn.video.base import RenderRequest, check_speed


def choose_speed(requested: str, mode: str, failed: str = "") -> tuple[bool, list[str]]:
    """Whether to run on the fast path: 'auto' takes it when the whole model is on the GPU. `failed`: why the fast
    path failed here before (then renders stay plain)."""
    requested = check_speed(requested)
    if requested != "plain" and failed:
        return False, [f"plain path: the fast path failed here before ({failed})"]
    if requested == "auto":
        return mode == "gpu", []
    if requested == "fast" and mode not in ("gpu", "cpu"):
        return False, [f"speed fast ignored under {mode} (compiled blocks and offload hooks do not mix)"]
    return requested == "fast", []


def make_fast(pipe):
    """The loaded pipeline changed in place for the fast path; the FastPath that says what was done."""
    from popcorn.video import speed  # torch at its top: only a fast render needs it

    return speed.make_fast(pipe)


def call(pipe, kwargs: dict, seed: int, fast, notes: list[str]) -> tuple[object, str]:
    """(pipe(**kwargs), "") on the fast path `fast` when it is on (None: plain). If the fast path's first call (the
    one that compiles) fails for a reason of its own, the pipeline goes back to plain, a note says why, and it runs
    again with the same seed: (output, why the fast path failed)."""
    import torch  # heavy, and optional: only a diffusers render needs it (and then it is loaded already)

    if fast is None:
        with torch.inference_mode():
            return pipe(**kwargs), ""
    try:
        with torch.inference_mode(), fast.context():
            return pipe(**kwargs), ""
    except (torch.OutOfMemoryError, StageError):  # out of memory, or a stage error such as Cancel: not ours
        raise
    except Exception as exc:
        if fast.compiled:
            raise
        from popcorn.video import speed  # loaded already: the fast path was applied

        speed.undo_fast(pipe)
        failed = f"{type(exc).__name__}: {str(exc)[:160]}"
        notes.append(f"fast path failed ({failed}); rendered on the plain path")
        kwargs["generator"] = torch.Generator(device="cpu").manual_seed(seed)
        with torch.inference_mode():
            return pipe(**kwargs), failed


def artifacts_to_save(model: str, req: RenderRequest, fast, seen: set[str], notes: list[str]) -> Path | None:
    """Before a fast render of a shape not yet compiled in this process (`seen`: the artifact files loaded or saved
    here): load the compiled artifacts saved by an earlier process (keyed by model, shape, kernel). Returns the
    artifact file to save after the render, if any."""
    if fast is None or not fast.compiled_blocks:
        return None
    from popcorn.video import speed  # loaded already: the fast path was applied

    path = speed.artifact_path(model, req.width, req.height, req.num_frames, fast.attention)
    if str(path) in seen:
        return None
    seen.add(str(path))
    if speed.load_artifacts(path):
        notes.append(f"compiled blocks from the compile cache ({path.name})")
        return None
    return path


def save_artifacts(path: Path | None, fast) -> None:
    """After the render: save what the first compiled call of this shape compiled (see artifacts_to_save)."""
    if path is not None and fast is not None and fast.compiled:
        from popcorn.video import speed  # loaded already: the fast path was applied

        speed.save_artifacts(path)
