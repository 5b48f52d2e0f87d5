"""The render path's memory, recipe and progress decisions, on the CPU with tiny pipelines of the real classes.

GPU memory readings are injected at popcorn/serve/resident.py's boundary (`gpu_memory`, `gpu_allocated`) and placement on
the GPU is recorded instead of done (`DiffusersGenerator._place`): everything else (loading with from_pretrained,
the decisions, eviction, the pipeline calls) is the real code. bench/gpu_path.py runs the same path on a real GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from popcorn import compose as compose_module  # noqa: E402
from popcorn.serve import resident  # noqa: E402
from popcorn.types import StageError  # noqa: E402
from popcorn.video import DiffusersGenerator, RenderRequest, get_generator  # noqa: E402
from popcorn.video.diffusers_spec import check_recipe, pipeline_signature  # noqa: E402
from popcorn.video.hunyuan15 import HUNYUAN_15  # noqa: E402
from popcorn.video.ltx import LTX  # noqa: E402
from popcorn.video.speed import artifact_path  # noqa: E402
from popcorn.video.wan import WAN_1_3B, WAN_14B  # noqa: E402
from test_compose import tiny_cover_model  # noqa: E402,F401  (fixture)
from test_video_diffusers import (  # noqa: E402,F401  (saved_pipelines: a fixture)
    TINY_FRAMES, saved_pipelines, tiny_hunyuan15, tiny_ltx, tiny_spec, tiny_wan)

GIB = 1024**3


class FakeGpu:
    """Injected GPU readings: `free` is what PyTorch could still allocate; placing a pipeline on the GPU takes
    `weights` of it (and gives it back when that pipeline is released)."""

    def __init__(self, free_gib: float, total_gib: float = 80.0, weights_gib: float = 20.0):
        self.free, self.total, self.weights = free_gib * GIB, total_gib * GIB, weights_gib * GIB
        self.allocated = 0
        self.placed: list[str] = []  # modes placed, in order
        self.cache_emptied = 0
        self.on_gpu: list[weakref.ref] = []

    def memory(self):
        # weights of pipelines that were released and collected come back
        alive = [ref for ref in self.on_gpu if ref() is not None]
        gone = len(self.on_gpu) - len(alive)
        self.on_gpu = alive
        self.free += gone * self.weights
        self.allocated -= gone * self.weights
        return int(self.free), int(self.total)

    def place(self, pipe, mode: str) -> None:
        self.placed.append(mode)
        if mode == "gpu":
            self.free -= self.weights
            self.allocated += self.weights
            self.on_gpu.append(weakref.ref(pipe))


@pytest.fixture
def gpu(monkeypatch, tmp_path):
    fake = FakeGpu(free_gib=40)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(resident, "gpu_memory", fake.memory)
    monkeypatch.setattr(resident, "gpu_allocated", lambda: fake.allocated)
    real_free_cache = resident.free_cache

    def free_cache():
        fake.cache_emptied += 1
        real_free_cache()

    monkeypatch.setattr(resident, "free_cache", free_cache)
    monkeypatch.setattr(DiffusersGenerator, "_place", staticmethod(fake.place))
    # the tiny pipelines run on the CPU in float32 whatever the mode (the mode decides placement, recorded above)
    monkeypatch.setattr(DiffusersGenerator, "_dtype", lambda self, mode: torch.float32)
    yield fake
    for name in resident.held():  # leave nothing resident for the next test
        resident.make_room("")


def generator(spec, saved_pipelines, monkeypatch, build, **changes):
    spec = dataclasses.replace(tiny_spec(spec), **changes)
    monkeypatch.setenv(spec.env_var, str(saved_pipelines[build]))
    return DiffusersGenerator(spec)


def plain(**kw) -> RenderRequest:
    return RenderRequest(prompt="a cat runs on the beach", seed=1, speed="plain", **kw)


# --------------------------------------------------------------------------------------------- 1. memory


def test_auto_mode_is_decided_once_per_load(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    first = gen.render(plain())
    assert first.settings["memory_mode"] == "gpu" and gpu.placed == ["gpu"]
    assert gpu.free == 20 * GIB  # its own weights now take 20 of the 40 GiB
    second = gen.render(plain())
    # 20 GiB free would say model_offload; the mode chosen at load is kept, nothing reloads
    assert second.settings["memory_mode"] == "gpu" and gen.loads == 1 and gpu.placed == ["gpu"]
    assert any("auto, chosen at load" in note for note in second.notes)


def test_a_reload_that_keeps_the_auto_mode_says_why_once(gpu, saved_pipelines, monkeypatch, tmp_path):
    import shutil

    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    gen.render(plain())
    moved = shutil.copytree(saved_pipelines[tiny_ltx], tmp_path / "moved")
    monkeypatch.setenv(gen.spec.env_var, str(moved))  # the weights moved: a reload, the mode chosen at load kept
    gen.render(plain())
    kept = [note for note in gen.render(plain()).notes if "memory mode" in note]
    assert gen.loads == 2 and gpu.placed == ["gpu", "gpu"]
    assert len(kept) == 1 and kept[0].count("memory mode") == 1 and kept[0].count("chosen at load") == 1, kept
    assert kept[0].startswith("memory mode gpu (auto, chosen at load: 40 GiB usable of 80")


def test_auto_counts_what_this_generator_already_holds(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    gen.render(plain(memory_mode="gpu"))
    assert gen._held == 20 * GIB and gpu.free == 20 * GIB
    clip = gen.render(plain())  # auto: 20 free + 20 held = 40 >= 30 -> gpu, the same placement: no reload
    assert clip.settings["memory_mode"] == "gpu" and gen.loads == 1
    assert any("40 GiB usable" in note for note in clip.notes)


def test_auto_picks_offload_modes_from_the_readings(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=50, offload_gib=30)
    assert gen.render(plain()).settings["memory_mode"] == "model_offload"
    gen.release()
    gpu.free = 12 * GIB
    clip = gen.render(plain())
    assert clip.settings["memory_mode"] == "sequential_offload" and clip.settings["vae_tiling"] is True
    assert gen._pipe.vae.use_tiling  # offloading always tiles the decode
    assert gpu.placed == ["model_offload", "sequential_offload"]


def test_an_explicit_mode_change_reloads(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    gen.render(plain(memory_mode="gpu"))
    gen.render(plain(memory_mode="model_offload"))
    assert gen.loads == 2 and gpu.placed == ["gpu", "model_offload"]
    assert gpu.memory()[0] == 40 * GIB  # the first placement's weights were given back (collected)


def test_loading_a_model_releases_the_others_and_empties_the_cache(gpu, saved_pipelines, monkeypatch):
    ltx = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    wan = generator(WAN_1_3B, saved_pipelines, monkeypatch, tiny_wan, gpu_gib=30, offload_gib=10)
    ltx.render(plain())
    ltx_pipe = weakref.ref(ltx._pipe)
    assert resident.held() == [ltx._holder]
    emptied = gpu.cache_emptied
    clip = wan.render(plain())
    gc.collect()
    assert ltx._pipe is None and ltx_pipe() is None  # released and gone, not only forgotten
    assert resident.held() == [wan._holder] and gpu.cache_emptied > emptied
    # with LTX's 20 GiB given back before the reading, Wan sees all 40 and loads on the GPU too
    assert clip.settings["memory_mode"] == "gpu" and gpu.free == 20 * GIB
    # back to LTX: it loads again (it was released) and decides its mode afresh from the readings of that moment
    gpu.free -= 15 * GIB  # something outside popcorn took 15 GiB meanwhile
    again = ltx.render(plain())
    assert ltx.loads == 2 and wan._pipe is None
    assert again.settings["memory_mode"] == "model_offload"  # 40 - 15 = 25 usable once Wan is gone: < 30


def test_the_cover_model_and_the_video_model_evict_each_other(gpu, saved_pipelines, monkeypatch, tiny_cover_model):
    ltx = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10)
    ltx.render(plain())
    image = compose_module.generate_cover_image(str(tiny_cover_model), "lanterns", 64, 96)
    assert image.size == (64, 96)
    assert ltx._pipe is None and resident.held() == [f"cover:{tiny_cover_model}"]
    ltx.render(plain())
    assert compose_module._COVER_PIPELINES == {} and resident.held() == [ltx._holder]


def test_a_limit_above_one_keeps_that_many_and_zero_keeps_all(gpu, saved_pipelines, monkeypatch):
    released = []
    for name in ("a", "b", "c"):
        resident.hold(name, lambda name=name: released.append(name))
    monkeypatch.setenv("POPCORN_RESIDENT_MODELS", "0")  # ZeroGPU: every enabled backend stays loaded
    assert resident.make_room("d") == [] and released == []
    resident.set_limit(2)
    try:
        assert resident.make_room("d") == ["a", "b"] and released == ["a", "b"]  # oldest first; c and d fit
        assert resident.held() == ["c"]
    finally:
        resident.set_limit(None)
    assert resident.limit() == 0  # back to the environment's
    monkeypatch.delenv("POPCORN_RESIDENT_MODELS")
    assert resident.limit() == 1 and resident.make_room("d") == ["c"]


def test_vae_tiling_where_the_untiled_decode_would_not_fit(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx, gpu_gib=30, offload_gib=10, decode_gib=12)
    clip = gen.render(plain())  # 20 GiB usable with the model loaded; the decode needs 12 at this (default) request
    assert clip.settings["vae_tiling"] is False and not gen._pipe.vae.use_tiling
    gen.spec = dataclasses.replace(gen.spec, decode_gib=19)  # over 90% of the 20 GiB left
    clip = gen.render(plain())
    assert clip.settings["vae_tiling"] is True and gen._pipe.vae.use_tiling and gen.loads == 1
    assert any("VAE tiling on: an untiled decode at 64x96x9 needs ~19 GiB, 20 GiB usable" in n for n in clip.notes)


def test_the_decode_estimate_scales_with_pixels_and_frames():
    gen = DiffusersGenerator(LTX)  # measured at its default request: 480x832, 73 frames (3 s)
    at = lambda w, h, f: gen.decode_gib(RenderRequest(prompt="x", width=w, height=h, num_frames=f))  # noqa: E731
    assert at(480, 832, 73) == pytest.approx(LTX.decode_gib)
    assert at(832, 480, 73) == pytest.approx(LTX.decode_gib)
    assert at(480, 832, 145) == pytest.approx(LTX.decode_gib * 145 / 73)
    assert at(720, 1280, 73) == pytest.approx(LTX.decode_gib * 720 * 1280 / (480 * 832))


# --------------------------------------------------------------------------------------------- 2. recipe


def test_every_adapter_takes_its_overrides_and_defaults_come_from_the_pipeline():
    for name in ("ltx", "cogvideox-5b", "cogvideox-2b", "hunyuan", "hunyuan-1.5", "wan-1.3b", "wan-14b"):
        spec = get_generator(name).spec
        check_recipe(spec)  # raises on an argument the pipeline does not take
        _, defaults = pipeline_signature(spec.pipeline_class)
        req, _ = get_generator(name).snap(RenderRequest(prompt="x"))
        assert req.steps == defaults["num_inference_steps"] == 50, name
        kwargs = get_generator(name).call_kwargs(req)
        assert "guidance_scale" not in kwargs, name  # the pipeline's own guidance
        for key, (value, why) in spec.overrides.items():
            assert kwargs[key] == value and len(why) > 20, (name, key)
    assert set(get_generator("ltx").spec.overrides) == {"decode_timestep", "decode_noise_scale"}


def test_an_override_the_pipeline_does_not_take_is_refused_at_load(gpu, saved_pipelines, monkeypatch):
    gen = generator(LTX, saved_pipelines, monkeypatch, tiny_ltx,
                    overrides={"decode_timestep": (0.03, "x"), "guidance_scal": (3.0, "typo")})
    with pytest.raises(StageError, match="takes no argument guidance_scal") as err:
        gen.render(plain())
    assert err.value.stage == "render" and gen._pipe is None and gen.loads == 0


def test_wan_loads_its_vae_in_float32(saved_pipelines, monkeypatch):
    monkeypatch.setenv(WAN_1_3B.env_var, str(saved_pipelines[tiny_wan]))
    gen = DiffusersGenerator(WAN_1_3B)
    dtype = gen._dtype("gpu")
    assert dtype == {"default": torch.bfloat16, "vae": torch.float32}
    pipe = diffusers.WanPipeline.from_pretrained(saved_pipelines[tiny_wan], torch_dtype=dtype)
    assert pipe.vae.dtype == torch.float32 and pipe.transformer.dtype == torch.bfloat16
    assert DiffusersGenerator(LTX)._dtype("gpu") == torch.bfloat16 and gen._dtype("cpu") == torch.float32


def test_wan_14b_takes_its_flow_shift_at_720p(saved_pipelines, monkeypatch):
    monkeypatch.setenv(WAN_14B.env_var, str(saved_pipelines[tiny_wan]))
    gen = DiffusersGenerator(WAN_14B)
    pipe = gen.pipeline("cpu")
    # the released checkpoint's scheduler (the tiny pipeline has another)
    pipe.scheduler = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                       flow_shift=3.0)
    gen._scheduler_config = dict(pipe.scheduler.config)
    for size, shift in (((720, 1280), 5.0), ((480, 832), 3.0), ((1280, 720), 5.0)):
        req, _ = gen.snap(RenderRequest(prompt="x", width=size[0], height=size[1]))
        notes = gen._apply_scheduler(pipe, req)
        assert pipe.scheduler.config.flow_shift == shift and f"flow_shift={shift}" in notes[0]
        assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"  # the checkpoint's class kept
        assert pipe.scheduler.config.solver_order == 2  # and the rest of its config
    # a scheduler without flow_shift (swapped in by someone) keeps its settings and says so
    pipe.scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)
    gen._scheduler_config, gen._scheduler_changes = dict(pipe.scheduler.config), {}
    notes = gen._apply_scheduler(pipe, gen.snap(RenderRequest(prompt="x"))[0])
    assert notes == ["FlowMatchEulerDiscreteScheduler has no flow_shift: kept its own settings"]
    assert pipe.scheduler.config.shift == 7.0
    gen.release()
    monkeypatch.setenv(WAN_1_3B.env_var, str(saved_pipelines[tiny_wan]))
    small = DiffusersGenerator(WAN_1_3B)
    pipe = small.pipeline("cpu")
    assert small._apply_scheduler(pipe, small.snap(RenderRequest(prompt="x"))[0]) == []  # the checkpoint's own
    small.release()


def test_clip_length_is_seconds_mapped_to_each_models_frame_counts(monkeypatch):
    monkeypatch.delenv("POPCORN_CLIP_SECONDS", raising=False)
    expected = {"ltx": (73, 24), "wan-1.3b": (49, 16), "wan-14b": (49, 16), "hunyuan": (73, 24),
                "hunyuan-1.5": (73, 24)}
    for name, (frames, fps) in expected.items():
        req, notes = get_generator(name).snap(RenderRequest(prompt="x"))
        assert (req.num_frames, req.fps) == (frames, fps) and notes == [], name
        assert abs(req.seconds - 3.0) < 0.1
    req, notes = get_generator("cogvideox-5b").snap(RenderRequest(prompt="x"))
    assert req.num_frames == 49 and any("49 frames only" in n and "6.1 s" in n for n in notes)
    req, _ = get_generator("ltx").snap(RenderRequest(prompt="x", seconds=5))
    assert req.num_frames == 121
    req, _ = get_generator("wan-1.3b").snap(RenderRequest(prompt="x", seconds=30))
    assert req.num_frames == 81  # the model's longest
    req, _ = get_generator("ltx").snap(RenderRequest(prompt="x", seconds=5, num_frames=33))
    assert req.num_frames == 33  # frames win over seconds
    monkeypatch.setenv("POPCORN_CLIP_SECONDS", "2")
    assert get_generator("ltx").snap(RenderRequest(prompt="x"))[0].num_frames == 49
    monkeypatch.setenv("POPCORN_CLIP_SECONDS", "soon")
    with pytest.raises(StageError, match="POPCORN_CLIP_SECONDS"):
        get_generator("ltx").snap(RenderRequest(prompt="x"))


# --------------------------------------------------------------------------------------------- 3. progress


def test_a_pipeline_without_step_callbacks_reports_each_step_and_cancels(saved_pipelines, monkeypatch, tmp_path):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(HUNYUAN_15.env_var, str(saved_pipelines[tiny_hunyuan15]))
    assert "callback_on_step_end" not in pipeline_signature("HunyuanVideo15Pipeline")[0]
    gen = DiffusersGenerator(tiny_spec(HUNYUAN_15, steps=3))
    seen = []
    clip = gen.render(plain(), progress=lambda f, msg: seen.append((round(f, 3), msg)))
    steps = [(f, msg) for f, msg in seen if "denoising step" in msg]
    assert steps == [(round((i + 1) / 3, 3), f"{HUNYUAN_15.label}: denoising step {i + 1}/3") for i in range(3)]
    assert clip.frames.shape[0] == TINY_FRAMES and "step" not in gen._pipe.scheduler.__dict__

    calls = []
    real_step = type(gen._pipe.scheduler).step
    monkeypatch.setattr(type(gen._pipe.scheduler), "step",
                        lambda self, *a, **k: calls.append(1) or real_step(self, *a, **k))

    def cancel_at_first_step(fraction, message):
        if "denoising step 1/" in message:
            raise StageError("render", "cancelled by the user")

    with pytest.raises(StageError, match="cancelled by the user"):
        gen.render(plain(), progress=cancel_at_first_step)
    assert len(calls) == 1  # stopped right after the first step, not at the end
    assert "step" not in gen._pipe.scheduler.__dict__  # the wrapper is gone again
    gen.release()


def test_without_callback_or_scheduler_progress_says_when_cancel_works():
    gen = DiffusersGenerator(LTX)

    class NoHooks:
        scheduler = None

        def __call__(self, prompt=None):
            return "ran"

    notes, kwargs = [], {}
    with gen._step_reports(NoHooks(), kwargs, 10, lambda f, m: None, notes):
        pass
    assert kwargs == {} and "Cancel takes effect when the render returns" in notes[0]


# --------------------------------------------------------------------------------------------- 4. compile cache


def test_compiled_artifacts_are_keyed_by_model_shape_and_kernel(monkeypatch, tmp_path):
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    a = artifact_path("ltx", 480, 832, 73, "default SDPA (no CUDA GPU)")
    assert a.parent == tmp_path / "compile" / "artifacts" and a.name.startswith("ltx-480x832x73-sdpa-torch")
    assert artifact_path("ltx", 480, 832, 73, "FlashAttention-4 through SDPA") != a
    assert artifact_path("ltx", 832, 480, 73, "default SDPA") != a
    assert artifact_path("wan-1.3b", 480, 832, 73, "default SDPA") != a
