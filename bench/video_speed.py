r"""Video generation speed on one GPU: full-size architectures with random weights, three ways of running them.

For each model the real diffusers pipeline class runs with the full-size transformer and VAE built from the configs
in ../shared/model-configs (random weights; no text encoder: random prompt embeddings of the real shape go in),
at a 9:16 size (CogVideoX: its only size, 720x480) and the default frame count of popcorn's adapter:

  (a) demo     what public demos deploy: bf16, CPU offload + VAE tiling/slicing. Model CPU offload for LTX-Video
               and Wan (their model cards); sequential CPU offload for CogVideoX (THUDM's cli_demo.py and model card)
  (b) plain    bf16, everything on the GPU, diffusers defaults (PyTorch SDPA picks its kernel)
  (c) fast     popcorn's fast path, as `render --speed fast` runs it (popcorn/video/speed.py): fused QKV, the
               feed-forward's GEMM + tanh-GELU in one cuBLASLt call, FlashAttention-4 behind SDPA when the
               flash-attn-4 package is installed (else PyTorch's default kernel), regional torch.compile with
               coordinate-descent tuning. Variants (without FA4: /noattn, ...) are timed on one step's transformer
               forward(s); the fastest then runs through the real pipeline.

Measured in the same run: seconds per denoising step (median over the timed steps), total seconds for the timed
steps + VAE decode, peak GPU memory, speedups, FLOPs of one step counted with torch.utils.flop_counter on the real
inputs, the achieved TFLOP/s, the card's bf16 matmul rate (8192^3, random data), a torch.profiler breakdown of one
step's GPU time (attention / GEMM / compiled Triton / other kernels, and idle GPU time), and each variant's output
error against (b) on the same inputs (relative L2 of one step's transformer outputs).

Output-changing variants are timed apart and never count as (c): fp8 linear layers (torch._scaled_mm, per-row
scales for activations and per-output-channel scales for weights). For models whose pipeline runs the two
classifier-free-guidance passes separately (Wan), one batched forward is timed against the two.

    python bench/video_speed.py --configs .bench_configs --models ltx,wan-1.3b --steps 6 --out $OUT
    python bench/video_speed.py --models cogvideox-5b --demo sequential,model --variants fast --attention-bench --fp8
    python bench/video_speed.py --tiny            # a CPU dry run of the code paths with tiny random models
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from popcorn.video.speed import make_fast, undo_fast  # noqa: E402  (the path users get)

GIB = 1024**3


@dataclass
class BenchModel:
    name: str
    config_dir: str  # folder under --configs
    width: int
    height: int
    frames: int
    text_len: int
    text_dim: int
    call_kwargs: dict = field(default_factory=dict)
    attention_mask: bool = False  # the pipeline takes prompt_attention_mask (LTX)
    demo: str = "model"  # (a): what the model's own demo code deploys (see DEMOS)


MODELS = {
    "ltx": BenchModel("ltx", "ltx-video", 480, 832, 121, 128, 4096,
                      {"guidance_scale": 3.0, "frame_rate": 24, "decode_timestep": 0.03, "decode_noise_scale": 0.025},
                      attention_mask=True),
    "wan-1.3b": BenchModel("wan-1.3b", "wan2.1-t2v-1.3b", 480, 832, 81, 512, 4096, {"guidance_scale": 5.0}),
    # CogVideoX's own demo (THUDM/CogVideo inference/cli_demo.py, and its model card) runs sequential CPU offload
    "cogvideox-5b": BenchModel("cogvideox-5b", "cogvideox-5b", 720, 480, 49, 226, 4096, {"guidance_scale": 6.0},
                               demo="sequential"),
}
DEMOS = {  # (a) setups: how the pipeline's weights move between CPU and GPU; VAE tiling + slicing with each
    "model": "enable_model_cpu_offload",
    "sequential": "enable_sequential_cpu_offload",
}
DEFAULT_STEPS = 50  # popcorn's adapters (and the diffusers pipelines) default to 50 denoising steps


def log(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def environment() -> dict:
    """torch and diffusers versions, and the GPU (name, total GiB) if there is one."""
    found: dict = {"torch": torch.__version__}
    try:
        import diffusers

        found["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        found["device"] = torch.cuda.get_device_name()
        found["gpu_total_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 1)
    return found


# ------------------------------------------------------------------------------------------------------ building


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def build_pipeline(model: BenchModel, configs: Path, device: str, dtype: torch.dtype):
    """The real pipeline class with a random full-size transformer and VAE, the real scheduler, no text encoder."""
    import diffusers

    root = configs / model.config_dir
    index = load_json(root / "model_index.json")
    parts = {}
    for part in ("transformer", "vae"):
        cfg = load_json(root / part / "config.json")
        cls = getattr(diffusers, cfg["_class_name"])
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                parts[part] = cls.from_config(cfg).eval()
        finally:
            torch.set_default_dtype(previous)
    sched_cfg = load_json(root / "scheduler" / "scheduler_config.json")
    scheduler = getattr(diffusers, sched_cfg["_class_name"]).from_config(sched_cfg)
    pipeline_cls = getattr(diffusers, index["_class_name"])
    kwargs = {"transformer": parts["transformer"], "vae": parts["vae"], "scheduler": scheduler,
              "text_encoder": None, "tokenizer": None}
    if index["_class_name"] == "WanPipeline":
        kwargs["transformer_2"] = None
    pipe = pipeline_cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pipeline(model: BenchModel):
    """CPU dry run only: tiny components of the same classes (see tests/test_video_diffusers.py)."""
    root = Path(__file__).resolve().parent.parent
    sys.path[:0] = [str(root), str(root / "tests")]
    import test_video_diffusers as tiny  # noqa: E402  (the tiny pipelines of the tests)

    builders = {"ltx": tiny.tiny_ltx, "wan-1.3b": tiny.tiny_wan, "cogvideox-5b": tiny.tiny_cogvideox}
    pipe = builders[model.name]()
    for name in ("text_encoder", "tokenizer"):
        setattr(pipe, name, None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_inputs(model: BenchModel, device: str, dtype: torch.dtype) -> dict:
    g = torch.Generator("cpu").manual_seed(1234)
    pos = (torch.randn(1, model.text_len, model.text_dim, generator=g) * 0.2).to(device, dtype)
    neg = (torch.randn(1, model.text_len, model.text_dim, generator=g) * 0.2).to(device, dtype)
    inputs = {"prompt_embeds": pos, "negative_prompt_embeds": neg}
    if model.attention_mask:
        mask = torch.ones(1, model.text_len, dtype=torch.long, device=device)
        inputs.update({"prompt_attention_mask": mask, "negative_prompt_attention_mask": mask.clone()})
    return inputs


# ------------------------------------------------------------------------------------------------------ running


def call_pipeline(pipe, model: BenchModel, inputs: dict, size: tuple[int, int, int], steps: int, output_type: str,
                  context=contextlib.nullcontext, **extra):
    """One pipeline call at the bench's size, seed 0, the model's call arguments, inside `context`."""
    width, height, frames = size
    with torch.inference_mode(), context():
        return pipe(**inputs, width=width, height=height, num_frames=frames, num_inference_steps=steps,
                    generator=torch.Generator("cpu").manual_seed(0), output_type=output_type, **model.call_kwargs,
                    **extra)


def timed_call(pipe, model: BenchModel, inputs: dict, steps: int, size: tuple[int, int, int],
               context=contextlib.nullcontext) -> dict:
    """One pipeline call: per-step times from callback_on_step_end, total with decode, peak memory."""
    stamps: list[float] = []

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        sync()
        stamps.append(time.perf_counter())
        return callback_kwargs

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    out = call_pipeline(pipe, model, inputs, size, steps, "np", context, callback_on_step_end=on_step_end)
    sync()
    end = time.perf_counter()
    step_times = [b - a for a, b in zip(stamps, stamps[1:])]
    return {
        "steps": steps,
        "first_step_s": round(stamps[0] - start, 4) if stamps else None,
        "step_s": round(statistics.median(step_times), 4) if step_times else None,
        "step_s_all": [round(s, 4) for s in step_times],
        "decode_s": round(end - stamps[-1], 3) if stamps else None,
        "total_s": round(end - start, 3),
        "peak_gib": round(torch.cuda.max_memory_allocated() / GIB, 2) if torch.cuda.is_available() else None,
        "frames_shape": list(out.frames[0].shape),
        "finite": bool(torch.isfinite(torch.as_tensor(out.frames[0])).all()),
    }


def warm_up(pipe, model: BenchModel, inputs: dict, size: tuple[int, int, int], context=contextlib.nullcontext):
    """Two denoising steps so lazy init and compilation stay out of the timed runs."""
    sync()
    start = time.perf_counter()
    call_pipeline(pipe, model, inputs, size, 2, "latent", context)
    sync()
    return round(time.perf_counter() - start, 2)


def capture_step_inputs(pipe, model, inputs, size) -> list[tuple[tuple, dict]]:
    """The transformer's (args, kwargs) for every forward call of the first denoising step."""
    calls: list[tuple[tuple, dict]] = []
    state = {"step": 0}

    def pre_hook(_module, args, kwargs):
        if state["step"] == 0:
            clone = lambda v: v.detach().clone() if torch.is_tensor(v) else v  # noqa: E731
            calls.append((tuple(clone(a) for a in args), {k: clone(v) for k, v in kwargs.items()}))

    def on_step_end(_pipe, _i, _t, callback_kwargs):
        state["step"] += 1
        return callback_kwargs

    handle = pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        call_pipeline(pipe, model, inputs, size, 2, "latent", callback_on_step_end=on_step_end)
    finally:
        handle.remove()
    return calls


