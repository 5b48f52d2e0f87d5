"""compose: put the plan's title on the clip, encode it, pick a cover, and write the metadata beside them.

    out = compose(clip, plan.title, out_dir, cover_prompt=plan.cover_prompt, metadata={"plan": plan.to_dict()})
    out["video"], out["cover"], out["metadata"]  # out_dir/video.mp4, out_dir/cover.png, out_dir/video.json

- The title is wrapped into at most 3 lines inside safe margins (7% each side, starting 9% from the top, clear of the
  platform's top bar and bottom caption area), white with a dark stroke, a soft shadow and a translucent panel, so it
  reads on any background. Fonts: assets/fonts (Latin + CJK + colour emoji fallback).
- video.mp4: H.264, yuv420p, +faststart, at the clip's fps (ffmpeg from imageio-ffmpeg).
- cover.png: a text-to-image diffusers model when `cover_model` (hub id or local folder) is given and loads,
  otherwise the clip's best frame (sharp and colourful) with the title.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from PIL import Image

from popcorn.serve import resident
from popcorn.types import StageError
from popcorn.video.base import Clip
from popcorn.video.text import TextStyle, paste_rgba, text_block

SIDE_MARGIN = 0.07  # share of the width kept clear on each side
TOP_MARGIN = 0.09  # share of the height above the title
MAX_TITLE_LINES = 3
CRF = 18

_COVER_PIPELINES: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------------------- title


def title_overlay(title: str, width: int, height: int, *, scale: float = 1.0) -> tuple[Image.Image, int, int]:
    """The title as an RGBA block and where it goes: (block, x, y)."""
    margin = round(width * SIDE_MARGIN)
    size = max(14, round(min(width, height * 9 / 16) / 11 * scale))
    block = text_block(title, width - 2 * margin, size=size, max_lines=MAX_TITLE_LINES, style=TextStyle(),
                       min_size=max(10, size // 3))
    x = (width - block.width) // 2
    y = round(height * TOP_MARGIN)
    return block, x, y


def overlay_title(frames: np.ndarray, title: str) -> tuple[np.ndarray, list[int]]:
    """(T, H, W, 3) frames with the title drawn on each, and the title's box [x0, y0, x1, y1]."""
    height, width = frames.shape[1:3]
    block, x, y = title_overlay(title, width, height)
    return paste_rgba(frames, block, x, y), [x, y, x + block.width, y + block.height]


# --------------------------------------------------------------------------------------------------------- cover


def frame_score(frame: np.ndarray) -> float:
    """Sharpness (variance of a Laplacian) times colourfulness (Hasler & Suesstrunk), both on a small copy."""
    small = np.asarray(Image.fromarray(frame).resize((160, max(2, round(160 * frame.shape[0] / frame.shape[1])))),
                       dtype=np.float32)
    gray = small.mean(axis=2)
    lap = (-4 * gray[1:-1, 1:-1] + gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:])
    sharpness = float(lap.var())
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = float(np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))
    return np.log1p(sharpness) * (1.0 + colourfulness)


def best_frame_index(frames: np.ndarray, samples: int = 48) -> int:
    """The index of the sharpest, most colourful frame (looking at up to `samples` evenly spaced frames)."""
    total = frames.shape[0]
    candidates = np.unique(np.linspace(0, total - 1, min(samples, total)).round().astype(int))
    scores = [frame_score(frames[i]) for i in candidates]
    return int(candidates[int(np.argmax(scores))])


def _release_cover_model(cover_model: str) -> None:
    _COVER_PIPELINES.pop(cover_model, None)


