"""The storyboard: what g shows when no video model can run here (no GPU, no weights, no key).

The video prompt is split into beats (its sentences); each beat becomes a card with the beat's text over a soft
colour field that slowly zooms and pans (Ken Burns), cards cross-fade into each other, and every frame carries the
banner "PREVIEW - storyboard, not a model render". The clip says is_preview=True. Pure numpy + PIL: a 3.5 s 480x854
clip at 24 fps takes about a second on one CPU core.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import replace

import numpy as np
from PIL import Image

from popcorn.video.base import Clip, Progress, RenderRequest, check_memory_mode, clean_prompt, default_seconds
from popcorn.video.text import TextStyle, paste_rgba, text_block

PREVIEW_BANNER = "PREVIEW - storyboard, not a model render"
DEFAULT_WIDTH, DEFAULT_HEIGHT = 480, 854  # 9:16
DEFAULT_FPS = 24
MAX_BEATS = 4
MAX_BEAT_CHARS = 110
ZOOM = 1.12  # the background is drawn this much larger than the frame, so it can zoom and pan
CROSSFADE_SECONDS = 0.35

# pairs of (top, bottom) colours for the card backgrounds
PALETTES = [
    ((255, 94, 98), (255, 195, 113)),
    ((67, 206, 162), (24, 90, 157)),
    ((142, 45, 226), (74, 0, 224)),
    ((247, 151, 30), (255, 210, 0)),
    ((0, 180, 219), (0, 131, 176)),
    ((238, 9, 121), (255, 106, 0)),
    ((17, 153, 142), (56, 239, 125)),
    ((252, 70, 107), (63, 94, 251)),
]


def split_beats(prompt: str, max_beats: int = MAX_BEATS) -> list[str]:
    """Sentences of the prompt (then clauses, if it is one long sentence), merged down to at most max_beats."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?。！？;；])\s*", prompt) if s.strip()]
    if len(sentences) == 1 and len(sentences[0]) > 80:
        sentences = [s.strip() for s in re.split(r"(?<=[,，:：])\s*", sentences[0]) if s.strip()]
    while len(sentences) > max_beats:  # merge the shortest neighbouring pair
        i = min(range(len(sentences) - 1), key=lambda k: len(sentences[k]) + len(sentences[k + 1]))
        sentences[i : i + 2] = [sentences[i] + " " + sentences[i + 1]]
    beats = []
    for s in sentences:
        if len(s) > MAX_BEAT_CHARS:
            s = s[: MAX_BEAT_CHARS - 1].rsplit(" ", 1)[0].rstrip(",;: ") + "…"
        beats.append(s)
    return beats or [prompt[:MAX_BEAT_CHARS]]


def _background(width: int, height: int, palette, rng: np.random.Generator) -> np.ndarray:
    """A vertical gradient with a few soft light blobs, (H, W, 3) uint8, drawn at 1/8 size and upscaled."""
    small_w, small_h = max(8, width // 8), max(8, height // 8)
    top, bottom = (np.array(c, dtype=np.float32) for c in palette)
    t = np.linspace(0.0, 1.0, small_h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    img = np.broadcast_to(img, (small_h, small_w, 3)).copy()
    yy, xx = np.mgrid[0:small_h, 0:small_w].astype(np.float32)
    for _ in range(5):
        cx, cy = rng.uniform(0, small_w), rng.uniform(0, small_h)
        radius = rng.uniform(0.15, 0.45) * small_w
        strength = rng.uniform(0.15, 0.35)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))[..., None]
        img = img * (1 - strength * blob) + 255.0 * strength * blob
    small = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return np.asarray(small.resize((width, height), Image.BILINEAR))