def forward(transformer, calls, context=contextlib.nullcontext) -> list[torch.Tensor]:
    """One denoising step's transformer forward(s) on the captured inputs; outputs cloned (CUDA graphs reuse them)."""
    outs = []
    with torch.inference_mode(), context():
        if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()
        for args, kwargs in calls:
            out = transformer(*args, **kwargs)
            outs.append((out[0] if isinstance(out, (tuple, list)) else out.sample).clone())
    return outs


def count_flops(transformer, calls) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        forward(transformer, calls)
    return float(counter.get_total_flops())


def time_forward(transformer, calls, context=contextlib.nullcontext, repeats: int = 3, warm: int = 1) -> float:
    for _ in range(warm):
        forward(transformer, calls, context)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(transformer, calls, context)
        sync()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4)


def rel_err(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x.float() - y.float()).norm() ** 2) for x, y in zip(a, b))
    den = sum(float(y.float().norm() ** 2) for y in b)
    return round((num / max(den, 1e-30)) ** 0.5, 5)


def gpu_seconds(fn, repeats: int, warm: int = 1) -> float:
    """Median GPU time of fn() in seconds, from CUDA events around each call, after `warm` untimed calls."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def attention_tflops(b: int, h: int, s: int, d: int, seconds: float) -> float:
    return round(4 * b * h * s * s * d / seconds / 1e12, 1)


def matmul_tflops(n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / gpu_seconds(lambda: a @ b, repeats, warm=3) / 1e12


def attention_bench(shapes: dict[str, tuple[int, int, int, int]], repeats: int = 10) -> list[dict]:
    """SDPA alone at the models' self-attention shapes (batch, heads, tokens, head dim): each backend x layout."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    sdpa = torch.nn.functional.scaled_dot_product_attention
    rows = []
    for name, (b, h, s, d) in shapes.items():
        fused = torch.randn(b, s, 3, h, d, device="cuda", dtype=torch.bfloat16)
        layouts = {  # all as (batch, heads, tokens, dim) views
            "bshd": [torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in "qkv"],
            "bhsd": [torch.randn(b, h, s, d, device="cuda", dtype=torch.bfloat16) for _ in "qkv"],
            "fused-qkv view": [x.transpose(1, 2) for x in fused.unbind(2)],
        }
        for backend in ("CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION"):
            for layout, (q, k, v) in layouts.items():
                row = {"shape": name, "backend": backend, "layout": layout}
                try:
                    with sdpa_kernel(getattr(SDPBackend, backend)):
                        out = sdpa(q, k, v)
                        seconds = gpu_seconds(lambda: sdpa(q, k, v), repeats, warm=0)
                    row["ms"] = round(seconds * 1000, 3)
                    row["tflops"] = attention_tflops(b, h, s, d, seconds)
                    row["out_strides"] = list(out.stride())
                except Exception as exc:
                    row["error"] = f"{type(exc).__name__}: {str(exc)[:80]}"
                rows.append(row)
                log("sdpa", row)
        del fused, layouts
    from popcorn.video.speed import flash_attention_4

    fa4_active, how = flash_attention_4()  # a context in which SDPA runs FlashAttention-4, or None
    log("attention:", how)
    for name, (b, h, s, d) in shapes.items() if fa4_active is not None else []:
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in "qkv")
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            expected = sdpa(q, k, v)
        with fa4_active():
            out = sdpa(q, k, v)
            seconds = gpu_seconds(lambda: sdpa(q, k, v), repeats, warm=0)
        row = {"shape": name, "backend": "FA4 (through SDPA)", "layout": "bshd", "ms": round(seconds * 1000, 3),
               "tflops": attention_tflops(b, h, s, d, seconds), "rel_err_vs_cudnn": rel_err([out], [expected])}
        rows.append(row)
        log("sdpa", row)
    return rows


