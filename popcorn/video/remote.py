"""What the paid video APIs share (sora.py, kling.py): a render is a task submitted over HTTP, polled until it ends,
and an MP4 downloaded and decoded.

- `send`: one request, tried again after a pause when the answer says the failure passes (a rate limit, a server
  that is down for a moment, a dropped connection). A request that creates a paid task is tried again only where the
  answer says nothing was created: HTTP 429 and 503, or a connection that never opened; a status read or a download
  is tried again on any of them. The pauses double from `Retry.base_s` (or follow the server's Retry-After).
- `poll_until`: the task's state read every `interval_s` until it ends, with progress each time; past `timeout_s`
  a stage-named error.
- `pause`: every wait is cut into steps of at most a second, each reported through `progress`, so the studio's Cancel
  (progress raises) stops a render within a second, also in the middle of a backoff.
- `redact`: secrets (API keys, tokens) replaced by *** in any text that goes into a message.
- `nearest_size`, `nearest_seconds`: a request moved onto what an API renders.
- `downloaded_clip`: the Clip of the MP4 an API sent back, with what it was asked and what the frames are.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import httpx
import numpy as np

from popcorn.types import StageError
from popcorn.video.base import Clip, Progress, RenderRequest, default_seconds

PASSING = (429, 500, 502, 503, 504)  # statuses that may pass when asked again
NOT_TAKEN = (429, 503)  # statuses that say a create request was not taken: safe to send again
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Retry:
    tries: int = 5  # requests in all, the first included
    base_s: float = 2.0  # the first pause; each next one doubles
    max_s: float = 60.0  # no pause is longer


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def is_loopback(url: str) -> bool:
    """Whether `url` points at this machine (a local stand-in of an API is reachable offline)."""
    return (urlsplit(url).hostname or "") in LOOPBACK


def pause(seconds: float, progress: Progress | None, fraction: float, message: str) -> None:
    """Sleep `seconds`, reporting (fraction, message) at least once a second: a progress that raises (Cancel) stops
    the wait there."""
    end = time.monotonic() + max(0.0, seconds)
    while True:
        if progress is not None:
            progress(fraction, message)
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))
        if time.monotonic() >= end:
            return


def _retry_after(response: httpx.Response) -> float | None:
    try:
        value = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def send(client: httpx.Client, method: str, url: str, *, label: str, creates: bool = False,
         passing: Callable[[httpx.Response], bool] = lambda r: r.status_code in PASSING,
         retry: Retry | None = None, progress: Progress | None = None, fraction: float = 0.0,
         secrets: Iterable[str] = (), **kwargs: Any) -> httpx.Response:
    """`client.request(method, url, **kwargs)`, sent again after a pause while the failure may pass.

    `passing(response)` says whether a failed answer may pass (the backend reads its API's error codes); `creates`
    marks a request that starts a paid task: it is sent again only on 429 / 503 or a connection that never opened.
    Returns the last response, failed or not (the caller reads its error); a connection that keeps failing is a
    StageError('render') naming `label`."""
    retry = retry or Retry()
    secrets = tuple(secrets)
    for attempt in range(1, retry.tries + 1):
        wait = min(retry.max_s, retry.base_s * 2 ** (attempt - 1))
        try:
            response = client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached the server: nothing was created
            failure, response = f"{type(exc).__name__}: {exc}", None
        except httpx.TransportError as exc:
            if creates:  # the task may exist: sending it again could pay twice
                raise StageError("render", f"{label} failed: {type(exc).__name__}: {redact(str(exc), secrets)}",
                                 "the task may still have been created: check the provider's console before "
                                 "trying again") from exc
            failure, response = f"{type(exc).__name__}: {exc}", None
        else:
            if response.status_code < 400:
                return response
            may_pass = passing(response) and (not creates or response.status_code in NOT_TAKEN)
            if not may_pass or attempt == retry.tries:
                return response
            failure = f"HTTP {response.status_code}"
            wait = min(retry.max_s, _retry_after(response) or wait)
        if attempt == retry.tries:
            raise StageError("render", f"{label} failed {retry.tries} times: {redact(failure, secrets)}",
                             "check the network and the API's base URL, then try again")
        pause(wait, progress, fraction, f"{label}: {redact(failure, secrets)}; trying again in {wait:.0f} s "
                                        f"(try {attempt + 1} of {retry.tries})")
    raise AssertionError("unreachable")


def poll_until(first: dict, fetch: Callable[[], dict], *, ended: Callable[[dict], bool],
               report: Callable[[dict], tuple[float, str]], timeout_s: float, interval_s: float,
               progress: Progress | None, label: str) -> dict:
    """The task's state from `first` (the create answer) on, read again with `fetch()` every `interval_s` until
    `ended(state)`; `report(state)` gives the (fraction, message) shown meanwhile. Past `timeout_s`:
    StageError('render')."""
    state, deadline = first, time.monotonic() + timeout_s
    while not ended(state):
        if time.monotonic() > deadline:
            raise StageError("render", f"{label} did not finish in {timeout_s:.0f} s",
                             "the task may still finish on the provider's side: try again later, or with a longer "
                             "timeout")
        fraction, message = report(state)
        pause(min(interval_s, max(0.0, deadline - time.monotonic())), progress, fraction, message)
        state = fetch()
    return state


def nearest_size(req: RenderRequest, sizes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    """Of `sizes` (width, height), the one closest to the request's aspect ratio, then area (the first by default)."""
    want = (req.width or sizes[0][0], req.height or sizes[0][1])
    return min(sizes, key=lambda s: (abs(np.log(s[0] / s[1]) - np.log(want[0] / want[1])),
                                     abs(s[0] * s[1] - want[0] * want[1])))


def nearest_seconds(req: RenderRequest, allowed: tuple[int, ...]) -> tuple[float, int]:
    """(seconds asked for, the nearest of `allowed`): num_frames / fps (24 if unset), else the request's seconds, else
    the default clip length."""
    asked = (req.num_frames / float(req.fps or 24)) if req.num_frames else (req.seconds or default_seconds())
    return asked, min(allowed, key=lambda s: abs(s - asked))


def decode_mp4_bytes(content: bytes) -> tuple[np.ndarray, int]:
    """MP4 bytes -> ((T, H, W, 3) uint8 frames, fps), through imageio-ffmpeg."""
    import imageio_ffmpeg  # heavy (finds an ffmpeg binary): only when a video arrives

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "download.mp4"
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


def downloaded_clip(generator: str, content: bytes, req: RenderRequest, asked: dict[str, Any], notes: list[str],
                    started: float, api: str) -> Clip:
    """The Clip of a downloaded MP4: its frames, and as settings what the API was `asked` plus the frames' own size,
    length and fps, the seed (recorded; `api` takes none), the prompt and the seconds since `started`."""
    frames, fps = decode_mp4_bytes(content)
    settings = {
        **asked,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "num_frames": int(frames.shape[0]),
        "fps": fps,
        "seed": int(req.seed),
        "prompt": req.prompt,
        "seconds_to_render": round(time.perf_counter() - started, 3),
    }
    if req.seed:
        notes.append(f"{api} takes no seed: the seed is recorded but not used")
    return Clip(frames=frames, fps=fps, width=settings["width"], height=settings["height"], generator=generator,
                is_preview=False, notes=notes, settings=settings)
