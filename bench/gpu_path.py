r"""The render path users run (`DiffusersGenerator.render`, the path of `popcorn render`) on a GPU, at full size.

Full-size diffusers folders with random weights are built from the model configs (transformer + VAE + scheduler, and
HunyuanVideo-1.5's guider; random init on the GPU, saved with save_pretrained) and found by the generators through
POPCORN_VIDEO_<NAME>_PATH, exactly as a user's downloaded folder would be. Wan2.1-T2V-14B has no config folder: it is
derived from the 1.3B config with the 14B's published dimensions (40 layers, 40 heads of 128 = 5120 wide, FFN 13824).
Text encoders and tokenizers cannot be fetched offline: the folders have none, and the loaded pipeline's
`encode_prompt` is given random prompt embeddings of the real shape (LTX 128 x 4096 with its mask, Wan 512 x 4096,
CogVideoX 226 x 4096, HunyuanVideo 256 x 4096 + pooled 768, HunyuanVideo-1.5 1000 x 3584 + 256 x 1472), which every
pipeline accepts in place of a prompt. Everything else is the product's code: memory mode, eviction, VAE tiling,
scheduler, fast path, compile caches.

Parts (--parts, comma-separated; 'models' runs --speeds for each of --models):
  sequence   renders ltx, ltx, wan-1.3b, ltx, cogvideox-5b with the defaults (auto memory mode, auto speed, 3 s clip,
             the pipeline's own steps): mode, s/step, seconds, peak memory, what stays allocated after each render
             and which models are resident (nothing may pile up)
  models     every model of --models at its defaults, --steps steps: "plain" = speed="plain" with the VAE decode
             untiled (what an untiled decode costs); "fast" = speed="auto" (the fast path) with a torch.profiler
             breakdown of one compiled step; "offload" = memory_mode="model_offload" (the product tiles the decode)
  restart    LTX in two fresh processes sharing one Popcorn cache: cold start (import + load), first render (compiles
             or reads the compile cache), later render

    python bench/gpu_path.py --configs .mc --parts sequence,models,restart --speeds plain --out $OUT
    python bench/gpu_path.py --tiny --parts sequence,models,restart   # a CPU dry run with tiny models
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

import torch  # noqa: E402

from popcorn.serve import resident  # noqa: E402
from popcorn.video import DiffusersGenerator, RenderRequest  # noqa: E402
from popcorn.video import get_generator  # noqa: E402
from video_speed import environment, log, profile_step, sync  # noqa: E402  (bench/video_speed.py)

GIB = 1024**3
CONFIG_DIRS = {"ltx": "ltx-video", "wan-1.3b": "wan2.1-t2v-1.3b", "wan-14b": "wan2.1-t2v-14b",
               "cogvideox-5b": "cogvideox-5b", "cogvideox-2b": "cogvideox-2b", "hunyuan": "hunyuanvideo",
               "hunyuan-1.5": "hunyuanvideo-1.5-480p-t2v"}
WAN_14B_DIMS = {"num_attention_heads": 40, "num_layers": 40, "ffn_dim": 13824}  # Wan2.1 report / 14B config
SEQUENCE = ("ltx", "ltx", "wan-1.3b", "ltx", "cogvideox-5b")
PROMPT = "A street-food vendor flips a glowing pancake at night, steam rising, slow push-in, warm lantern light"


def gib(n: float) -> float:
    return round(n / GIB, 2)


# ------------------------------------------------------------------------------------------------------ folders


def model_configs(name: str, configs: Path) -> Path:
    """The config folder of `name`; Wan-14B's is written from the 1.3B's with the 14B's dimensions."""
    if name == "wan-14b" and not (configs / CONFIG_DIRS[name]).exists():
        source, target = configs / CONFIG_DIRS["wan-1.3b"], configs / CONFIG_DIRS[name]
        shutil.copytree(source, target)
        path = target / "transformer" / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **WAN_14B_DIMS}, indent=2))
    return configs / CONFIG_DIRS[name]


TINY_TEXT = {"ltx": "tiny_ltx", "wan": "tiny_wan", "cogvideox": "tiny_cogvideox", "hunyuan-1.5": "tiny_hunyuan15",
             "hunyuan": "tiny_hunyuan"}  # the tests' tiny pipelines, whose text encoders and tokenizers stand in


