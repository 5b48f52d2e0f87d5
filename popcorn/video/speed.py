"""The fast path for a diffusers video transformer on a GPU: the same math, fewer wasted cycles.

`make_fast(pipe)` changes the loaded pipeline in place, step by step, and returns a `FastPath` that says what it did
and gives the context to run the pipeline in. Every step is exact (no cache, no lower precision, no skipped work);
outputs differ from the plain run only by the order of floating-point sums (bf16 relative error ~1e-2 after 30
random-weight layers, the same as any compiled kernel gives).

1. Fused QKV projections (`transformer.fuse_qkv_projections()`), where the model has them: one GEMM instead of 3.
2. The feed-forward's first GEMM and its tanh-GELU in one cuBLASLt call (the GELU_BIAS epilogue), as the custom op
   `popcorn::linear_gelu_tanh`, so the compiler keeps it whole instead of writing and re-reading the activation.
3. Attention: FlashAttention-4 (the `flash-attn-4` package, Hopper and Blackwell) behind PyTorch's own SDPA
   (`torch.nn.attention.activate_flash_attention_impl("FA4")`), used only after a probe shows it agrees with the
   default kernel; otherwise PyTorch's default (cuDNN's fused kernel on an H100).
4. `torch.compile` of the repeated transformer blocks (regional compilation: every block shares one compiled
   graph, so it compiles in seconds, not minutes), fullgraph, with inductor's coordinate-descent tuning.

Compilation happens during the first call (8-15 s for LTX-Video on an H100); later calls reuse it. What it compiles
persists across restarts: inductor's caches live in the Popcorn cache folder (<cache>/compile/inductor, unless
TORCHINDUCTOR_CACHE_DIR names another), and after the first compiled render of a shape the compiled artifacts are saved
as one file per model, shape, attention kernel, torch version and GPU (`artifact_path`), loaded by the next process
before its first render (`torch.compiler.load_cache_artifacts`). bench/video_speed.py measures this path as
configuration (c); bench/gpu_path.py the render path with it; bench/RESULTS.md has the numbers.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.attention
from diffusers.models.activations import GELU

from popcorn import config

# ------------------------------------------------------------------------------------------ 2. GEMM + GELU in one


@torch.library.custom_op("popcorn::linear_gelu_tanh", mutates_args=())
def linear_gelu_tanh(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(x W^T + b); on CUDA in one cuBLASLt call. Opaque to the compiler, so it stays one call."""
    rows = x.reshape(-1, x.shape[-1])
    if x.is_cuda:
        out = torch._addmm_activation(bias, rows, weight.t(), use_gelu=True)  # CUDA's epilogue is the tanh GELU
    else:  # the CPU kernel of _addmm_activation uses the exact GELU, so spell the tanh one out
        out = torch.nn.functional.gelu(torch.addmm(bias, rows, weight.t()), approximate="tanh")
    return out.reshape(*x.shape[:-1], weight.shape[0])


@linear_gelu_tanh.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def _gelu_epilogue_forward(module, hidden_states):
    proj = module.proj
    if isinstance(proj, torch.nn.Linear) and proj.bias is not None:
        return linear_gelu_tanh(hidden_states, proj.weight, proj.bias)
    return module.gelu(proj(hidden_states))


def use_gelu_epilogue(transformer, on: bool = True) -> int:
    """Route diffusers' GELU(approximate='tanh') layers through linear_gelu_tanh (or back); returns how many."""
    changed = 0
    for module in transformer.modules():
        if isinstance(module, GELU) and module.approximate == "tanh":
            if on:
                module.forward = _gelu_epilogue_forward.__get__(module)
            else:
                module.__dict__.pop("forward", None)
            changed += 1
    return changed


# ------------------------------------------------------------------------------------------------ 3. attention


def _sdpa_priority(backends: tuple[str, ...]) -> Callable[[], contextlib.AbstractContextManager]:
    order = [getattr(torch.nn.attention.SDPBackend, name) for name in backends]
    return lambda: torch.nn.attention.sdpa_kernel(order, set_priority=True)


def flash_attention_4() -> tuple[Callable[[], contextlib.AbstractContextManager] | None, str]:
    """Activate FlashAttention-4 behind SDPA if it is installed, the GPU is Hopper/Blackwell and a probe agrees with
    the default kernel. Returns (a context factory that makes SDPA pick it, or None; what happened, in words)."""
    if not torch.cuda.is_available():
        return None, "default SDPA (no CUDA GPU)"
    major, minor = torch.cuda.get_device_capability()
    if major not in (9, 10):
        return None, f"default SDPA (FlashAttention-4 needs compute capability 9.x or 10.x; this GPU is {major}.{minor})"
    try:
        import flash_attn.cute.interface  # noqa: F401  (optional: the flash-attn-4 package, Hopper/Blackwell only)
    except Exception as exc:  # not installed, or its CUDA libraries do not load
        return None, f"default SDPA (flash-attn-4 not usable here: {type(exc).__name__}: {str(exc)[:120]})"
    if not hasattr(torch.nn.attention, "register_flash_attention_impl"):
        return None, f"default SDPA (torch {torch.__version__} cannot route SDPA to another flash kernel)"
    try:
        torch.nn.attention.register_flash_attention_impl(_FA4_NAME, register_fn=_register_fa4)
        with flash_attention_4_active():
            error = _probe_attention()
    except Exception as exc:
        error = f"{type(exc).__name__}: {str(exc)[:160]}"
    if error is not None:
        return None, f"default SDPA (FlashAttention-4 failed its probe: {error})"
    return flash_attention_4_active, "FlashAttention-4 through SDPA (probe agreed with the default kernel)"