def generate_cover_image(cover_model: str, prompt: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """Text-to-image with a diffusers pipeline (hub id or local folder), loaded once and kept until another model
    loads (popcorn/serve/resident.py: loading it releases the video pipelines, and a later video load releases it)."""
    import torch  # heavy, and optional: only a cover model needs them
    from diffusers import AutoPipelineForText2Image

    holder = f"cover:{cover_model}"
    with resident.exclusive():
        pipe = _COVER_PIPELINES.get(cover_model)
        if pipe is None:
            resident.make_room(holder)
            dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
            pipe = AutoPipelineForText2Image.from_pretrained(cover_model, torch_dtype=dtype)
            pipe.to("cuda" if torch.cuda.is_available() else "cpu")
            pipe.set_progress_bar_config(disable=True)
            _COVER_PIPELINES[cover_model] = pipe
            resident.hold(holder, lambda: _release_cover_model(cover_model))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        # most image models want sizes divisible by 16; keep the clip's aspect ratio
        w, h = max(16, width // 16 * 16), max(16, height // 16 * 16)
        result = pipe(prompt=prompt, width=w, height=h, generator=torch.Generator(device).manual_seed(seed))
    return result.images[0].convert("RGB").resize((width, height), Image.LANCZOS)


def make_cover(clip: Clip, title: str, cover_prompt: str = "", cover_model: str | None = None,
               seed: int = 0) -> tuple[Image.Image, dict]:
    """The cover image and how it was made: {"source": "model"|"frame", "frame": i?, "note": ...}."""
    info: dict[str, Any] = {}
    image = None
    if cover_model:
        try:
            image = generate_cover_image(cover_model, cover_prompt or title, clip.width, clip.height, seed)
            info = {"source": "model", "model": cover_model, "prompt": cover_prompt or title}
        except Exception as exc:  # the cover is secondary: fall back to a frame and say why
            info = {"note": f"cover model {cover_model!r} failed ({type(exc).__name__}: {str(exc)[:200]}); "
                            "used the clip's best frame"}
    if image is None:
        index = best_frame_index(clip.frames)
        image = Image.fromarray(clip.frames[index])
        info.update({"source": "frame", "frame": index})
    if title.strip():
        block, x, y = title_overlay(title, image.width, image.height, scale=1.15)
        image = Image.fromarray(paste_rgba(np.asarray(image.convert("RGB")), block, x, y))
    return image, info


# -------------------------------------------------------------------------------------------------------- encode


def encode_mp4(frames: np.ndarray, fps: int, path: Path, crf: int = CRF) -> None:
    """H.264 / yuv420p / faststart MP4 at `fps`. Odd sizes are padded by one pixel (yuv420p needs even sizes)."""
    total, height, width = frames.shape[:3]
    if height % 2 or width % 2:
        frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        macro_block_size=1,
        quality=None,
        output_params=["-crf", str(crf), "-preset", "medium", "-movflags", "+faststart"],
        ffmpeg_log_level="error",
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()


# ------------------------------------------------------------------------------------------------------- compose


def compose(clip: Clip, title: str, out_dir: Path, *, cover_prompt: str = "", cover_model: str | None = None,
            metadata: dict | None = None) -> dict:
    """Write out_dir/video.mp4 (titled), out_dir/cover.png and out_dir/video.json; return their paths and facts."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(clip.frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise StageError("compose", f"expected frames of shape (T, H, W, 3), got {frames.shape}",
                         "the video generator returned no frames; try another generator (--video storyboard)")
    if frames.dtype != np.uint8:
        frames = np.clip(frames, 0, 255).astype(np.uint8)
    title = " ".join((title or "").split())
    notes: list[str] = []
    if title:
        titled, box = overlay_title(frames, title)
    else:
        titled, box = frames, None
        notes.append("no title given: the video has no title overlay")

    video_path = out_dir / "video.mp4"
    cover_path = out_dir / "cover.png"
    meta_path = out_dir / "video.json"
    try:
        encode_mp4(titled, clip.fps, video_path)
    except Exception as exc:
        raise StageError("compose", f"could not encode {video_path} ({type(exc).__name__}: {exc})",
                         "check that imageio-ffmpeg is installed and the folder is writable") from exc

    cover, cover_info = make_cover(clip, title, cover_prompt, cover_model, seed=int(clip.settings.get("seed", 0)))
    cover.save(cover_path)
    if "note" in cover_info:
        notes.append(cover_info["note"])

    info = {
        "video": str(video_path),
        "cover": str(cover_path),
        "metadata": str(meta_path),
        "title": title,
        "title_box": box,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "fps": int(clip.fps),
        "num_frames": int(frames.shape[0]),
        "seconds": round(frames.shape[0] / float(clip.fps), 3),
        "codec": "h264",
        "pix_fmt": "yuv420p",
        "is_preview": bool(clip.is_preview),
        "generator": clip.generator,
        "cover_source": cover_info.get("source"),
        "cover_frame": cover_info.get("frame"),
        "notes": notes,
    }
    document = {
        **{key: value for key, value in info.items() if key != "metadata"},
        "cover_prompt": cover_prompt,
        "cover_details": cover_info,
        "clip": clip.to_dict(),
        "extra": metadata or {},
        "seconds_to_compose": round(time.perf_counter() - started, 3),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    meta_path.write_text(json.dumps(document, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    return info