# ------------------------------------------------------------------------------------------------------ profiling

KERNEL_GROUPS = (  # first match wins; names as CUPTI reports them on Hopper
    ("attention", re.compile(r"sdpa|flash|fmha|attention|attn", re.I)),
    ("gemm", re.compile(r"gemm|nvjet|xmma|cutlass|cublas|matmul|_mm_|scaled_mm|triton_tem", re.I)),
    ("compiled (triton)", re.compile(r"^triton_", re.I)),
    ("copy/cat", re.compile(r"copy|memcpy|memset|cat|transpose|permute|contiguous", re.I)),
    ("norm", re.compile(r"norm", re.I)),
)


def kernel_group(name: str) -> str:
    for group, pattern in KERNEL_GROUPS:
        if pattern.search(name):
            return group
    return "other elementwise"


def profile_step(transformer, calls, context=contextlib.nullcontext) -> dict:
    """GPU time of one step's forward(s) by kernel group, and how much of the wall time the GPU sat idle."""
    from torch.profiler import ProfilerActivity, profile

    forward(transformer, calls, context)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        forward(transformer, calls, context)
        sync()
        wall = time.perf_counter() - start
    groups: dict[str, float] = defaultdict(float)
    kernels: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = event.time_range.elapsed_us()
        groups[kernel_group(event.name)] += us
        kernels[event.name[:90]] += us
    busy = sum(groups.values()) / 1e6
    return {
        "wall_s": round(wall, 4),
        "gpu_busy_s": round(busy, 4),
        "gpu_idle_share": round(1 - busy / wall, 3) if busy else None,
        "groups_s": {k: round(v / 1e6, 4) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_kernels_s": {k: round(v / 1e6, 4) for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:8]},
    }


# ---------------------------------------------------------------------------------------------------- optimising

FAST_OPTIONS = ("noattn", "nogelu", "nofuse", "nocdt")


def parse_variant(spec: str) -> dict:
    """'fast' is popcorn's fast path as users get it (popcorn/video/speed.py); '/noattn' keeps PyTorch's default
    attention kernel instead of trying FlashAttention-4, '/nogelu' drops the GEMM+GELU epilogue, '/nofuse' the fused
    QKV, '/nocdt' inductor's coordinate-descent tuning."""
    kind, *options = spec.split("/")
    if kind != "fast" or [o for o in options if o not in FAST_OPTIONS]:
        raise ValueError(f"unknown variant {spec!r}")
    return {"fuse": "nofuse" not in options, "gelu": "nogelu" not in options,
            "attention": "default" if "noattn" in options else "auto", "tuning": "nocdt" not in options}


class Fp8Linear(torch.nn.Module):
    """y = x W^T + b with x and W in float8 e4m3 (x: a scale per row, computed per call; W: a scale per output)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 448.0
        self.register_buffer("weight", (weight / scale).to(torch.float8_e4m3fn))  # (out, in), row-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, out)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        scale = rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        quant = (rows.float() / scale).to(torch.float8_e4m3fn)
        out = torch._scaled_mm(quant, self.weight.t(), scale_a=scale, scale_b=self.weight_scale, bias=self.bias,
                               out_dtype=x.dtype)
        return out.reshape(*x.shape[:-1], out.shape[-1])


def to_fp8(transformer) -> int:
    """Swap the nn.Linear layers inside the transformer blocks for Fp8Linear (sizes divisible by 16)."""
    swapped = 0
    for block_list in ("transformer_blocks", "blocks"):
        for block in getattr(transformer, block_list, []):
            for name, module in list(block.named_modules()):
                if not isinstance(module, torch.nn.Linear) or module.in_features % 16 or module.out_features % 16:
                    continue
                parent = block.get_submodule(name.rsplit(".", 1)[0]) if "." in name else block
                setattr(parent, name.rsplit(".", 1)[-1], Fp8Linear(module))
                swapped += 1
    return swapped


def try_variant(pipe, calls, reference, b_forward_s, flops, spec: str, before=None) -> dict:
    """Put the pipeline on variant `spec` of the fast path, warm up (compiles), time one step's forward(s), compare
    with (b). `before` runs first on the eager transformer (fp8: swap the linear layers)."""
    started = time.perf_counter()
    info: dict = {"variant": spec}
    transformer = pipe.transformer
    try:
        if before is not None:
            info["before"] = before(transformer)
        fast = make_fast(pipe, **parse_variant(spec))
        info.update(fast.to_dict())
        forward(transformer, calls, fast.context)  # compiles
        info["compile_s"] = round(time.perf_counter() - started, 1)
        info["forward_s"] = time_forward(transformer, calls, fast.context, repeats=3, warm=2)
        info["rel_err_vs_b"] = rel_err(forward(transformer, calls, fast.context), reference)
        info["x_vs_b_forward"] = round(b_forward_s / info["forward_s"], 3)
        info["tflops"] = round(flops / info["forward_s"] / 1e12, 1)
    except Exception as exc:
        traceback.print_exc()
        info["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    log("variant", info)
    return info


def cfg_batch_test(transformer, calls, context=contextlib.nullcontext) -> dict | None:
    """Two separate CFG forwards (cond, uncond) against one forward on the batch of both (same inputs)."""
    if len(calls) != 2:
        return None
    (args1, kw1), (args2, kw2) = calls
    if args1 or args2 or kw1.keys() != kw2.keys():
        return {"skipped": "positional arguments or different keywords"}
    merged = {}
    for key, v1 in kw1.items():
        v2 = kw2[key]
        if torch.is_tensor(v1) and v1.shape == v2.shape and v1.dim() >= 1:
            merged[key] = torch.cat([v1, v2])
        elif torch.is_tensor(v1) or v1 != v2:
            return {"skipped": f"cannot batch {key}"}
        else:
            merged[key] = v1
    separate_s = time_forward(transformer, calls, context, repeats=3)
    batched_s = time_forward(transformer, [((), merged)], context, repeats=3)
    split = list(forward(transformer, [((), merged)], context)[0].chunk(2))
    return {"separate_s": separate_s, "batched_s": batched_s, "x": round(separate_s / batched_s, 3),
            "rel_err_batched_vs_separate": rel_err(split, forward(transformer, calls, context))}


# -------------------------------------------------------------------------------------------------------- bench


def bench_model(model: BenchModel, args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    deadline = time.perf_counter() + args.budget_s
    result: dict = {"model": model.name}
    log(f"== {model.name}: building")
    if args.tiny:
        pipe = tiny_pipeline(model)
        size = (32, 32, 9)
        cfg = pipe.transformer.config
        text_dim = cfg.get("caption_channels") or cfg.get("text_dim") or cfg.get("text_embed_dim")
        model = BenchModel(model.name, "", 32, 32, 9, model.text_len, text_dim, model.call_kwargs,
                           model.attention_mask)
    else:
        pipe = build_pipeline(model, Path(args.configs), device, dtype)  # random init is fast on the GPU
        size = (model.width, model.height, model.frames)
    inputs = prompt_inputs(model, device, dtype)
    result["size"] = {"width": size[0], "height": size[1], "frames": size[2]}
    result["params_transformer"] = sum(p.numel() for p in pipe.transformer.parameters())
    steps = args.steps

    # (a) what public demos deploy: CPU offload (model, or sequential for CogVideoX) + VAE tiling/slicing
    for demo in (args.demo or [model.demo]) if device == "cuda" and "a" in args.configs_to_run else []:
        getattr(pipe, DEMOS[demo])()
        pipe.vae.enable_tiling()
        pipe.vae.enable_slicing()
        key = "a_demo" if "a_demo" not in result else f"a_{demo}"
        result[key] = {"setup": f"{DEMOS[demo]} + VAE tiling + slicing"}
        log(f"(a) {demo} offload: warm-up", warm_up(pipe, model, inputs, size))
        result[key].update(timed_call(pipe, model, inputs, steps, size))
        log(f"(a) {demo}", result[key])
        pipe.remove_all_hooks()
        pipe.vae.disable_tiling()
        pipe.vae.disable_slicing()
    pipe.to(device)

    # (b) plain bf16 on the GPU
    log("(b) plain: warm-up + capture")
    calls = capture_step_inputs(pipe, model, inputs, size)
    transformer = pipe.transformer
    result["transformer_calls_per_step"] = len(calls)
    flops = count_flops(transformer, calls)
    result["tflop_per_step"] = round(flops / 1e12, 2)
    log(f"FLOPs per step: {flops / 1e12:.1f} TFLOP in {len(calls)} transformer call(s)")
    reference = forward(transformer, calls)
    result["b_forward_s"] = b_forward_s = time_forward(transformer, calls, repeats=3)
    result["b_profile"] = profile_step(transformer, calls)
    log("(b) profile", result["b_profile"])
    if "b" in args.configs_to_run:
        result["b_plain"] = timed_call(pipe, model, inputs, steps, size)
        log("(b)", result["b_plain"])
    if len(calls) == 2:
        result["cfg_batching_eager"] = cfg_batch_test(transformer, calls)
        log("CFG batching (eager)", result["cfg_batching_eager"])

    # (c) popcorn's fast path (variants timed on one step's forward(s)); the fastest then runs through the pipeline
    variants = []
    for spec in args.variants:
        if time.perf_counter() > deadline - args.reserve_s:
            variants.append({"variant": spec, "skipped": "out of this model's time budget"})
            continue
        undo_fast(pipe)
        variants.append(try_variant(pipe, calls, reference, b_forward_s, flops, spec))
    result["c_variants"] = variants
    timed = sorted((v for v in variants if "forward_s" in v), key=lambda v: v["forward_s"])
    for candidate in timed if "c" in args.configs_to_run else []:
        undo_fast(pipe)
        fast = make_fast(pipe, **parse_variant(candidate["variant"]))
        setup = {"variant": candidate["variant"], **fast.to_dict()}
        try:
            setup["warm_up_s"] = warm_up(pipe, model, inputs, size, fast.context)
            result["c_fast"] = timed_call(pipe, model, inputs, steps, size, fast.context)
        except Exception as exc:
            traceback.print_exc()
            result.setdefault("c_failed", []).append({**setup, "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            continue
        result["c_setup"] = setup
        result["c_forward_rel_err_vs_b"] = rel_err(forward(transformer, calls, fast.context), reference)
        result["c_profile"] = profile_step(transformer, calls, fast.context)
        log("(c)", setup, result["c_fast"], "rel err vs (b):", result["c_forward_rel_err_vs_b"])
        log("(c) profile", result["c_profile"])
        break

    # output-changing: fp8 linear layers (never counted as (c)); QKV fused first, then the layers swapped
    if args.fp8 and timed and time.perf_counter() < deadline - args.reserve_s:
        undo_fast(pipe)

        def fp8_layers(t):
            with contextlib.suppress(Exception):
                t.fuse_qkv_projections()
            return to_fp8(t)

        spec = timed[0]["variant"] + ("" if "nofuse" in timed[0]["variant"] else "/nofuse")
        result["fp8"] = try_variant(pipe, calls, reference, b_forward_s, flops, spec, before=fp8_layers)

    # derived numbers
    for key in [k for k in result if k.startswith("a_")] + ["b_plain", "c_fast"]:
        run = result.get(key)
        if run and run.get("step_s"):
            run["tflops"] = round(flops / run["step_s"] / 1e12, 1)
            run["projected_default_steps_s"] = round(run["total_s"] + (DEFAULT_STEPS - steps) * run["step_s"], 2)
    a, b, c = result.get("a_demo"), result.get("b_plain"), result.get("c_fast")
    if b and c:
        result["c_vs_b_step"] = round(b["step_s"] / c["step_s"], 3)
    if a and c:
        result["c_vs_a_total"] = round(a["total_s"] / c["total_s"], 2)
        result["c_vs_a_default_steps"] = round(a["projected_default_steps_s"] / c["projected_default_steps_s"], 2)
    del pipe, calls, reference, transformer
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result


def table(results: dict) -> str:
    lines = []
    for res in results["models"]:
        if "error" in res:
            lines.append(f"### {res['model']}: FAILED {res['error']}")
            continue
        s = res["size"]
        lines.append(f"### {res['model']} ({s['width']}x{s['height']}, {s['frames']} frames, "
                     f"{res['tflop_per_step']} TFLOP/step in {res['transformer_calls_per_step']} forward(s))")
        lines.append(f"| config | s/step | total s | decode s | {DEFAULT_STEPS} steps s | peak GiB | TFLOP/s | "
                     f"step vs (b) | total vs (a) | {DEFAULT_STEPS} steps vs (a) |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        a = res.get("a_demo")
        rows = [(k, f"({k}) {res[k].get('setup', '')}") for k in res if k.startswith("a_")]
        for key, label in rows + [("b_plain", "(b) bf16 GPU"), ("c_fast", "(c) fast")]:
            run = res.get(key)
            if not run:
                continue
            vs_b = res["b_plain"]["step_s"] / run["step_s"] if res.get("b_plain") else float("nan")
            vs_a = a["total_s"] / run["total_s"] if a else float("nan")
            vs_a50 = a["projected_default_steps_s"] / run["projected_default_steps_s"] if a else float("nan")
            lines.append(f"| {label} | {run['step_s']:.3f} | {run['total_s']:.2f} | {run['decode_s']:.2f} | "
                         f"{run['projected_default_steps_s']:.1f} | {run['peak_gib']} | {run.get('tflops')} | "
                         f"{vs_b:.2f} | {vs_a:.2f} | {vs_a50:.2f} |")
        lines.append(f"forward-level (one step, b = {res['b_forward_s']} s)")
        for v in res.get("c_variants", []) + ([res["fp8"]] if res.get("fp8") else []):
            label = v["variant"] + (" + fp8 (changes output)" if v is res.get("fp8") else "")
            lines.append(f"  {label:32s} {v.get('attention', '')[:40]:40s} " + (
                f"{v['forward_s']:.4f} s  x{v['x_vs_b_forward']:.3f}  {v['tflops']} TFLOP/s  err {v['rel_err_vs_b']}"
                f"  compile {v['compile_s']} s" if "forward_s" in v else str(v.get("error") or v.get("skipped"))))
        if res.get("cfg_batching_eager"):
            lines.append(f"  CFG batching (eager): {res['cfg_batching_eager']}")
        for key in ("b_profile", "c_profile"):
            if res.get(key):
                p = res[key]
                lines.append(f"  {key}: wall {p['wall_s']} s, GPU busy {p['gpu_busy_s']} s, groups {p['groups_s']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=".bench_configs", help="a copy of shared/model-configs")
    parser.add_argument("--models", default="ltx,wan-1.3b")
    parser.add_argument("--steps", type=int, default=6, help="timed denoising steps per run")
    parser.add_argument("--variants", default="fast,fast/noattn",
                        help="variants of popcorn's fast path for (c): 'fast', optionally followed by "
                             + ", ".join("/" + o for o in FAST_OPTIONS) + " (see parse_variant)")
    parser.add_argument("--demo", default="",
                        help="(a) setups to run, comma-separated: model (model CPU offload), sequential (sequential CPU "
                             "offload); both with VAE tiling + slicing. Default: each model's documented demo setup")
    parser.add_argument("--attention-bench", action="store_true",
                        help="time SDPA alone per backend and q/k/v layout at LTX's and Wan's shapes")
    parser.add_argument("--fp8", action="store_true", help="also time fp8 linear layers (changes outputs)")
    parser.add_argument("--run", dest="configs_to_run", default="abc", help="which of a, b, c to run")
    parser.add_argument("--budget-s", type=float, default=1e9, help="seconds per model; later variants are skipped")
    parser.add_argument("--reserve-s", type=float, default=60, help="time kept back for the (c) pipeline run")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run with tiny models")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.demo = [v.strip() for v in args.demo.split(",") if v.strip()]
    try:
        for spec in args.variants:
            parse_variant(spec)
    except ValueError as exc:
        parser.error(str(exc))
    if [v for v in args.demo if v not in DEMOS]:
        parser.error(f"unknown demo setup in {args.demo}")

    results: dict = {**environment(), "models": [], "args": vars(args)}
    if torch.cuda.is_available():
        results["matmul_bf16_tflops"] = round(matmul_tflops(), 1)
        log("device", results["device"], "bf16 matmul", results["matmul_bf16_tflops"], "TFLOP/s")
        if args.attention_bench:
            results["attention_bench"] = attention_bench({"ltx (cfg batch 2, hd 64)": (2, 32, 6240, 64),
                                                          "wan (1 pass, hd 128)": (1, 12, 32760, 128),
                                                          "cogvideox-5b (cfg batch 2, hd 64)": (2, 48, 17776, 64)})
    out_path = Path(args.out) / f"video_speed_{args.models.replace(',', '_')}.json"
    for name in args.models.split(","):
        try:
            results["models"].append(bench_model(MODELS[name.strip()], args))
        except Exception as exc:
            traceback.print_exc()
            results["models"].append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        out_path.write_text(json.dumps(results, indent=1, default=str))
    peak = results.get("matmul_bf16_tflops")
    for res in results["models"]:
        for key in ("b_plain", "c_fast"):
            if peak and res.get(key, {}).get("tflops"):
                res[key]["share_of_matmul_peak"] = round(res[key]["tflops"] / peak, 3)
    out_path.write_text(json.dumps(results, indent=1, default=str))
    print(table(results), flush=True)
    print(json.dumps({k: v for k, v in results.items() if k not in ("models", "args")}), flush=True)


if __name__ == "__main__":
    main()