@contextlib.contextmanager
def flash_attention_4_active() -> Iterator[None]:
    """Inside: SDPA prefers its flash backend, and that backend runs FlashAttention-4. Outside, nothing changes: the
    route is switched on for the pipeline call only, so other models in the process keep PyTorch's kernels."""
    torch.nn.attention.activate_flash_attention_impl(_FA4_NAME)
    try:
        with _sdpa_priority(("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"))():
            yield
    finally:
        torch.nn.attention.restore_flash_attention_impl()


_FA4_NAME = "popcorn-fa4"
_FA4_CALLS = [0]  # how many attention calls the route has served (the probe checks that it served its own)


@dataclass
class _Fa4Handle:
    library: Any

    def remove(self) -> None:
        self.library = None


def _register_fa4() -> _Fa4Handle:
    """Make SDPA's flash backend run FlashAttention-4's forward kernel (PyTorch's dispatcher calls this function
    instead of its own flash kernel while the handle lives). Inference only: no dropout, no debug mask."""
    # optional (flash-attn-4, checked above); the kernel entry that writes into a given `out`
    from flash_attn.cute.interface import _flash_attn_fwd

    def flash_forward(query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *, scale=None):
        if dropout_p or return_debug_mask:
            raise RuntimeError("popcorn's FlashAttention-4 route serves inference only (dropout_p=0, no debug mask)")
        if is_causal and query.size(2) != key.size(2):  # FlashAttention aligns the causal mask bottom-right, SDPA top-left
            raise RuntimeError("popcorn's FlashAttention-4 route does not take causal attention of unequal lengths")
        _FA4_CALLS[0] += 1
        out = torch.empty_like(query)  # (batch, heads, seq, dim) with the query's memory layout, as PyTorch's kernel
        lse = _flash_attn_fwd(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), softmax_scale=scale,
                              causal=is_causal, return_lse=True, out=out.transpose(1, 2))[1]
        device = query.device
        return (out, lse.contiguous(), None, None, query.size(2), key.size(2),
                torch.zeros((2,), dtype=torch.uint64, device=device), torch.zeros((), dtype=torch.uint64, device=device),
                torch.empty(0, dtype=query.dtype, device=device))

    library = torch.library.Library("aten", "IMPL", "CUDA")
    library.impl("_scaled_dot_product_flash_attention", flash_forward, "CUDA")
    return _Fa4Handle(library)


def _probe_attention() -> str | None:
    """None when SDPA inside flash_attention_4_active() matches the default kernels on small random inputs of both
    head sizes in use."""
    generator = torch.Generator("cuda").manual_seed(0)
    stock = _sdpa_priority(("CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"))  # anything but the flash backend
    for heads, tokens, dim in ((4, 300, 64), (4, 300, 128)):
        q, k, v = (torch.randn(2, heads, tokens, dim, device="cuda", dtype=torch.bfloat16, generator=generator)
                   for _ in range(3))
        with stock():
            expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        served = _FA4_CALLS[0]
        got = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        if _FA4_CALLS[0] != served + 1:
            return "SDPA did not reach FlashAttention-4"
        error = float((got.float() - expected.float()).norm() / expected.float().norm())
        if not error < 2e-2:
            return f"relative error {error:.3g} at head size {dim}"
    return None


# -------------------------------------------------------------------------------------------------- 4. compile


def repeated_blocks(transformer) -> list[torch.nn.Module]:
    """The blocks the model repeats (diffusers marks them in `_repeated_blocks`; CogVideoX's are found by name)."""
    names = set(getattr(transformer, "_repeated_blocks", None) or [])
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    return blocks or list(getattr(transformer, "transformer_blocks", []))


def compile_blocks(transformer, fullgraph: bool = True) -> int:
    blocks = repeated_blocks(transformer)
    for block in blocks:
        block.compile(fullgraph=fullgraph)
    return len(blocks)


def uncompile(transformer) -> None:
    """Back to eager (for benchmarks that try several setups on one model)."""
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------- 5. compile caches


def compile_cache_dir() -> Path:
    return config.cache_dir() / "compile"


