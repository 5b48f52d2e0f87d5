"""compose: title overlay (Latin, CJK, emoji), H.264 MP4 that decodes, cover, metadata."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from popcorn.compose import best_frame_index, compose, overlay_title
from popcorn.types import StageError
from popcorn.video.base import Clip
from popcorn.video.text import has_emoji_glyph, has_main_glyph, is_emoji, text_block, wrap


def make_clip(frames: np.ndarray, fps: int = 24, **kw) -> Clip:
    t, h, w, _ = frames.shape
    return Clip(frames=frames, fps=fps, width=w, height=h, generator=kw.pop("generator", "test"),
                is_preview=kw.pop("is_preview", False), notes=[], settings={"seed": 0})


def gradient_clip(t=12, h=256, w=144, fps=12) -> Clip:
    y = np.linspace(0, 255, h, dtype=np.float32)[None, :, None, None]
    x = np.linspace(0, 255, w, dtype=np.float32)[None, None, :, None]
    k = np.arange(t, dtype=np.float32)[:, None, None, None]
    frames = np.concatenate([np.broadcast_to(y, (t, h, w, 1)), np.broadcast_to(x, (t, h, w, 1)),
                             np.broadcast_to((k * 20) % 255, (t, h, w, 1))], axis=3)
    return make_clip(frames.astype(np.uint8), fps=fps)


def decode(path):
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    return meta, [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]


def ffprobe_codec(path) -> str:
    import imageio_ffmpeg

    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True,
                         text=True).stderr
    return out


def test_compose_writes_video_cover_and_metadata(tmp_path):
    clip = gradient_clip()
    out = compose(clip, "Ten-second pasta hack", tmp_path, cover_prompt="a plate of pasta",
                  metadata={"plan": {"title": "Ten-second pasta hack"}, "query": "pasta"})
    assert out["video"] == str(tmp_path / "video.mp4") and out["cover"] == str(tmp_path / "cover.png")
    meta, frames = decode(out["video"])
    assert meta["size"] == (144, 256) and round(meta["fps"]) == 12 and len(frames) == 12
    info = ffprobe_codec(out["video"])
    assert "h264" in info and "yuv420p" in info
    # faststart: the moov atom comes before the media data
    data = (tmp_path / "video.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")

    doc = json.loads((tmp_path / "video.json").read_text(encoding="utf-8"))
    assert doc["title"] == "Ten-second pasta hack" and doc["extra"]["query"] == "pasta"
    assert doc["clip"]["num_frames"] == 12 and doc["cover_source"] == "frame"
    assert doc["cover_prompt"] == "a plate of pasta"

    from PIL import Image

    cover = np.asarray(Image.open(out["cover"]).convert("RGB"))
    assert cover.shape == (256, 144, 3)
    raw = clip.frames[out["cover_frame"]]
    x0, y0, x1, y1 = out["title_box"]
    assert np.abs(cover[y0:y1, x0:x1].astype(int) - raw[y0:y1, x0:x1].astype(int)).mean() > 10


def test_title_sits_inside_safe_margins_and_changes_only_its_region(tmp_path):
    clip = gradient_clip(t=4, h=854, w=480)
    titled, (x0, y0, x1, y1) = overlay_title(clip.frames, "How I made popcorn in a rice cooker and it worked")
    assert x0 >= 0.05 * 480 and x1 <= 0.95 * 480 and y0 >= 0.08 * 854 and y1 <= 0.45 * 854
    diff = np.abs(titled.astype(int) - clip.frames.astype(int)).sum(axis=3)
    assert diff[:, y0:y1, x0:x1].mean() > 20
    outside = diff.copy()
    outside[:, y0:y1, x0:x1] = 0
    assert outside.max() == 0


def test_emoji_and_cjk_title_renders_with_colour_emoji(tmp_path):
    assert has_main_glyph("爆") and has_main_glyph("한") and has_main_glyph("テ")
    assert is_emoji("🍿") and has_emoji_glyph("🎬") and not is_emoji("A")
    block = np.asarray(text_block("🍿🎬", 400, size=48, style=None))
    rgb = block[..., :3].astype(int)
    visible = block[..., 3] > 200
    saturation = rgb.max(axis=2) - rgb.min(axis=2)
    assert (saturation[visible] > 80).sum() > 200  # colour emoji, not a grey box

    clip = gradient_clip()
    flat = make_clip(np.full((6, 256, 144, 3), 90, np.uint8))
    for c in (clip, flat):
        out = compose(c, "爆米花之夜 🍿🎬 한국어 テスト", tmp_path / c.generator / str(id(c)))
        _, frames = decode(out["video"])
        x0, y0, x1, y1 = out["title_box"]
        assert np.abs(frames[0][y0:y1, x0:x1].astype(int) - c.frames[0][y0:y1, x0:x1].astype(int)).mean() > 10


def test_long_title_wraps_to_three_lines_with_ellipsis():
    lines = wrap("supercalifragilistic " * 3 + "中文标题测试" * 5, 40, 300)
    assert len(lines) > 3  # it needs wrapping at this size
    from popcorn.video.text import fit

    size, fitted = fit("word " * 200, 300, 3, 40, min_size=12)
    assert size == 12 and len(fitted) == 3 and fitted[-1].endswith("…")


def test_odd_frame_sizes_are_padded_for_yuv420p(tmp_path):
    clip = make_clip(np.random.default_rng(0).integers(0, 255, (5, 101, 57, 3), dtype=np.uint8), fps=8)
    out = compose(clip, "odd", tmp_path)
    meta, frames = decode(out["video"])
    assert meta["size"] == (58, 102) and len(frames) == 5


def test_best_frame_prefers_sharp_colourful_frames():
    rng = np.random.default_rng(0)
    frames = np.full((9, 120, 68, 3), 128, np.uint8)
    frames[6] = rng.integers(0, 255, (120, 68, 3), dtype=np.uint8)  # busy and colourful
    assert best_frame_index(frames) == 6


def test_empty_title_still_composes_with_a_note(tmp_path):
    out = compose(gradient_clip(t=3), "   ", tmp_path)
    assert out["title_box"] is None and any("no title" in n for n in out["notes"])


def test_bad_frames_are_a_compose_stage_error(tmp_path):
    with pytest.raises(StageError) as err:
        compose(make_clip(np.zeros((0, 8, 8, 3), np.uint8)), "x", tmp_path)
    assert err.value.stage == "compose"


def test_unloadable_cover_model_falls_back_to_a_frame_with_a_note(tmp_path):
    out = compose(gradient_clip(t=3), "cover", tmp_path, cover_prompt="x", cover_model=str(tmp_path / "no-model"))
    assert out["cover_source"] == "frame"
    assert any("cover model" in n for n in out["notes"])


def test_preview_flag_is_carried_into_metadata(tmp_path):
    from popcorn.video.storyboard import StoryboardGenerator
    from popcorn.video.base import RenderRequest

    clip = StoryboardGenerator().render(RenderRequest(prompt="Waves at dusk.", width=240, height=426, num_frames=24))
    out = compose(clip, "Dusk", tmp_path)
    doc = json.loads((tmp_path / "video.json").read_text())
    assert out["is_preview"] is True and doc["clip"]["is_preview"] is True and doc["generator"] == "storyboard"


@pytest.fixture(scope="module")
def tiny_cover_model(tmp_path_factory):
    """A tiny randomly initialised PixArt-Sigma text-to-image pipeline (T5 + DiT + VAE), saved as a diffusers folder:
    the same loading and calling code as a real cover model, small enough for a CPU."""
    import torch
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
    from test_video_diffusers import tiny_t5_encoder, tiny_tokenizer

    torch.manual_seed(0)
    transformer = PixArtTransformer2DModel(sample_size=32, num_layers=1, patch_size=2, attention_head_dim=8,
                                           num_attention_heads=2, caption_channels=32, in_channels=4,
                                           out_channels=8, cross_attention_dim=16,
                                           norm_type="ada_norm_single", use_additional_conditions=False)
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), layers_per_block=1, latent_channels=4, norm_num_groups=2,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    pipe = PixArtSigmaPipeline(tokenizer=tiny_tokenizer(), text_encoder=tiny_t5_encoder(), vae=vae,
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    folder = tmp_path_factory.mktemp("tiny_cover_model")
    pipe.save_pretrained(folder)
    return folder


def test_a_chosen_text_to_image_model_paints_the_cover(tmp_path, tiny_cover_model):
    clip = gradient_clip(t=3)
    out = compose(clip, "Night market", tmp_path, cover_prompt="a lantern-lit night market",
                  cover_model=str(tiny_cover_model))
    meta = json.loads((tmp_path / "video.json").read_text())
    assert meta["cover_source"] == "model" and meta["cover_frame"] is None
    assert meta["cover_details"]["prompt"] == "a lantern-lit night market"
    from PIL import Image

    cover = np.asarray(Image.open(out["cover"]).convert("RGB")).astype(int)
    assert cover.shape == (clip.height, clip.width, 3)
    x0, y0, x1, y1 = out["title_box"]
    untitled = np.ones(cover.shape[:2], bool)
    untitled[max(0, y0 - 20):y1 + 20, :] = False  # the cover's title sits near the video's title box
    frame = clip.frames[best_frame_index(clip.frames)].astype(int)
    assert np.abs(cover - frame)[untitled].mean() > 20  # painted by the model, not the clip's frame


def test_cli_render_takes_a_cover_model(tmp_path, tiny_cover_model):
    plan = {"title": "Night market", "cover_prompt": "lanterns", "video_prompt": "A vendor lights lanterns at dusk.",
            "mode": "basic", "llm": "local", "query": "night market"}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    from popcorn.cli import main

    code = main(["render", "--plan", str(tmp_path / "plan.json"), "--video", "storyboard", "--out",
                 str(tmp_path / "out"), "--cover-model", str(tiny_cover_model), "--no-score"])
    assert code == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["settings"]["cover_model"] == str(tiny_cover_model)
    assert run["video"]["cover_source"] == "model"
