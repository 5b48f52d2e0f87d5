"""Where a diffusers model's weights come from, whether they can be had here, and loading them.

The weights are found in this order, without touching the network: env POPCORN_VIDEO_<NAME>_PATH (a local
diffusers folder), else <cache_dir>/models/video/<name>/, else the hub (`from_pretrained(hub_id)`, also from the
local HF cache offline). The dtype is the spec's (bf16, with per-component exceptions such as Wan's fp32 VAE), or
float32 on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import huggingface_hub

from popcorn import config
from popcorn.types import StageError
from popcorn.video.diffusers_spec import DiffusersSpec


def local_models_dir() -> Path:
    return config.cache_dir() / "models" / "video"


def weights_source(spec: DiffusersSpec) -> tuple[str, str]:
    """(path or hub id, "env" | "local" | "hub") without touching the network."""
    explicit = os.environ.get(spec.env_var, "").strip()
    if explicit:
        return str(Path(explicit).expanduser()), "env"
    local = local_models_dir() / spec.name
    if (local / "model_index.json").exists():
        return str(local), "local"
    return spec.hub_id, "hub"


def hub_cached(hub_id: str) -> bool:
    """Whether the hub model's index is in the local HF cache (so an offline load can find it)."""
    try:
        return isinstance(huggingface_hub.try_to_load_from_cache(hub_id, "model_index.json"), str)
    except Exception:
        return False


def weights_problem(spec: DiffusersSpec) -> str:
    """Why the weights cannot be had here ("" when they can)."""
    source, where = weights_source(spec)
    if where == "env" and not (Path(source) / "model_index.json").exists():
        return f"{spec.env_var}={source} is not a diffusers folder (no model_index.json)"
    if where == "hub" and config.offline() and not hub_cached(spec.hub_id):
        return (f"offline and {spec.hub_id} is not in the HF cache: set {spec.env_var} to a local diffusers folder "
                f"or put one at {local_models_dir() / spec.name}")
    return ""


def torch_dtype(spec: DiffusersSpec, mode: str):
    """The torch_dtype argument of from_pretrained for memory mode `mode`: one dtype, or one per component."""
    import torch  # heavy, and optional: only a diffusers model needs it

    if mode == "cpu":
        return torch.float32
    base = getattr(torch, spec.dtype)
    if not spec.component_dtypes:
        return base
    parts = {name: getattr(torch, dtype) for name, (dtype, _why) in spec.component_dtypes.items()}
    return {"default": base, **parts}


def load_pipeline(spec: DiffusersSpec, source: str, dtype):
    """The spec's pipeline class from_pretrained(source); a failure is a render-stage error that says what to set."""
    import diffusers  # heavy (torch), and optional: only a diffusers model needs it

    pipeline_class = getattr(diffusers, spec.pipeline_class)
    try:
        return pipeline_class.from_pretrained(source, torch_dtype=dtype)
    except Exception as exc:
        hint = (f"set {spec.env_var} to a local diffusers folder of {spec.hub_id}, or go online so it can be "
                f"downloaded; `python -m popcorn videos` shows what can run here")
        raise StageError("render", f"could not load {spec.label} from {source} "
                                   f"({type(exc).__name__}: {str(exc)[:300]})", hint) from exc