def build_folder(name: str, configs: Path, root: Path) -> Path:
    """A diffusers folder with random full-size transformer and VAE weights (bf16 on disk) and the checkpoint's
    scheduler (and guider). Text encoders and tokenizers cannot be fetched offline: tiny ones of the tests' pipelines
    stand in (from_pretrained needs every component), and `feed_embeddings` bypasses them."""
    import diffusers
    import test_video_diffusers as tiny

    folder = root / name
    if (folder / "model_index.json").exists():
        return folder
    source = model_configs(name, configs)
    started = time.perf_counter()
    index = json.loads((source / "model_index.json").read_text())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    folder.mkdir(parents=True, exist_ok=True)
    family = next(key for key in TINY_TEXT if name.startswith(key))
    stand_in = root / f"text-{family}"
    if not (stand_in / "model_index.json").exists():
        getattr(tiny, TINY_TEXT[family])().save_pretrained(stand_in)
    stand_in_index = json.loads((stand_in / "model_index.json").read_text())
    for part, entry in list(index.items()):
        if part.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        if part.startswith(("text_encoder", "tokenizer")):
            index[part] = stand_in_index[part]
            shutil.copytree(stand_in / part, folder / part, dirs_exist_ok=True)
            continue
        config = json.loads(next((source / part).glob("*.json")).read_text())
        if part in ("scheduler", "guider"):
            shutil.copytree(source / part, folder / part, dirs_exist_ok=True)
            continue
        cls = getattr(diffusers, config["_class_name"])
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
        try:
            with torch.device(device):
                model = cls.from_config(config)
        finally:
            torch.set_default_dtype(previous)
        model.save_pretrained(folder / part)
        del model
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    resident.free_cache()
    log(f"built {name} in {time.perf_counter() - started:.1f} s")
    return folder


# ----------------------------------------------------------------------------------------------- prompt input


def text_inputs(pipe, name: str) -> dict:
    """Random prompt embeddings of the real shape for this pipeline's encode_prompt (keyword -> tensor)."""
    cfg = pipe.transformer.config
    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    g = torch.Generator("cpu").manual_seed(1234)

    def embeds(tokens: int, width: int):
        return (torch.randn(1, tokens, width, generator=g) * 0.2).to(device, dtype)

    ones = lambda tokens: torch.ones(1, tokens, dtype=torch.long, device=device)  # noqa: E731
    if name == "ltx":
        return {"prompt_embeds": embeds(128, cfg.caption_channels), "prompt_attention_mask": ones(128),
                "negative_prompt_embeds": embeds(128, cfg.caption_channels),
                "negative_prompt_attention_mask": ones(128)}
    if name.startswith("wan"):
        return {"prompt_embeds": embeds(512, cfg.text_dim), "negative_prompt_embeds": embeds(512, cfg.text_dim)}
    if name.startswith("cogvideox"):
        return {"prompt_embeds": embeds(226, cfg.text_embed_dim),
                "negative_prompt_embeds": embeds(226, cfg.text_embed_dim)}
    if name == "hunyuan":
        return {"prompt_embeds": embeds(256, cfg.text_embed_dim), "prompt_attention_mask": ones(256),
                "pooled_prompt_embeds": embeds(1, cfg.pooled_projection_dim)[:, 0]}
    if name == "hunyuan-1.5":  # no quoted text in the prompt: byT5's glyph embeddings are zeros with a zero mask
        return {"prompt_embeds": embeds(1000, cfg.text_embed_dim), "prompt_embeds_mask": ones(1000),
                "prompt_embeds_2": torch.zeros(1, 256, cfg.text_embed_2_dim, device=device, dtype=dtype),
                "prompt_embeds_mask_2": torch.zeros(1, 256, dtype=torch.long, device=device)}
    raise KeyError(name)


def feed_embeddings(gen: DiffusersGenerator, name: str) -> None:
    """After each load, the pipeline's encode_prompt gets embeddings of the real shape instead of a text encoder."""
    load = gen.pipeline

    def pipeline(*args, **kwargs):
        pipe = load(*args, **kwargs)
        if "encode_prompt" not in pipe.__dict__:
            original = pipe.encode_prompt

            def encode_prompt(*a, **k):
                filled = {**k, **{key: v for key, v in text_inputs(pipe, name).items() if k.get(key) is None}}
                filled.pop("prompt_2", None) if name != "hunyuan" else None
                return original(*a, **filled)

            pipe.encode_prompt = encode_prompt
        return pipe

    gen.pipeline = pipeline


