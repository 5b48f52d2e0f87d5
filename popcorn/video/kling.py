"""Kling (Kuaishou) as a generator: submit a text-to-video task, poll it, download the MP4, decode it.

    POST {base}/v1/videos/text2video        JSON: model_name, prompt, negative_prompt, mode, aspect_ratio, duration
                                            -> {"code": 0, "message", "request_id", "data": {"task_id", "task_status"}}
    GET  {base}/v1/videos/text2video/{id}   -> data.task_status "submitted" | "processing" | "succeed" | "failed",
                                               data.task_status_msg (why it failed), data.task_result.videos[0].url
    GET  <that url>                         -> the MP4 (a CDN link, kept 30 days; no token is sent there)

What Kling's API documentation says (the "General Information" and "Text to Video" pages of
https://app.klingai.com/global/dev/document-api, i.e. apiReference/commonInfo, apiReference/model/textToVideo and
apiReference/rateLimits; those pages render only in a browser, so they were read as copies of them kept in public
repositories and web pages, in December 2026):

- Domain: https://api-singapore.klingai.com ("the new system", for servers outside China; api-beijing.klingai.com in
  China; the older https://api.klingai.com). KLING_BASE_URL overrides it.
- Authentication: an access key and a secret key from the developer console. Every request carries
  `Authorization: Bearer <token>`, the token a JWT (RFC 7519) with header {"alg": "HS256", "typ": "JWT"}, payload
  {"iss": <access key>, "exp": now + 1800, "nbf": now - 5}, signed HMAC-SHA256 with the secret key. A token is made
  for each request here (`api_token`, the standard library's hmac: no JWT package needed), so a long render never
  outlives one.
- Text to video: model_name (kling-v1 by default; kling-v1-6, kling-v2-master, kling-v2-1-master, kling-v2-5-turbo,
  kling-v2-6, kling-v3), prompt and negative_prompt (at most 2500 characters each), mode "std" (720p, cost-effective)
  or "pro" (1080p), aspect_ratio "16:9" | "9:16" | "1:1", duration "5" | "10" (strings; kling-v3 takes 3 to 15).
  Which model offers which mode and length is in the docs' capability map; POPCORN_KLING_MODEL (default kling-v1-6)
  and POPCORN_KLING_MODE (default std) pick them. A clip is 9:16 unless the request asks for another shape, and its
  length is the nearest the model offers to the one asked for (3 s -> 5 s, with a note).
- Errors: the HTTP status and a service `code` in the body. 401 with 1000-1004 (token wrong, empty, not yet valid,
  expired); 429 with 1100-1102 (account: arrears, resource pack used up or expired) and 403 with 1103 (no access to
  this model / API); 400/404 with 1200-1203 (invalid parameters, method, resource such as the model); 400 with 1300
  (platform policy) and 1301 (the content security policy: a refused prompt); 429 with 1302 (requests too fast) and
  1303 (concurrent tasks over the resource pack's limit; only task creation counts, and there is no QPS limit) and
  1304 (IP allow-list); 500 / 503 / 504 with 5000-5002 (internal error, maintenance, backlog timeout). The docs
  advise exponential backoff from >= 1 s for 1303.
- A failed task: task_status "failed" with task_status_msg, "such as triggering the content risk control of the
  platform".

How Popcorn uses it: 1302 / 1303 and 5000-5002 (and a 429 or 5xx without a code) are tried again with backoff
(remote.send; the create request only on 429 / 503, i.e. 1302, 1303, 5001: no task was made); 1100-1103, 1304 and
the 1200s fail at once with what to do; 1300 / 1301 and a failed task are stage-named refusals; past `timeout_s`
(20 minutes) the render fails saying the task may still finish.

Not found in the documentation, and so not relied on: a way to cancel a task (none is documented: Cancel stops the
polling within a second, but the task runs on at Kling and is billed; the log says so with its id); a progress
percentage (only the state: progress shows the state and the time waited); a Retry-After header (honoured if sent);
the frame rate and exact pixel size of each mode (the clip's frames, size and fps are read from the MP4 itself);
the capability map for the models before kling-v3 (which offers which mode and length: kling-v1-6 in std mode for
5 or 10 s is what third-party tables agree on, hence the default; for another model Kling refuses what it lacks with
a 1200s code, and the error says to check POPCORN_KLING_MODEL / POPCORN_KLING_MODE).

Needs KLING_ACCESS_KEY and KLING_SECRET_KEY (a paid API). The keys are read when a request is made and never
stored, logged or shown; neither they nor a token appear in a message, a log line or run.json.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from dataclasses import replace

import httpx

from popcorn import config
from popcorn.types import StageError
from popcorn.video.base import Clip, Progress, RenderRequest, clean_prompt
from popcorn.video.remote import (PASSING, Retry, downloaded_clip, is_loopback, nearest_seconds, nearest_size,
                                  poll_until, redact, send)

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
TASKS = "/v1/videos/text2video"
DEFAULT_MODEL = "kling-v1-6"
MODES = {"std": 720, "pro": 1080}  # the short side of the video each mode renders (the docs: 720p / 1080p)
ASPECTS = {"9:16": (9, 16), "16:9": (16, 9), "1:1": (1, 1)}  # portrait first: a micro-video's shape
TOKEN_SECONDS = 1800  # a token's life; the docs' example: exp = now + 1800, nbf = now - 5
MAX_PROMPT_CHARS = 2500

PASSING_CODES = (1302, 1303, 5000, 5001, 5002)  # rate limit, concurrency, server trouble: asking again may work
REFUSED_CODES = (1300, 1301)  # the platform's policy / content security policy refused the request
HINTS = {  # by the first two digits of Kling's service code
    10: "Kling rejected the token: check KLING_ACCESS_KEY and KLING_SECRET_KEY (and this machine's clock: a token "
        "is valid from 5 s before it is made, for 30 minutes)",
    11: "the Kling account cannot run this: check its balance and resource packs, and its access to this model, in "
        "Kling's developer console",
    12: "Kling refused the request's parameters: check POPCORN_KLING_MODEL / POPCORN_KLING_MODE (each model offers "
        "its own modes and lengths: the capability map in Kling's API docs)",
    13: "rephrase the video prompt (Kling's content policy refuses some subjects), or pick another --video",
    50: "Kling's servers failed: try again later, or pick another --video",
}
RATE_HINT = "Kling is still rate limited: wait a few minutes (or raise the account's concurrency), then try again"
IP_HINT = "the account's IP allow-list refuses this machine: change it in Kling's developer console"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def api_token(access_key: str, secret_key: str, now: float | None = None) -> str:
    """Kling's API token: a JWT signed HS256 with the secret key; iss the access key, valid from 5 s ago for 30 min."""
    now = int(time.time() if now is None else now)
    header = {"alg": "HS256", "typ": "JWT"}
    payload = {"iss": access_key, "exp": now + TOKEN_SECONDS, "nbf": now - 5}
    signing_input = ".".join(_b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload))
    signature = hmac.new(secret_key.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _missing_keys() -> list[str]:
    return [name for name in ("KLING_ACCESS_KEY", "KLING_SECRET_KEY") if not os.environ.get(name, "").strip()]


class _TokenAuth(httpx.Auth):
    """A fresh token on every request to Kling's API; remembers what it sent, so no message can show it."""

    def __init__(self):
        missing = _missing_keys()
        if missing:
            raise StageError("render", f"{' and '.join(missing)} not set",
                             "export KLING_ACCESS_KEY=... and KLING_SECRET_KEY=... (Kling's developer console, API "
                             "keys), or pick another --video")
        self.sent: list[str] = []

    @staticmethod
    def keys() -> tuple[str, str]:
        return os.environ["KLING_ACCESS_KEY"].strip(), os.environ["KLING_SECRET_KEY"].strip()

    def secrets(self) -> list[str]:
        return [*self.keys(), *self.sent]

    def auth_flow(self, request: httpx.Request):
        token = api_token(*self.keys())
        self.sent.append(token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _answer(response: httpx.Response) -> dict:
    """Kling's JSON envelope {"code", "message", "request_id", "data"} ({} when the body is not one)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _passing(response: httpx.Response) -> bool:
    code = _answer(response).get("code")
    return code in PASSING_CODES or (code is None and response.status_code in PASSING)


class KlingGenerator:
    name = "kling"
    description = "Kling text-to-video API (Kuaishou; paid, needs KLING_ACCESS_KEY and KLING_SECRET_KEY)"

    def __init__(self, transport: httpx.BaseTransport | None = None, poll_interval: float = 5.0,
                 timeout_s: float = 1200.0, retry: Retry | None = None):
        self._transport = transport  # None: the real network (tests serve the API on 127.0.0.1 via KLING_BASE_URL)
        self.poll_interval = poll_interval
        self.timeout_s = timeout_s
        self.retry = retry or Retry()

    def __repr__(self) -> str:
        return f"KlingGenerator(model={self.model!r}, mode={self.mode!r}, base_url={self.base_url!r})"

    @property
    def model(self) -> str:
        return os.environ.get("POPCORN_KLING_MODEL", "").strip() or DEFAULT_MODEL

    @property
    def mode(self) -> str:
        return os.environ.get("POPCORN_KLING_MODE", "").strip().lower() or "std"

    @property
    def base_url(self) -> str:
        return (os.environ.get("KLING_BASE_URL", "").strip() or DEFAULT_BASE_URL).rstrip("/")

    def durations(self) -> tuple[int, ...]:
        """The clip lengths (s) the model offers: 3-15 for kling-v3, else 5 and 10."""
        return tuple(range(3, 16)) if self.model.startswith("kling-v3") else (5, 10)

    def available(self) -> tuple[bool, str]:
        missing = _missing_keys()
        if missing:
            return False, f"set {' and '.join(missing)} to use Kling's API (paid; keys from its developer console)"
        if self.mode not in MODES:
            return False, f"POPCORN_KLING_MODE={self.mode!r} is not a Kling mode: use std or pro"
        if config.offline() and self._transport is None and not is_loopback(self.base_url):
            return False, "offline (POPCORN_OFFLINE / HF_HUB_OFFLINE is set)"
        return True, f"Kling API, model {self.model}, {self.mode} mode (paid per video)"

    def sizes(self) -> dict[str, tuple[int, int]]:
        """aspect ratio -> (width, height) of the mode's video: 9:16 std is 720x1280."""
        short = MODES.get(self.mode, MODES["std"])
        return {name: (short * w // min(w, h), short * h // min(w, h)) for name, (w, h) in ASPECTS.items()}

    def snap(self, req: RenderRequest) -> tuple[RenderRequest, list[str]]:
        notes: list[str] = []
        sizes = self.sizes()
        size = nearest_size(req, tuple(sizes.values()))
        if (req.width or req.height) and size != (req.width, req.height):
            notes.append(f"Kling renders {', '.join(sizes)} ({self.mode}: "
                         f"{', '.join(f'{w}x{h}' for w, h in sizes.values())}); {req.width}x{req.height} -> "
                         f"{size[0]}x{size[1]}")
        asked, seconds = self.seconds_for(req)
        if abs(seconds - asked) > 0.5:
            notes.append(f"{self.model} renders {' or '.join(map(str, self.durations()))} s clips; {asked:.1f} s -> "
                         f"{seconds} s")
        # the snapped request names the length it gets, so snapping it again adds no note
        return replace(req, width=size[0], height=size[1], steps=None, num_frames=None, seconds=float(seconds)), notes

    def seconds_for(self, req: RenderRequest) -> tuple[float, int]:
        return nearest_seconds(req, self.durations())

    def aspect_of(self, req: RenderRequest) -> str:
        size = nearest_size(req, tuple(self.sizes().values()))
        return next(name for name, s in self.sizes().items() if s == size)

    # ---------------------------------------------------------------------------------------------------- HTTP

    @staticmethod
    def _data(response: httpx.Response, what: str, secrets: list[str]) -> dict:
        """The answer's `data`; a StageError('render') saying what failed and what to do when it is an error."""
        body = _answer(response)
        code = body.get("code")
        if response.status_code < 400 and code == 0 and isinstance(body.get("data"), dict):
            return body["data"]
        message = redact(str(body.get("message") or response.text[:300]), secrets)
        request_id = f", request {body['request_id']}" if body.get("request_id") else ""
        said = f"HTTP {response.status_code}" + (f", code {code}" if code is not None else "") + request_id
        if code in REFUSED_CODES:
            policy = "the content security policy" if code == 1301 else "a platform policy"
            raise StageError("render", f"Kling refused the prompt ({policy}; {said}): {message}".strip(), HINTS[13])
        if code in (1302, 1303) or (code is None and response.status_code == 429):
            hint = RATE_HINT
        elif code == 1304:
            hint = IP_HINT
        elif isinstance(code, int):
            hint = HINTS.get(code // 100, "try again later, or pick another --video")
        else:
            hint = HINTS[10] if response.status_code == 401 else "try again later, or pick another --video"
        raise StageError("render", f"Kling {what} failed ({said}): {message}".strip(), hint)

    def render(self, req: RenderRequest, progress: Progress | None = None) -> Clip:
        started = time.perf_counter()
        prompt, notes = clean_prompt(req.prompt, MAX_PROMPT_CHARS)
        req, snap_notes = self.snap(replace(req, prompt=prompt))
        notes = snap_notes + notes
        seconds, aspect = self.seconds_for(req)[1], self.aspect_of(req)
        body = {"model_name": self.model, "prompt": prompt, "mode": self.mode, "aspect_ratio": aspect,
                "duration": str(seconds)}
        negative = " ".join((req.negative_prompt or "").split())[:MAX_PROMPT_CHARS]
        if negative:
            body["negative_prompt"] = negative
        auth = _TokenAuth()
        task_id, state = "", ""
        try:
            with httpx.Client(base_url=self.base_url, auth=auth, transport=self._transport,
                              timeout=httpx.Timeout(60.0, read=120.0)) as client:
                def call(method: str, url: str, what: str, **kwargs) -> dict:
                    response = send(client, method, url, label=f"Kling {what}", creates=what == "create",
                                    passing=_passing, retry=self.retry, progress=progress, secrets=auth.secrets(),
                                    **kwargs)
                    return self._data(response, what, auth.secrets())

                task = call("POST", TASKS, "create", json=body)
                task_id, state = str(task.get("task_id") or ""), task.get("task_status", "")
                if not task_id:
                    raise StageError("render", "Kling accepted the task but sent no task_id",
                                     "try again; if it persists, the API may have changed: pick another --video")
                submitted = time.monotonic()

                def report(t: dict) -> tuple[float, str]:
                    waited = time.monotonic() - submitted
                    if t.get("task_status") == "processing":
                        return 0.5, f"Kling: rendering ({waited:.0f} s; Kling reports no percentage)"
                    return 0.1, f"Kling: task submitted, waiting for a slot ({waited:.0f} s)"

                def fetch() -> dict:
                    nonlocal state
                    t = call("GET", f"{TASKS}/{task_id}", "status")
                    state = t.get("task_status", "")
                    return t

                task = poll_until(task, fetch, ended=lambda t: t.get("task_status") in ("succeed", "failed"),
                                  report=report, timeout_s=self.timeout_s, interval_s=self.poll_interval,
                                  progress=progress, label=f"Kling task {task_id}")
        except BaseException:
            if task_id and state not in ("succeed", "failed"):
                log.warning("Kling task %s was left %s: the API has no cancel, so it runs on (and is billed) at Kling",
                            task_id, state or "unanswered")
            raise
        if task.get("task_status") == "failed":
            reason = redact(str(task.get("task_status_msg") or "no reason given"), auth.secrets())
            raise StageError("render", f"Kling task {task_id} failed: {reason}",
                             "if Kling's content check refused it, rephrase the video prompt; otherwise try again, "
                             "or pick another --video")
        videos = (task.get("task_result") or {}).get("videos") or []
        url = videos[0].get("url") if videos and isinstance(videos[0], dict) else None
        if not url:
            raise StageError("render", f"Kling task {task_id} succeeded but named no video",
                             "try again; if it persists, the API may have changed: pick another --video")
        content = self._download(url, progress)
        if progress is not None:
            progress(1.0, "Kling video downloaded")
        asked = {"model": self.model, "mode": self.mode, "task_id": task_id, "video_id": str(videos[0].get("id") or ""),
                 "aspect_ratio": aspect, "duration": seconds, "negative_prompt": negative}
        return downloaded_clip(self.name, content, req, asked, notes, started, "Kling's API")

    def _download(self, url: str, progress: Progress | None) -> bytes:
        """The MP4 from Kling's CDN link: a client of its own, so the API token never goes to another host."""
        with httpx.Client(transport=self._transport, follow_redirects=True,
                          timeout=httpx.Timeout(60.0, read=300.0)) as cdn:
            response = send(cdn, "GET", url, label="Kling download", retry=self.retry, progress=progress,
                            fraction=0.95)
        if response.status_code >= 400:
            raise StageError("render", f"Kling download failed: HTTP {response.status_code}",
                             "Kling keeps a video 30 days: try again, or pick another --video")
        return response.content