def use_persistent_compile_cache() -> str:
    """Point inductor's on-disk caches (FX graphs, AOT autograd, Triton kernels, autotuning) into the Popcorn cache
    folder, unless TORCHINDUCTOR_CACHE_DIR was set to somewhere other than torch's per-boot default in /tmp."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir  # inductor: loaded only to compile

    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current and current != default_cache_dir():
        return current
    folder = compile_cache_dir() / "inductor"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    return str(folder)


def artifact_path(model: str, width: int, height: int, frames: int, attention: str) -> Path:
    """The compiled-artifacts file for one model, shape and attention kernel (and torch version and GPU)."""
    kernel = "fa4" if attention.startswith("FlashAttention-4") else "sdpa"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    parts = [model, f"{width}x{height}x{frames}", kernel, f"torch{torch.__version__}", device]
    name = "-".join(re.sub(r"[^A-Za-z0-9.]+", "_", part) for part in parts)
    return compile_cache_dir() / "artifacts" / f"{name}.bin"


def load_artifacts(path: Path) -> bool:
    """Load saved compiled artifacts into torch's caches before compiling; False if there are none (or they do not
    load: then the render compiles as usual)."""
    if not path.exists():
        return False
    try:
        return torch.compiler.load_cache_artifacts(path.read_bytes()) is not None
    except Exception:
        return False


def save_artifacts(path: Path) -> bool:
    """Save what this process compiled so far (torch's mega-cache) to `path`."""
    try:
        saved = torch.compiler.save_cache_artifacts()
    except Exception:
        return False
    if saved is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    partial.write_bytes(saved[0])
    partial.replace(path)
    return True


# ---------------------------------------------------------------------------------------------------- together


@dataclass
class FastPath:
    """What make_fast did, and the context each pipeline call must run in."""

    steps: list[str] = field(default_factory=list)
    attention: str = "default SDPA"
    compiled_blocks: int = 0
    _attention_context: Callable[[], contextlib.AbstractContextManager] | None = None
    _tuning: bool = False
    compiled: bool = False  # the first call (which compiles) has run through

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """SDPA's kernel choice; while the first call compiles, inductor's tuning and a compile-cache tag naming the
        attention kernel (the kernel is chosen when a graph is traced, and torch's on-disk caches do not key on that
        choice: without the tag a graph traced for one kernel is reused for the other)."""
        with contextlib.ExitStack() as stack:
            if self._attention_context is not None:
                stack.enter_context(self._attention_context())
            if not self.compiled:
                import torch._inductor.config as inductor_config  # inductor: loaded only to compile
                import torch.compiler.config as compiler_config

                tag = "popcorn-fa4" if self._attention_context is not None else "popcorn-default-sdpa"
                stack.enter_context(compiler_config.patch(cache_key_tag=tag))
                if self._tuning:
                    stack.enter_context(inductor_config.patch(coordinate_descent_tuning=True))
                simd_bits = aten_simd_bits()
                if simd_bits:
                    stack.enter_context(inductor_config.patch({"cpp.simdlen": simd_bits}))
            yield
        self.compiled = True

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "attention": self.attention, "compiled_blocks": self.compiled_blocks}


def aten_simd_bits() -> int | None:
    """The vector width ATen's CPU kernels were held to (`ATEN_CPU_CAPABILITY`), for inductor's CPU code to use the same.
    Inductor picks its own from the CPU; where the two disagreed (ATen held to AVX2 on an AVX-512 CPU, as people do to
    avoid AVX-512 clocks or to emulate a plainer CPU) the compiled blocks gave wrong frames, a mean pixel difference of
    ~140 from the plain render (tests/test_video_speed.py), and with inductor's width pinned to either 256 or 512 the
    same frames. None where the variable is not set: inductor's own choice."""
    return {"avx2": 256, "avx512": 512}.get(os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower())


def undo_fast(pipe) -> None:
    """Back to the plain path on a loaded pipeline: eager, unfused, plain GELU (attention follows the context only)."""
    for transformer in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)):
        if transformer is None:
            continue
        uncompile(transformer)
        use_gelu_epilogue(transformer, on=False)
        with contextlib.suppress(Exception):
            transformer.unfuse_qkv_projections()


def make_fast(pipe, *, fuse: bool = True, gelu: bool = True, attention: str = "auto", compile: bool = True,
              tuning: bool = True) -> FastPath:
    """Apply the fast path to every video transformer of a loaded pipeline (see the module's docstring).

    attention: "auto" tries FlashAttention-4 and falls back to the default; "default" keeps PyTorch's choice.
    """
    fast = FastPath()
    transformers = [t for t in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None)) if t]
    for transformer in transformers:
        if fuse:
            try:
                transformer.fuse_qkv_projections()
                fast.steps.append(f"fused QKV ({type(transformer).__name__})")
            except Exception as exc:  # not every attention processor can fuse
                fast.steps.append(f"QKV not fused: {type(exc).__name__}")
        if gelu:
            count = use_gelu_epilogue(transformer)
            if count:
                fast.steps.append(f"GEMM+GELU epilogue in {count} feed-forward layers")
    if attention == "auto":
        fast._attention_context, fast.attention = flash_attention_4()
    fast.steps.append(f"attention: {fast.attention}")
    if compile:
        use_persistent_compile_cache()
        for transformer in transformers:
            fast.compiled_blocks += compile_blocks(transformer)
        fast._tuning = tuning
        fast.steps.append(f"torch.compile of {fast.compiled_blocks} repeated blocks"
                          + (" (coordinate-descent tuning)" if tuning else ""))
    return fast
