"""One video across several GPUs: diffusers' context parallelism (Ulysses attention), one process per GPU.

    popcorn render --plan plan.json --video wan-1.3b --gpus 2 --out DIR

`--gpus N` (N > 1) re-launches the same command under `accelerate launch --num_processes N` (accelerate's own
process state: one process per GPU, NCCL between them). Every process loads the pipeline, splits the transformer's
sequence across the processes with `transformer.enable_parallelism(ContextParallelConfig(ulysses_degree=N))`, and
runs the same denoising loop from the same seed; only the main process composes and writes the files.

Which models can: those whose diffusers transformer carries a context-parallel plan that splits their attention
correctly here (`SUPPORTED`, each with the reason for the others in `UNSUPPORTED`). Ring attention needs an attention
kernel that returns the log-sum-exp (flash / cuDNN), so Ulysses is used: it needs only all-to-all and runs with
PyTorch's own attention too. When N does not divide the head count, diffusers' "Ulysses anything" mode is used.

On a machine without GPUs the same code path runs over gloo on the CPU when POPCORN_PARALLEL_CPU=1 (tests): diffusers
0.42.1 picks the process's device as `rank % torch.accelerator.device_count()`, which is 0 on a CPU-only machine, so
there, and only there, the count is read as 1 while the model is set up.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
from typing import Iterator

from popcorn.types import StageError

SUPPORTED = {"wan-1.3b", "wan-14b"}
UNSUPPORTED = {
    "ltx": "diffusers 0.42.1 splits LTX-Video's text mask along the sequence, which its Ulysses attention then "
           "misreads (the shapes disagree); it renders on one GPU",
    "cogvideox-5b": "CogVideoX's transformer has no context-parallel plan in diffusers 0.42.1",
    "cogvideox-2b": "CogVideoX's transformer has no context-parallel plan in diffusers 0.42.1",
    "hunyuan": "HunyuanVideo's transformer has no context-parallel plan in diffusers 0.42.1",
    "hunyuan-1.5": "HunyuanVideo-1.5's transformer has no context-parallel plan in diffusers 0.42.1",
}
ENV_CPU = "POPCORN_PARALLEL_CPU"
ENV_GPUS = "POPCORN_PARALLEL_GPUS"  # set for the launched processes: how many the user asked for


def cpu_allowed() -> bool:
    return os.environ.get(ENV_CPU, "").strip().lower() in ("1", "true", "yes", "on")


def world_size() -> int:
    """How many processes this one belongs to (1 outside `accelerate launch` / torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1") or 1)
    except ValueError:
        return 1


def launched() -> bool:
    return world_size() > 1


def device_count() -> int:
    try:
        import torch  # heavy, and optional here: the CLI asks this before any model loads

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def check(video: str, gpus: int, *, available_gpus: int | None = None) -> None:
    """Refuse, with the render stage's error, a split this model or this machine cannot do."""
    if gpus is None or int(gpus) <= 1:
        return
    gpus = int(gpus)
    if video not in SUPPORTED:
        why = UNSUPPORTED.get(video, f"{video!r} is not a diffusers model with a context-parallel plan")
        raise StageError("render", f"--gpus {gpus}: {video} cannot be split across GPUs: {why}",
                         "render it on one GPU (leave out --gpus), or pick " + " / ".join(sorted(SUPPORTED)))
    have = device_count() if available_gpus is None else available_gpus
    if have < gpus and not cpu_allowed():
        raise StageError("render", f"--gpus {gpus} asks for {gpus} GPUs, but this machine has {have}",
                         f"use --gpus {have}" if have > 1 else "leave out --gpus to render on one device")


def launch_command(argv: list[str], gpus: int, script: str | None = None, port: int | None = None) -> list[str]:
    """The command that runs `python -m popcorn <argv>` (or `script <argv>`) once per GPU under accelerate."""
    # --multi_gpu: accelerate's torchrun launcher (its --cpu launcher starts several processes only through MPI)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(int(gpus)),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if port:
        command += ["--main_process_port", str(int(port))]
    return command + ([script] if script else ["-m", "popcorn"]) + list(argv)


def relaunch(argv: list[str], gpus: int) -> int:
    """Run the command under accelerate with one process per GPU; returns its exit code."""
    command = launch_command(argv, gpus, port=_free_port())  # two split renders at once must not share a port
    env = dict(os.environ, **{ENV_GPUS: str(int(gpus))})
    print("[render] " + shlex.join(command[1:]), file=sys.stderr, flush=True)
    return subprocess.call(command, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def active() -> bool:
    """True in a process launched for a split render (`--gpus N`, N > 1)."""
    return launched() and bool(os.environ.get(ENV_GPUS))


def state():
    """accelerate's process state; without CUDA the processes join on the CPU over gloo."""
    from accelerate import PartialState  # heavy (torch): only a split render needs it

    return PartialState(cpu=device_count() == 0)


def is_main_process() -> bool:
    return state().is_main_process if launched() else True


def process_device() -> str:
    """Where this process renders: its own GPU under a split render, else the one CUDA device."""
    return str(state().device) if active() else "cuda"


@contextlib.contextmanager
def _accelerator_count_for_cpu() -> Iterator[None]:
    """diffusers assumes an accelerator when it sets up the mesh; on a CPU-only machine (tests) it sees one."""
    import torch  # heavy: only a split render needs it (loaded already with its pipeline)

    if torch.accelerator.device_count() > 0:
        yield
        return
    original = torch.accelerator.device_count
    torch.accelerator.device_count = lambda: 1
    try:
        yield
    finally:
        torch.accelerator.device_count = original


def enable(pipe, degree: int | None = None) -> str:
    """Split `pipe.transformer`'s attention across the launched processes (Ulysses). Returns a note for the run."""
    from diffusers import ContextParallelConfig  # heavy (torch): only a split render needs it

    here = state()  # joins the process group accelerate launched us into (NCCL on GPUs, gloo on the CPU)
    degree = int(degree or here.num_processes)
    if degree <= 1:
        return ""
    transformer = pipe.transformer
    heads = int(getattr(transformer.config, "num_attention_heads", 0) or 0)
    anything = bool(heads) and heads % degree != 0
    config = ContextParallelConfig(ulysses_degree=degree, ulysses_anything=anything)
    with _accelerator_count_for_cpu():
        transformer.enable_parallelism(config=config)
    mode = "Ulysses anything" if anything else "Ulysses"
    return f"context parallel: {mode} attention across {degree} processes ({here.device.type})"


def barrier() -> None:
    if launched():
        state().wait_for_everyone()