# ------------------------------------------------------------------------------------------------------- render


class Probe:
    """Step times (through the render's own progress reports), the decode's time and memory, and the transformer's
    inputs of the first step (for a profile)."""

    def __init__(self, capture: bool = False):
        self.stamps: list[float] = []
        self.capture = capture
        self.calls: list[tuple[tuple, dict]] = []
        self.decode: dict = {}

    def progress(self, fraction: float, message: str) -> None:
        if "denoising step" in message:
            sync()
            self.stamps.append(time.perf_counter())

    def attach(self, pipe):
        hooks = []
        if self.capture:
            def pre_hook(_module, args, kwargs):
                if not self.stamps:  # still in the first denoising step
                    clone = lambda v: v.detach().clone() if torch.is_tensor(v) else v  # noqa: E731
                    self.calls.append((tuple(clone(a) for a in args), {k: clone(v) for k, v in kwargs.items()}))

            hooks.append(pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True))
        vae = pipe.vae
        plain_decode = vae.decode

        def decode(*args, **kwargs):
            sync()
            denoise_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
            base = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            out = plain_decode(*args, **kwargs)
            sync()
            peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
            self.decode = {"s": round(time.perf_counter() - started, 2), "extra_gib": gib(peak - base),
                           "denoise_peak_gib": gib(denoise_peak), "decode_peak_gib": gib(peak),
                           "tiled": bool(getattr(vae, "use_tiling", False))}
            return out

        vae.decode = decode
        return lambda: ([h.remove() for h in hooks], vae.__dict__.pop("decode", None))

    def step_s(self) -> float | None:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        return round(statistics.median(gaps), 4) if gaps else None


def render(gen: DiffusersGenerator, req: RenderRequest, capture: bool = False, untiled: bool = False) -> dict:
    """One render through the product's path, measured."""
    probe = Probe(capture)
    row: dict = {"model": gen.name, "speed_asked": req.speed,
                 "allocated_before_gib": gib(resident.gpu_allocated()), "held_before": resident.held()}
    load = gen.pipeline
    detach = []

    def pipeline(*args, **kwargs):
        pipe = load(*args, **kwargs)
        detach.append(probe.attach(pipe))
        return pipe

    gen.pipeline = pipeline
    if untiled:
        gen.choose_tiling = lambda _req, _mode: (False, ["VAE tiling off (bench: measuring the untiled decode)"])
    started = time.perf_counter()
    try:
        clip = gen.render(req, progress=probe.progress)
    except Exception as exc:
        traceback.print_exc()
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return row
    finally:
        gen.pipeline = load
        gen.__dict__.pop("choose_tiling", None)
        for undo in detach:
            undo()
    sync()
    s = clip.settings
    row.update({
        "seconds": round(time.perf_counter() - started, 2), "load_s": s["seconds_to_load"],
        "call_s": s["seconds_to_call"], "memory_mode": s["memory_mode"], "vae_tiling": s["vae_tiling"],
        "speed": s["speed"] if s["speed"] == "plain" else {"attention": s["speed"]["attention"],
                                                          "compiled_blocks": s["speed"]["compiled_blocks"]},
        "size": f"{s['width']}x{s['height']}x{s['num_frames']}", "clip_s": s["seconds"], "steps": s["steps"],
        "s_per_step": probe.step_s(), "first_step_s": round(probe.stamps[0] - started, 2) if probe.stamps else None,
        "peak_gib": max(probe.decode.get("denoise_peak_gib", 0), s.get("peak_gpu_gib", 0)),
        "decode": probe.decode, "scheduler": s["scheduler"], "vae_dtype": s["vae_dtype"], "dtype": s["dtype"],
        "notes": clip.notes, "finite_frames": bool(clip.frames.std() > 0),
        "allocated_after_gib": gib(resident.gpu_allocated()), "held_after": resident.held(),
        "reserved_after_gib": gib(torch.cuda.memory_reserved()) if torch.cuda.is_available() else 0,
    })
    if capture and probe.calls and gen._fast is not None:
        try:
            row["profile"] = profile_step(gen._pipe.transformer, probe.calls, gen._fast.context)
        except Exception as exc:
            row["profile"] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    log(gen.name, json.dumps({k: v for k, v in row.items() if k != "notes"}))
    return row


