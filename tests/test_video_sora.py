"""The Sora generator against OpenAI's Videos API, mocked at the HTTP level (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from popcorn.compose import encode_mp4
from popcorn.types import StageError
from popcorn.video import RenderRequest
from popcorn.video.sora import SoraGenerator

KEY = "sk-test-SECRET-123456"


@pytest.fixture()
def mp4_bytes(tmp_path):
    frames = np.zeros((16, 128, 72, 3), np.uint8)
    frames[..., 0] = np.arange(16, dtype=np.uint8)[:, None, None] * 15
    encode_mp4(frames, 16, tmp_path / "sora.mp4")
    return (tmp_path / "sora.mp4").read_bytes()


class FakeVideosAPI:
    """Queued -> in_progress -> completed (or failed), as the real API reports it."""

    def __init__(self, content: bytes, fail: bool = False, create_status: int = 200):
        self.content = content
        self.fail = fail
        self.create_status = create_status
        self.requests: list[httpx.Request] = []
        self.polls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "POST" and path == "/v1/videos":
            if self.create_status != 200:
                return httpx.Response(self.create_status, json={"error": {"message": f"bad key {KEY[:6]}... {KEY}"}})
            return httpx.Response(200, json={"id": "video_abc", "object": "video", "status": "queued", "progress": 0})
        if request.method == "GET" and path == "/v1/videos/video_abc":
            self.polls += 1
            if self.polls == 1:
                return httpx.Response(200, json={"id": "video_abc", "status": "in_progress", "progress": 40})
            if self.fail:
                return httpx.Response(200, json={"id": "video_abc", "status": "failed", "progress": 100,
                                                 "error": {"code": "moderation_blocked", "message": "blocked"}})
            return httpx.Response(200, json={"id": "video_abc", "status": "completed", "progress": 100})
        if request.method == "GET" and path == "/v1/videos/video_abc/content":
            return httpx.Response(200, content=self.content, headers={"content-type": "video/mp4"})
        return httpx.Response(404, json={"error": {"message": "not found"}})


@pytest.fixture()
def with_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("POPCORN_SORA_MODEL", raising=False)


def test_create_poll_download_decode(with_key, mp4_bytes):
    api = FakeVideosAPI(mp4_bytes)
    gen = SoraGenerator(transport=httpx.MockTransport(api), poll_interval=0)
    seen = []
    clip = gen.render(RenderRequest(prompt="A red kite over a beach at sunset.", num_frames=200, fps=24),
                      progress=lambda f, m: seen.append((f, m)))

    create = api.requests[0]
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.url == "https://api.openai.com/v1/videos"
    assert create.headers["content-type"].startswith("multipart/form-data")
    body = create.content.decode()
    for field, value in (("model", "sora-2"), ("prompt", "A red kite over a beach at sunset."),
                         ("seconds", "8"), ("size", "720x1280")):
        assert f'name="{field}"\r\n\r\n{value}\r\n' in body
    assert api.requests[-1].url.params["variant"] == "video"

    assert clip.frames.shape == (16, 128, 72, 3) and clip.fps == 16
    assert clip.generator == "sora" and clip.is_preview is False
    assert clip.settings["video_id"] == "video_abc" and clip.settings["seconds"] == 8
    assert [round(f, 2) for f, _ in seen] == [0.0, 0.4, 1.0]
    assert KEY not in repr(gen) and KEY not in json.dumps(clip.to_dict())


def test_sizes_and_seconds_are_snapped_with_notes():
    gen = SoraGenerator()
    req, notes = gen.snap(RenderRequest(prompt="x", width=1920, height=1080, num_frames=30, fps=10))
    assert (req.width, req.height) == (1280, 720)
    assert gen.seconds_for(req)[1] == 4 and len(notes) == 2
    req, notes = gen.snap(RenderRequest(prompt="x"))
    assert (req.width, req.height) == (720, 1280) and notes == []


def test_failed_job_is_a_render_stage_error(with_key, mp4_bytes):
    gen = SoraGenerator(transport=httpx.MockTransport(FakeVideosAPI(mp4_bytes, fail=True)), poll_interval=0)
    with pytest.raises(StageError) as err:
        gen.render(RenderRequest(prompt="something"))
    assert err.value.stage == "render" and "moderation_blocked" in err.value.message


def test_rejected_key_never_shows_the_key(with_key, mp4_bytes):
    gen = SoraGenerator(transport=httpx.MockTransport(FakeVideosAPI(mp4_bytes, create_status=401)), poll_interval=0)
    with pytest.raises(StageError) as err:
        gen.render(RenderRequest(prompt="something"))
    assert "401" in err.value.message and "OPENAI_API_KEY" in err.value.hint
    assert KEY not in str(err.value) and KEY not in err.value.hint


def test_without_key_it_is_unavailable_and_says_why(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ok, reason = SoraGenerator().available()
    assert not ok and "OPENAI_API_KEY" in reason
    with pytest.raises(StageError):
        SoraGenerator().render(RenderRequest(prompt="x"))


def test_base_url_and_model_come_from_the_environment(with_key, monkeypatch, mp4_bytes):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("POPCORN_SORA_MODEL", "sora-2-pro")
    api = FakeVideosAPI(mp4_bytes)
    SoraGenerator(transport=httpx.MockTransport(api), poll_interval=0).render(RenderRequest(prompt="x"))
    assert str(api.requests[0].url) == "http://127.0.0.1:9/v1/videos"
    assert 'name="model"\r\n\r\nsora-2-pro' in api.requests[0].content.decode()


def test_a_rate_limit_is_waited_out_but_no_credit_fails_at_once(with_key, mp4_bytes):
    from popcorn.video.remote import Retry

    api = FakeVideosAPI(mp4_bytes)
    limited = iter([httpx.Response(429, json={"error": {"code": "rate_limit_exceeded", "message": "slow down"}})])

    def transport(request):
        if request.method == "POST":
            reply = next(limited, None)
            if reply is not None:
                return reply
        return api(request)

    gen = SoraGenerator(transport=httpx.MockTransport(transport), poll_interval=0, retry=Retry(base_s=0.01))
    assert gen.render(RenderRequest(prompt="x")).num_frames == 16 and api.polls == 2
    asked = []
    broke = httpx.MockTransport(lambda r: asked.append(r) or httpx.Response(
        429, json={"error": {"code": "insufficient_quota", "message": "no credit"}}))
    with pytest.raises(StageError, match="HTTP 429 no credit") as err:
        SoraGenerator(transport=broke, poll_interval=0, retry=Retry(base_s=0.01)).render(RenderRequest(prompt="x"))
    assert "billing" in err.value.hint and len(asked) == 1
