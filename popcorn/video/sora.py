"""OpenAI's Videos API (Sora 2) as a generator: create a job, poll its status, download the MP4, decode it.

    POST {base}/videos                 multipart: model, prompt, seconds ("4" | "8" | "12"), size ("720x1280", ...)
    GET  {base}/videos/{id}            -> {"status": "queued" | "in_progress" | "completed" | "failed", "progress": 0..100}
    GET  {base}/videos/{id}/content    -> the MP4 bytes

Needs OPENAI_API_KEY (a paid API). OPENAI_BASE_URL overrides https://api.openai.com/v1; POPCORN_SORA_MODEL picks
sora-2 (default) or sora-2-pro. The key is read when a request is made and never stored, logged or shown. Rate limits
(429, except insufficient_quota) and 5xx are tried again with backoff (remote.send); the create request only where the
answer says no job was made.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import httpx

from popcorn import config
from popcorn.types import StageError
from popcorn.video.base import Clip, Progress, RenderRequest, clean_prompt
from popcorn.video.remote import (PASSING, Retry, downloaded_clip, is_loopback, nearest_seconds, nearest_size,
                                  poll_until, redact, send)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SIZES = ((720, 1280), (1280, 720), (1024, 1792), (1792, 1024))  # (width, height); portrait first
SECONDS = (4, 8, 12)


class SoraGenerator:
    name = "sora"
    description = "OpenAI Videos API (sora-2; paid, needs OPENAI_API_KEY)"

    def __init__(self, transport: httpx.BaseTransport | None = None, poll_interval: float = 5.0,
                 timeout_s: float = 900.0, retry: Retry | None = None):
        self._transport = transport  # tests pass httpx.MockTransport; None means the real network
        self.poll_interval = poll_interval
        self.timeout_s = timeout_s
        self.retry = retry or Retry()

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
        if config.offline() and self._transport is None and not is_loopback(self.base_url):
            return False, "offline (POPCORN_OFFLINE / HF_HUB_OFFLINE is set)"
        return True, f"OpenAI Videos API, model {self.model} (paid per second of video)"

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        notes: list[str] = []
        want = (req.width or SIZES[0][0], req.height or SIZES[0][1])
        size = nearest_size(req, SIZES)
        if (req.width or req.height) and size != want:
            notes.append(f"Sora renders {', '.join(f'{w}x{h}' for w, h in SIZES)}; {want[0]}x{want[1]} -> "
                         f"{size[0]}x{size[1]}")
        asked, seconds = self.seconds_for(req)
        if (req.num_frames or req.seconds) and abs(seconds - asked) > 0.5:
            notes.append(f"Sora renders 4, 8 or 12 seconds; {asked:.1f} s -> {seconds} s")
        return replace(req, width=size[0], height=size[1], steps=None), notes

    @staticmethod
    def seconds_for(req: RenderRequest) -> tuple[float, int]:
        """(seconds asked for, seconds Sora will render): onto 4 / 8 / 12 (remote.nearest_seconds)."""
        return nearest_seconds(req, SECONDS)

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
        message = _error(response).get("message", "") or response.text[:300]
        message = redact(message, [os.environ.get("OPENAI_API_KEY", "")])
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
            def call(method: str, url: str, what: str, **kwargs) -> httpx.Response:
                response = send(client, method, url, label=f"Sora {what}", creates=what == "create",
                                passing=_passing, retry=self.retry, progress=progress,
                                secrets=[os.environ.get("OPENAI_API_KEY", "")], **kwargs)
                return self._check(response, what)

            form = {"model": (None, self.model), "prompt": (None, prompt), "seconds": (None, str(seconds)),
                    "size": (None, size)}
            job = call("POST", "/videos", "create", files=form).json()
            video_id = job["id"]
            job = poll_until(job, lambda: call("GET", f"/videos/{video_id}", "status").json(),
                             ended=lambda j: j.get("status") in ("completed", "failed"),
                             report=lambda j: (float(j.get("progress") or 0) / 100.0, f"Sora {j.get('status', '?')}"),
                             timeout_s=self.timeout_s, interval_s=self.poll_interval, progress=progress,
                             label=f"Sora job {video_id}")
            if job["status"] == "failed":
                error = job.get("error") or {}
                raise StageError("render", f"Sora job {video_id} failed: {error.get('code', '')} "
                                           f"{error.get('message', '')}".strip(),
                                 "rephrase the prompt (moderation blocks some content) or pick another --video")
            content = call("GET", f"/videos/{video_id}/content", "download", params={"variant": "video"}).content
        if progress is not None:
            progress(1.0, "Sora video downloaded")
        return downloaded_clip(self.name, content, req, {"model": self.model, "video_id": video_id, "size": size,
                                                         "seconds": seconds}, notes, started, "the Videos API")



def _error(response: httpx.Response) -> dict:
    """The {"code", "message", ...} of an OpenAI error answer ({} when it has none)."""
    try:
        error = response.json().get("error")
    except Exception:
        return {}
    return error if isinstance(error, dict) else {}


def _passing(response: httpx.Response) -> bool:
    """A rate limit or a server error passes; running out of credit (429 insufficient_quota) does not."""
    return response.status_code in PASSING and _error(response).get("code") != "insufficient_quota"
