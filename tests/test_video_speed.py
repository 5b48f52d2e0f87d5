"""The fast path (popcorn/video/speed.py): each exact step keeps the outputs, and renders on it match plain ones.

On this CPU machine the compile step runs through inductor's C++ backend and FlashAttention-4 reports itself
unavailable; the GPU numbers are bench/video_speed.py's job.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from popcorn.pipeline import Settings, check
from popcorn.types import StageError
from popcorn.video import RenderRequest
from popcorn.video.diffusers_base import DiffusersGenerator
from popcorn.video.ltx import LTX
from popcorn.video.speed import flash_attention_4, linear_gelu_tanh, make_fast, repeated_blocks, use_gelu_epilogue
from test_video_diffusers import saved_pipelines, tiny_ltx, tiny_spec, tiny_wan  # noqa: F401  (fixture)


def test_linear_gelu_tanh_matches_linear_then_tanh_gelu():
    g = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(2, 5, 16, generator=g), torch.randn(24, 16, generator=g), torch.randn(24, generator=g)
    expected = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b), approximate="tanh")
    got = linear_gelu_tanh(x, w, b)
    assert got.shape == (2, 5, 24)
    torch.testing.assert_close(got, expected)
    exact_gelu = torch.nn.functional.gelu(torch.nn.functional.linear(x, w, b))
    assert not torch.allclose(got, exact_gelu, atol=1e-6)  # it is the tanh approximation, as the models use
    torch.library.opcheck(linear_gelu_tanh, (x, w, b))


@pytest.mark.parametrize("build", [tiny_ltx, tiny_wan])
def test_gelu_epilogue_keeps_the_transformer_output(build, monkeypatch):
    import popcorn.video.speed as speed

    calls = []
    real_op = speed.linear_gelu_tanh
    monkeypatch.setattr(speed, "linear_gelu_tanh", lambda x, w, b: calls.append(1) or real_op(x, w, b))
    transformer = build().transformer.eval()
    cfg = transformer.config
    torch.manual_seed(1)
    if build is tiny_ltx:
        inputs = dict(hidden_states=torch.randn(1, 2 * 4 * 4, cfg.in_channels),
                      encoder_hidden_states=torch.randn(1, 6, cfg.caption_channels), timestep=torch.tensor([500]),
                      encoder_attention_mask=torch.ones(1, 6), num_frames=2, height=4, width=4)
    else:
        inputs = dict(hidden_states=torch.randn(1, cfg.in_channels, 2, 8, 8),
                      encoder_hidden_states=torch.randn(1, 6, cfg.text_dim), timestep=torch.tensor([500]))
    with torch.no_grad():
        before = transformer(**inputs, return_dict=False)[0]
        changed = use_gelu_epilogue(transformer)
        after = transformer(**inputs, return_dict=False)[0]
        served = len(calls)
        assert use_gelu_epilogue(transformer, on=False) == changed
        restored = transformer(**inputs, return_dict=False)[0]
    assert changed >= 1  # every block's feed-forward uses GELU(approximate="tanh")
    assert served == changed and len(calls) == served  # the op ran in each of them, and no longer once undone
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert torch.equal(restored, before)


def test_flash_attention_4_says_why_not_on_a_cpu_machine():
    context, how = flash_attention_4()
    assert context is None and "no CUDA GPU" in how


def test_repeated_blocks_are_found_for_each_family():
    assert len(repeated_blocks(tiny_ltx().transformer)) == 1  # _repeated_blocks names LTX's block class
    assert len(repeated_blocks(tiny_wan().transformer)) >= 1


def test_make_fast_reports_each_step_without_compiling():
    pipe = tiny_ltx()
    fast = make_fast(pipe, compile=False)
    assert fast.steps == ["fused QKV (LTXVideoTransformer3DModel)", "GEMM+GELU epilogue in 1 feed-forward layers",
                          "attention: default SDPA (no CUDA GPU)"]
    assert pipe.transformer.transformer_blocks[0].attn1.fused_projections  # the fusion really happened
    assert fast.attention.startswith("default SDPA") and fast.compiled_blocks == 0
    assert fast.to_dict()["attention"] == fast.attention


def test_fast_render_matches_the_plain_render(saved_pipelines, monkeypatch):  # noqa: F811
    """The whole fast path, compile included (inductor on the CPU), gives the plain path's frames."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv(LTX.env_var, str(saved_pipelines[tiny_ltx]))
    plain_gen, fast_gen = DiffusersGenerator(tiny_spec(LTX)), DiffusersGenerator(tiny_spec(LTX))
    plain = plain_gen.render(RenderRequest(prompt="a cat runs on a beach", seed=5, speed="plain"))
    torch._dynamo.reset()
    counters.clear()
    fast = fast_gen.render(RenderRequest(prompt="a cat runs on a beach", seed=5, speed="fast"))
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really compiled the block
    again = fast_gen.render(RenderRequest(prompt="a cat runs on a beach", seed=6, speed="fast"))

    assert plain.settings["speed"] == "plain"
    steps = fast.settings["speed"]["steps"]
    assert fast.settings["speed"]["compiled_blocks"] == 1 and any("torch.compile" in s for s in steps)
    assert fast.frames.shape == plain.frames.shape
    diff = np.abs(fast.frames.astype(int) - plain.frames.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8  # float sums reordered, nothing else
    assert fast_gen._pipe_key[2] is True and not np.array_equal(again.frames, fast.frames)  # seed still matters


def test_a_fast_path_that_cannot_compile_falls_back_to_plain(saved_pipelines, monkeypatch):  # noqa: F811
    """Where compilation cannot work (no compiler, an unsupported op), the render still comes out, on the plain path,
    and says why; later renders stay plain instead of failing again."""
    import popcorn.video.speed as speed

    real_make_fast = speed.make_fast

    def broken_make_fast(pipe, **kwargs):
        fast = real_make_fast(pipe, compile=False)

        def no_compiler():
            raise RuntimeError("inductor: no working C++ compiler")

        fast._attention_context = no_compiler
        return fast

    monkeypatch.setattr(speed, "make_fast", broken_make_fast)
    monkeypatch.setenv(LTX.env_var, str(saved_pipelines[tiny_ltx]))
    generator = DiffusersGenerator(tiny_spec(LTX))
    clip = generator.render(RenderRequest(prompt="a cat runs on a beach", seed=5, speed="fast"))
    plain = DiffusersGenerator(tiny_spec(LTX)).render(RenderRequest(prompt="a cat runs on a beach", seed=5,
                                                                     speed="plain"))
    assert any("fast path failed (RuntimeError: inductor: no working C++ compiler)" in n for n in clip.notes)
    assert clip.settings["speed"] == "plain"
    assert np.array_equal(clip.frames, plain.frames)  # GELU epilogue and fused QKV were undone too
    again = generator.render(RenderRequest(prompt="a dog", seed=1, speed="fast"))
    assert any("failed here before" in n for n in again.notes) and again.settings["speed"] == "plain"


def test_cancel_during_the_first_fast_render_is_not_mistaken_for_a_compile_failure(saved_pipelines,  # noqa: F811
                                                                                     monkeypatch):
    monkeypatch.setenv(LTX.env_var, str(saved_pipelines[tiny_ltx]))
    generator = DiffusersGenerator(tiny_spec(LTX))

    def cancel_at_first_step(fraction, message):
        if "denoising step" in message:
            raise StageError("render", "cancelled by the user")

    with pytest.raises(StageError, match="cancelled by the user"):
        generator.render(RenderRequest(prompt="a cat runs", seed=1, speed="fast"), progress=cancel_at_first_step)
    assert generator._fast_failed == "" and generator._fast is not None  # the fast path stays on for the next render


def test_auto_speed_is_plain_on_cpu_and_fast_is_refused_with_offload():
    generator = DiffusersGenerator(LTX)
    assert generator.choose_speed("auto", "cpu") == (False, [])
    assert generator.choose_speed("auto", "gpu") == (True, [])
    fast, notes = generator.choose_speed("fast", "model_offload")
    assert fast is False and "ignored under model_offload" in notes[0]
    with pytest.raises(StageError, match="unknown speed"):
        generator.choose_speed("turbo", "gpu")


def test_the_fast_render_matches_the_plain_one_with_aten_held_to_avx2():
    """ATEN_CPU_CAPABILITY=avx2 (set to avoid AVX-512 clocks, or to act as a plainer CPU) on a CPU with AVX-512: before
    inductor's vector width followed it (speed.aten_simd_bits), the compiled blocks' frames were ~140 grey levels off
    the plain render's. Its own process: ATen reads the variable once, at start."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_video_speed.py::test_fast_render_matches_the_plain_render"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout


def test_settings_check_memory_mode_and_speed_before_any_work():
    with pytest.raises(StageError, match="unknown speed") as err:
        check(Settings(query="street food", speed="ludicrous"))
    assert err.value.stage == "input"
    with pytest.raises(StageError, match="unknown memory mode"):
        check(Settings(query="street food", memory_mode="swap"))
    check(Settings(query="street food", memory_mode="sequential_offload", speed="plain"))


def test_cli_takes_memory_mode_and_speed():
    from popcorn.cli import build_parser

    args = build_parser().parse_args(["run", "street food", "--video", "ltx", "--out", "/tmp/x",
                                      "--memory-mode", "model_offload", "--speed", "plain"])
    assert (args.memory_mode, args.speed) == ("model_offload", "plain")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["render", "--plan", "p.json", "--out", "/tmp/x", "--speed", "warp"])