# -------------------------------------------------------------------------------------------------------- parts


def generator(name: str, args) -> DiffusersGenerator:
    spec = get_generator(name).spec
    if args.tiny:
        from test_video_diffusers import tiny_spec

        spec = dataclasses.replace(tiny_spec(spec), steps=None)
    os.environ[spec.env_var] = str(args.folders[name])
    gen = DiffusersGenerator(spec)
    feed_embeddings(gen, name)
    return gen


def part_sequence(args, results) -> None:
    gens = {}
    rows = results.setdefault("sequence", [])
    for name in SEQUENCE:
        gen = gens.setdefault(name, generator(name, args))
        rows.append(render(gen, RenderRequest(prompt=PROMPT, seed=len(rows)), capture=name not in
                           {r["model"] for r in rows}))
        rows[-1]["loads_so_far"] = gen.loads
        args.save(results)
    for gen in gens.values():
        gen.release()


def part_models(args, results) -> None:
    """Each model of --models: its folder built, then one render per --speeds (plain: untiled decode), then its
    folder deleted if --drop-big and it is a big one (the disk holds one big folder at a time)."""
    for name in args.models:
        for speed in args.speeds:
            rows = results.setdefault(speed, [])
            if time.perf_counter() > args.deadline:
                rows.append({"model": name, "skipped": "out of this call's time budget"})
                continue
            try:
                args.folders[name] = build_folder(name, args.configs, args.root)
            except Exception as exc:
                traceback.print_exc()
                rows.append({"model": name, "error": f"build: {type(exc).__name__}: {str(exc)[:300]}"})
                continue
            gen = generator(name, args)
            req = RenderRequest(prompt=PROMPT, seed=1, steps=args.steps, speed="plain" if speed == "plain" else "auto",
                                memory_mode="model_offload" if speed == "offload" else "auto")
            rows.append(render(gen, req, capture=speed == "fast", untiled=speed == "plain"))
            gen.release()
            args.save(results)
        if args.drop_big and name in ("hunyuan", "wan-14b", "hunyuan-1.5"):
            shutil.rmtree(args.folders[name], ignore_errors=True)


RESTART_CHILD = r"""
import json, sys, time
started = time.perf_counter()
sys.argv = ["gpu_path.py"] + sys.argv[1:]
import gpu_path
args = gpu_path.parse()
from popcorn.video import RenderRequest
imported = time.perf_counter() - started
gen = gpu_path.generator("ltx", args)
rows = [gpu_path.render(gen, RenderRequest(prompt=gpu_path.PROMPT, seed=i)) for i in range(2)]
print("RESTART " + json.dumps({"import_s": round(imported, 2), "renders": rows,
                               "cold_start_to_first_video_s": round(time.perf_counter() - started, 2)}))
"""


def part_restart(args, results) -> None:
    cache = Path(args.root) / "restart-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "POPCORN_CACHE_DIR": str(cache)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    rows = results.setdefault("restart", [])
    for run in ("first process (empty cache)", "restarted process (same cache)"):
        argv = [sys.executable, "-c", RESTART_CHILD, "--configs", str(args.configs), "--root", str(args.root)]
        argv += ["--tiny"] if args.tiny else []
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT / "bench", env=env, capture_output=True, text=True, timeout=400)
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESTART ")]
        row = {"run": run, "process_s": round(time.perf_counter() - started, 2)}
        row.update(json.loads(line[-1][8:]) if line else {"error": done.stderr[-1500:]})
        rows.append(row)
        log("restart", json.dumps(row)[:1500])
        args.save(results)
    files = sorted(p.name for p in (cache / "compile" / "artifacts").glob("*")) if cache.exists() else []
    results["restart_artifacts"] = files


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=".mc", help="a copy of shared/model-configs")
    parser.add_argument("--root", default="/tmp/popcorn_models", help="where the random-weight folders are built")
    parser.add_argument("--parts", default="sequence")
    parser.add_argument("--models", default="ltx,wan-1.3b,cogvideox-5b")
    parser.add_argument("--speeds", default="plain,fast", help="the runs of part 'models', per model")
    parser.add_argument("--steps", type=int, default=6, help="denoising steps of the plain/fast runs")
    parser.add_argument("--budget-s", type=float, default=540, help="later models are skipped after this")
    parser.add_argument("--drop-big", action="store_true", help="delete a big model's folder after its fast run")
    parser.add_argument("--tiny", action="store_true", help="CPU dry run: tiny configs from the tests' pipelines")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args(argv)
    args.configs, args.root = Path(args.configs), Path(args.root)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.speeds = [m.strip() for m in args.speeds.split(",") if m.strip()]
    args.deadline = time.perf_counter() + args.budget_s
    if args.tiny:
        args.configs = tiny_configs(args.root / "tiny-configs")
    args.folders = {name: args.root / name for name in CONFIG_DIRS}
    return args


