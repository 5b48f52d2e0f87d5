"""OpenAI's Videos API (Sora 2) as a generator: create a job, poll its status, download the MP4, decode it.

    POST {base}/videos                 multipart: model, prompt, seconds ("4" | "8" | "12"), size ("720x1280", ...)
    GET  {base}/videos/{id}            -> {"status": "queued" | "in_progress" | "completed" | "failed", "progress": 0..100}
    GET  {base}/videos/{id}/content    -> the MP4 bytes

Needs OPENAI_API_KEY (a paid API). OPENAI_BASE_URL overrides https://api.openai.com/v1; POPCORN_SORA_MODEL picks
sora-2 (default) or sora-2-pro. The key is read when a request is made and never stored, logged or shown.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import imageio_ffmpeg
import numpy as np

from popcorn import config
from popcorn.types import StageError
from popcorn.video.base import Clip, Progress, RenderRequest, clean_prompt, default_seconds

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SIZES = ((720, 1280), (1280, 720), (1024, 1792), (1792, 1024))  # (width, height); portrait first
SECONDS = (4, 8, 12)


class SoraGenerator:
    name = "sora"
    description = "OpenAI Videos API (sora-2; paid, needs OPENAI_API_KEY)"

    def __init__(self, transport: httpx.BaseTransport | None = None, poll_interval: float = 5.0,
                 timeout_s: float = 900.0):
        self._transport = transport  # tests pass httpx.MockTransport; None means the real network
        self.poll_interval = poll_interval
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SoraGenerator(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def model(self) -> str:
        return os.environ.get("POPCORN_SORA_MODEL", "").strip() or "sora-2"

    @property
    def base_url(self) -> str:
        return (os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")

    def available(self) -> tuple[bool, str]:
        if not os.environ.get("OPENAI_API_KEY", "").strip():
            return False, "set OPENAI_API_KEY to use OpenAI's Videos API (paid)"
        if config.offline() and self._transport is None:
            return False, "offline (POPCORN_OFFLINE / HF_HUB_OFFLINE is set)"
        return True, f"OpenAI Videos API, model {self.model} (paid per second of video)"

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        notes: list[str] = []
        want = (req.width or SIZES[0][0], req.height or SIZES[0][1])
        size = min(SIZES, key=lambda s: (abs(np.log(s[0] / s[1]) - np.log(want[0] / want[1])),
                                         abs(s[0] * s[1] - want[0] * want[1])))
        if (req.width or req.height) and size != want:
            notes.append(f"Sora renders {', '.join(f'{w}x{h}' for w, h in SIZES)}; {want[0]}x{want[1]} -> "
                         f"{size[0]}x{size[1]}")
        asked, seconds = self.seconds_for(req)
        if (req.num_frames or req.seconds) and abs(seconds - asked) > 0.5:
            notes.append(f"Sora renders 4, 8 or 12 seconds; {asked:.1f} s -> {seconds} s")
        return replace(req, width=size[0], height=size[1], steps=None), notes

    @staticmethod
    def seconds_for(req: RenderRequest) -> tuple[float, int]:
        """(seconds asked for, seconds Sora will render): num_frames / fps (24 if unset), else the request's seconds
        (else the default clip length), onto 4 / 8 / 12."""
        asked = (req.num_frames / float(req.fps or 24)) if req.num_frames else (req.seconds or default_seconds())
        return asked, min(SECONDS, key=lambda s: abs(s - asked))

    # ---------------------------------------------------------------------------------------------------- HTTP

    def _client(self) -> httpx.Client:
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise StageError("render", "OPENAI_API_KEY is not set", "export OPENAI_API_KEY=... or pick another --video")
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {key}"},
                            transport=self._transport, timeout=httpx.Timeout(60.0, read=300.0))

    @staticmethod
    def _check(response: httpx.Response, what: str) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            message = response.json().get("error", {}).get("message", "")
        except Exception:
            message = response.text[:300]
        key = os.environ.get("OPENAI_API_KEY", "")
        if key:
            message = message.replace(key, "***")
        hint = {
            401: "the API key was rejected: check OPENAI_API_KEY",
            403: "this key's organisation has no access to the Videos API / this model",
            429: "rate limited or out of credit: wait, or check billing",
        }.get(response.status_code, "try again later, or pick another --video")
        raise StageError("render", f"Sora {what} failed: HTTP {response.status_code} {message}".strip(), hint)

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip:
        started = time.perf_counter()
        prompt, notes = clean_prompt(req.prompt)
        req, snap_notes = self.snap(replace(req, prompt=prompt))
        seconds = self.seconds_for(req)[1]
        notes = snap_notes + notes
        size = f"{req.width}x{req.height}"
        with self._client() as client:
            form = {"model": (None, self.model), "prompt": (None, prompt), "seconds": (None, str(seconds)),
                    "size": (None, size)}
            job = self._check(client.post("/videos", files=form), "create").json()
            video_id = job["id"]
            deadline = time.monotonic() + self.timeout_s
            while job.get("status") not in ("completed", "failed"):
                if time.monotonic() > deadline:
                    raise StageError("render", f"Sora job {video_id} did not finish in {self.timeout_s:.0f} s",
                                     "the job may still finish: try again later with a longer timeout")
                if progress is not None:
                    progress(float(job.get("progress") or 0) / 100.0, f"Sora {job.get('status', '?')}")
                time.sleep(self.poll_interval)
                job = self._check(client.get(f"/videos/{video_id}"), "status").json()
            if job["status"] == "failed":
                error = job.get("error") or {}
                raise StageError("render", f"Sora job {video_id} failed: {error.get('code', '')} "
                                           f"{error.get('message', '')}".strip(),
                                 "rephrase the prompt (moderation blocks some content) or pick another --video")
            content = self._check(client.get(f"/videos/{video_id}/content", params={"variant": "video"}),
                                  "download").content
        if progress is not None:
            progress(1.0, "Sora video downloaded")
        frames, fps = decode_mp4_bytes(content)
        settings = {
            "model": self.model,
            "video_id": video_id,
            "size": size,
            "seconds": seconds,
            "width": int(frames.shape[2]),
            "height": int(frames.shape[1]),
            "num_frames": int(frames.shape[0]),
            "fps": fps,
            "seed": int(req.seed),
            "prompt": prompt,
            "seconds_to_render": round(time.perf_counter() - started, 3),
        }
        if req.seed:
            notes.append("the Videos API takes no seed: the seed is recorded but not used")
        return Clip(frames=frames, fps=fps, width=settings["width"], height=settings["height"], generator=self.name,
                    is_preview=False, notes=notes, settings=settings)


def decode_mp4_bytes(content: bytes) -> tuple[np.ndarray, int]:
    """MP4 bytes -> ((T, H, W, 3) uint8 frames, fps), through imageio-ffmpeg."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sora.mp4"
        path.write_bytes(content)
        try:
            reader = imageio_ffmpeg.read_frames(str(path))
            meta = next(reader)
            width, height = meta["size"]
            frames = [np.frombuffer(buf, dtype=np.uint8).reshape(height, width, 3) for buf in reader]
        except Exception as exc:
            raise StageError("render", f"could not decode the downloaded video ({type(exc).__name__}: {exc})",
                             "try again; the download may have been cut off") from exc
    if not frames:
        raise StageError("render", "the downloaded video has no frames", "try again, or pick another --video")
    return np.stack(frames), int(round(meta.get("fps") or 24))