def _ease(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


class StoryboardGenerator:
    name = "storyboard"
    description = "Animated 9:16 storyboard of the video prompt (CPU preview, not a model render)"

    def available(self) -> tuple[bool, str]:
        return True, "runs anywhere on the CPU; a preview, not a model render"

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        notes: list[str] = []
        width = req.width or DEFAULT_WIDTH
        height = req.height or DEFAULT_HEIGHT
        snapped_w = int(min(1920, max(64, round(width / 2) * 2)))
        snapped_h = int(min(1920, max(64, round(height / 2) * 2)))
        if (snapped_w, snapped_h) != (width, height):
            notes.append(f"storyboard size {width}x{height} -> {snapped_w}x{snapped_h} (even, 64..1920 px)")
        fps = int(min(60, max(8, req.fps or DEFAULT_FPS)))
        if req.fps and fps != req.fps:
            notes.append(f"storyboard fps {req.fps} -> {fps} (8..60)")
        frames = req.num_frames or round((req.seconds or default_seconds()) * fps)
        snapped_frames = int(min(20 * fps, max(fps, frames)))
        if req.num_frames and snapped_frames != req.num_frames:
            notes.append(f"storyboard frames {req.num_frames} -> {snapped_frames} (1 to 20 seconds)")
        return replace(req, width=snapped_w, height=snapped_h, fps=fps, num_frames=snapped_frames, steps=None), notes

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip:
        started = time.perf_counter()
        prompt, notes = clean_prompt(req.prompt)
        check_memory_mode(req.memory_mode)
        req, snap_notes = self.snap(replace(req, prompt=prompt))
        notes = snap_notes + notes
        width, height, fps, total = req.width, req.height, req.fps, req.num_frames
        beats = split_beats(prompt)
        seed_bytes = hashlib.sha256(f"{req.seed}|{prompt}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed_bytes[:8], "little"))
        first_palette = int(rng.integers(len(PALETTES)))

        big_w, big_h = round(width * ZOOM / 2) * 2, round(height * ZOOM / 2) * 2
        backgrounds = [
            _background(big_w, big_h, PALETTES[(first_palette + i) % len(PALETTES)], rng) for i in range(len(beats))
        ]
        margin = round(width * 0.08)
        card_style = TextStyle(box=(0, 0, 0, 90))
        cards = [
            text_block(beat, width - 2 * margin, size=max(16, width // 13), max_lines=6, style=card_style)
            for beat in beats
        ]
        banner_style = TextStyle(box=(200, 0, 0, 200), stroke=None, shadow=False)
        banner = text_block(PREVIEW_BANNER, width - 2 * margin // 2, size=max(10, width // 30), max_lines=2,
                            style=banner_style, min_size=8)
        counter_style = TextStyle(box=(0, 0, 0, 120), stroke=None, shadow=False)
        counters = [
            text_block(f"beat {i + 1}/{len(beats)}", width // 3, size=max(10, width // 32), max_lines=1,
                       style=counter_style, min_size=8)
            for i in range(len(beats))
        ]

        per_beat = total / len(beats)
        fade = max(1, round(CROSSFADE_SECONDS * fps))
        directions = rng.uniform(-1, 1, size=(len(beats), 2))
        frames = np.empty((total, height, width, 3), dtype=np.uint8)
        for t in range(total):
            beat = min(len(beats) - 1, int(t / per_beat))
            frame = self._beat_frame(backgrounds[beat], cards[beat], counters[beat], t - beat * per_beat, per_beat,
                                     directions[beat], width, height)
            into_next = (beat + 1) * per_beat - t
            if beat + 1 < len(beats) and into_next < fade:  # cross-fade into the next card
                nxt = self._beat_frame(backgrounds[beat + 1], cards[beat + 1], counters[beat + 1], 0.0, per_beat,
                                       directions[beat + 1], width, height)
                a = _ease(1 - into_next / fade)
                frame = (frame.astype(np.float32) * (1 - a) + nxt.astype(np.float32) * a).astype(np.uint8)
            frames[t] = paste_rgba(frame, banner, (width - banner.width) // 2, height - banner.height - margin)
            if progress is not None and (t % 12 == 0 or t == total - 1):
                progress((t + 1) / total, f"storyboard frame {t + 1}/{total}")

        notes = [f"PREVIEW: {PREVIEW_BANNER} ({len(beats)} beats from the video prompt)"] + notes
        return Clip(
            frames=frames,
            fps=fps,
            width=width,
            height=height,
            generator=self.name,
            is_preview=True,
            notes=notes,
            settings={
                "width": width,
                "height": height,
                "num_frames": total,
                "fps": fps,
                "seed": req.seed,
                "beats": beats,
                "prompt": prompt,
                "seconds_to_render": round(time.perf_counter() - started, 3),
            },
        )

    @staticmethod
    def _beat_frame(background: np.ndarray, card: Image.Image, counter: Image.Image, t: float, length: float,
                    direction: np.ndarray, width: int, height: int) -> np.ndarray:
        """One frame of a beat: the background zoomed/panned by progress p, the card sliding up and fading in."""
        p = min(1.0, max(0.0, t / max(1.0, length)))
        big_h, big_w = background.shape[:2]
        zoom = 1.0 + (ZOOM - 1.0) * (1 - 0.6 * p)  # slowly zoom in: show less of the background over time
        crop_w, crop_h = min(big_w, round(width * zoom)), min(big_h, round(height * zoom))
        free_x, free_y = big_w - crop_w, big_h - crop_h
        x = int(free_x * (0.5 + 0.5 * direction[0] * (p - 0.5)))
        y = int(free_y * (0.5 + 0.5 * direction[1] * (p - 0.5)))
        crop = Image.fromarray(background[y : y + crop_h, x : x + crop_w])
        frame = np.asarray(crop.resize((width, height), Image.BILINEAR))
        appear = _ease(t / 8.0)  # about a third of a second at 24 fps
        if appear < 1.0:
            card = card.copy()
            card.putalpha(card.getchannel("A").point(lambda v: int(v * appear)))
        cy = int(height * 0.6 - card.height / 2 + (1 - appear) * height * 0.05)  # below the title's place
        frame = paste_rgba(frame, card, (width - card.width) // 2, cy)
        return paste_rgba(frame, counter, round(width * 0.05), round(height * 0.05))