def tiny_configs(root: Path) -> Path:
    """Config folders of the tests' tiny pipelines, laid out like shared/model-configs (for --tiny)."""
    import test_video_diffusers as tiny

    builders = {"ltx": tiny.tiny_ltx, "wan-1.3b": tiny.tiny_wan, "cogvideox-5b": tiny.tiny_cogvideox,
                "cogvideox-2b": tiny.tiny_cogvideox, "hunyuan": tiny.tiny_hunyuan, "hunyuan-1.5": tiny.tiny_hunyuan15}
    for name, build in builders.items():
        folder = root / CONFIG_DIRS[name]
        if (folder / "model_index.json").exists():
            continue
        pipe = build()
        pipe.save_pretrained(folder)
        for part in folder.iterdir():  # configs only, as in shared/model-configs
            for weights in part.glob("*.safetensors") if part.is_dir() else []:
                weights.unlink()
    return root


def main() -> None:
    args = parse()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {**environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    path = out / f"gpu_path_{args.parts.replace(',', '_')}.json"
    args.save = lambda res: path.write_text(json.dumps(res, indent=1, default=str))
    log("device", results.get("device", "cpu"), "torch", torch.__version__)
    for name in ("ltx", "wan-1.3b", "cogvideox-5b"):
        if "sequence" in args.parts or "restart" in args.parts and name == "ltx":
            args.folders[name] = build_folder(name, args.configs, args.root)
    for part in args.parts.split(","):
        started = time.perf_counter()
        try:
            {"sequence": part_sequence, "models": part_models, "restart": part_restart}[part](args, results)
        except Exception as exc:
            traceback.print_exc()
            results[f"{part}_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        results[f"{part}_wall_s"] = round(time.perf_counter() - started, 1)
        args.save(results)
    print(summary(results), flush=True)


def summary(results: dict) -> str:
    lines = [f"device {results.get('device', 'cpu')}, torch {results['torch']}, diffusers {results.get('diffusers')}"]
    for part in ("sequence", "plain", "fast", "offload"):
        for r in results.get(part, []):
            if "error" in r or "skipped" in r:
                lines.append(f"{part:8s} {r['model']:12s} {r.get('error') or r.get('skipped')}")
                continue
            lines.append(f"{part:8s} {r['model']:12s} {r['memory_mode']:18s} {r['size']:14s} steps {r['steps']:3d} "
                         f"s/step {r['s_per_step']} load {r['load_s']} total {r['seconds']} peak {r['peak_gib']} "
                         f"decode {r['decode'].get('s')}s +{r['decode'].get('extra_gib')} GiB tiled "
                         f"{r['vae_tiling']} alloc {r['allocated_before_gib']}->{r['allocated_after_gib']} "
                         f"held {len(r['held_after'])}")
    for r in results.get("restart", []):
        renders = r.get("renders") or []
        lines.append(f"restart  {r['run']}: import {r.get('import_s')} s, first video after "
                     f"{r.get('cold_start_to_first_video_s')} s; renders " +
                     ", ".join(f"{x.get('seconds')} s (load {x.get('load_s')})" for x in renders) +
                     (f" ERROR {r['error'][-300:]}" if "error" in r else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
