"""The Kling generator against a stand-in of Kling's API served over real HTTP on 127.0.0.1.

FakeKling speaks the protocol of Kling's API documentation (see popcorn/video/kling.py): it checks every API
request's token as Kling does (a JWT signed HS256 with the secret key, iss = the access key, nbf <= now < exp),
answers the documented envelope {"code", "message", "request_id", "data"} and error codes, walks a task through
submitted -> processing -> succeed | failed, and serves the MP4 from a CDN path that wants no token. Through it:
success, a refused prompt, rate limits then success, an exhausted account, a failed task, a timeout, Cancel (direct
and from the studio), the keys never shown, and `--video kling` through the CLI, the batch and the studio."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from popcorn.compose import encode_mp4
from popcorn.serve import access
from popcorn.types import StageError
from popcorn.video import RenderRequest, get_generator
from popcorn.video.kling import KlingGenerator, api_token
from popcorn.video.remote import Retry

ROOT = Path(__file__).resolve().parent.parent
AK = "ak-test-ACCESS-7f3e91"
SK = "sk-test-SECRET-0b62d4"
PROMPT = "A red kite climbs over a windy beach at sunset. The camera follows its tail."
REFUSED = "forbidden"  # FakeKling refuses prompts with this word (code 1301), as Kling's content policy would


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_claims(authorization: str) -> dict | None:
    """The claims of a Bearer token if Kling would accept it (signature, alg, iss, nbf/exp), else None."""
    if not authorization.startswith("Bearer "):
        return None
    try:
        head, payload, signature = authorization[len("Bearer "):].split(".")
        expected = hmac.new(SK.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest()
        header, claims = json.loads(_unb64(head)), json.loads(_unb64(payload))
    except ValueError:
        return None
    fresh = claims.get("nbf", 1e18) <= time.time() < claims.get("exp", 0)
    if hmac.compare_digest(_unb64(signature), expected) and header == {"alg": "HS256", "typ": "JWT"} \
            and claims.get("iss") == AK and fresh:
        return claims
    return None


class FakeKling:
    """Kling's text-to-video API on 127.0.0.1 (see the module's docstring). Script it through its attributes."""

    def __init__(self, mp4: bytes):
        self.mp4 = mp4
        self.create_replies: list[tuple[int, dict]] = []  # answered to creates first, one each
        self.poll_replies: list[tuple[int, dict]] = []  # answered to status reads first, one each
        self.states = ["processing", "succeed"]  # each status read of a task reports the next; the last repeats
        self.fail_msg = "Failure to pass the risk control system"
        self.requests: list[dict] = []
        self._ids = itertools.count(860_000_000_000_000_001)
        self._reads: dict[str, int] = {}
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [r["path"] for r in self.requests if method in (None, r["method"])]

    def _answer(self, method: str, path: str, headers: dict, body: dict | None) -> tuple[int, dict | bytes]:
        with self._lock:
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            if path.startswith("/cdn/"):
                return 200, self.mp4
            authorization = headers.get("authorization", "")
            if token_claims(authorization) is None:  # echo what was sent, as a careless server might
                return 401, {"code": 1002, "message": f"Authorization is invalid: {authorization} {AK}",
                             "request_id": "req-401"}
            if method == "POST" and path == "/v1/videos/text2video":
                if self.create_replies:
                    return self.create_replies.pop(0)
                if REFUSED in (body or {}).get("prompt", ""):
                    return 400, {"code": 1301, "message": "Trigger the content security policy of the platform",
                                 "request_id": "req-1301"}
                task_id = str(next(self._ids))
                self._reads[task_id] = 0
                return 200, {"code": 0, "message": "SUCCEED", "request_id": f"req-{task_id}",
                             "data": {"task_id": task_id, "task_status": "submitted", "task_info": {},
                                      "created_at": 1722769557708, "updated_at": 1722769557708}}
            task_id = path.rsplit("/", 1)[-1]
            if method == "GET" and path.startswith("/v1/videos/text2video/") and task_id in self._reads:
                if self.poll_replies:
                    return self.poll_replies.pop(0)
                state = self.states[min(self._reads[task_id], len(self.states) - 1)]
                self._reads[task_id] += 1
                data = {"task_id": task_id, "task_status": state, "task_status_msg": "", "task_info": {},
                        "created_at": 1722769557708, "updated_at": 1722769560000}
                if state == "succeed":
                    data["task_result"] = {"videos": [{"id": f"v{task_id}", "url": f"{self.url}/cdn/{task_id}.mp4",
                                                       "duration": "5.0"}]}
                if state == "failed":
                    data["task_status_msg"] = self.fail_msg
                return 200, {"code": 0, "message": "SUCCEED", "request_id": "req-poll", "data": data}
            return 404, {"code": 1203, "message": f"no such resource {path}", "request_id": "req-404"}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, answer = fake._answer(method, self.path, headers, body)
                payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "video/mp4" if isinstance(answer, bytes) else "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory):
    frames = np.zeros((16, 128, 72, 3), np.uint8)
    frames[..., 1] = np.arange(16, dtype=np.uint8)[:, None, None] * 15
    path = tmp_path_factory.mktemp("kling") / "kling.mp4"
    encode_mp4(frames, 16, path)
    return path.read_bytes()


@pytest.fixture()
def kling(monkeypatch, mp4_bytes):
    fake = FakeKling(mp4_bytes)
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    monkeypatch.setenv("KLING_BASE_URL", fake.url)
    monkeypatch.delenv("POPCORN_KLING_MODEL", raising=False)
    monkeypatch.delenv("POPCORN_KLING_MODE", raising=False)
    yield fake
    fake.close()


@pytest.fixture()
def registered(monkeypatch, kling):
    """The registry's kling generator (what --video kling gets), polling fast against the stand-in."""
    gen = get_generator("kling")
    monkeypatch.setattr(gen, "poll_interval", 0.05)
    monkeypatch.setattr(gen, "retry", Retry(tries=3, base_s=0.01))
    return gen


def fast(**kw) -> KlingGenerator:
    return KlingGenerator(poll_interval=kw.pop("poll_interval", 0.01), retry=Retry(tries=4, base_s=0.01), **kw)


def assert_no_secret(*texts: str, tokens: list[str] = ()) -> None:
    for text in texts:
        for secret in (AK, SK, *tokens):
            assert secret not in text


# ------------------------------------------------------------------------------------------------------------ success


def test_submit_poll_download_decode(kling):
    seen = []
    clip = fast().render(RenderRequest(prompt=PROMPT, negative_prompt="blurry, text", seed=3),
                         progress=lambda f, m: seen.append((f, m)))

    create = kling.requests[0]
    assert (create["method"], create["path"]) == ("POST", "/v1/videos/text2video")
    assert create["headers"]["content-type"] == "application/json"
    assert create["body"] == {"model_name": "kling-v1-6", "prompt": PROMPT, "mode": "std", "aspect_ratio": "9:16",
                              "duration": "5", "negative_prompt": "blurry, text"}
    claims = token_claims(create["headers"]["authorization"])
    assert claims is not None and claims["exp"] - claims["nbf"] == 1805 and abs(claims["nbf"] + 5 - time.time()) < 60
    task_id = clip.settings["task_id"]
    assert kling.paths() == ["/v1/videos/text2video", f"/v1/videos/text2video/{task_id}",
                             f"/v1/videos/text2video/{task_id}", f"/cdn/{task_id}.mp4"]
    assert "authorization" not in kling.requests[-1]["headers"]  # the token never goes to the video's host

    assert clip.frames.shape == (16, 128, 72, 3) and clip.fps == 16 and (clip.width, clip.height) == (72, 128)
    assert clip.generator == "kling" and clip.is_preview is False
    assert clip.settings | {"seconds_to_render": 0} == {
        "model": "kling-v1-6", "mode": "std", "task_id": task_id, "video_id": f"v{task_id}", "aspect_ratio": "9:16",
        "duration": 5, "width": 72, "height": 128, "num_frames": 16, "fps": 16, "seed": 3, "prompt": PROMPT,
        "negative_prompt": "blurry, text", "seconds_to_render": 0}
    assert [m.split(" (")[0] for _, m in seen] == ["Kling: task submitted, waiting for a slot", "Kling: rendering",
                                                   "Kling video downloaded"]
    assert [f for f, _ in seen] == [0.1, 0.5, 1.0]
    assert any("3.0 s -> 5 s" in n for n in clip.notes)
    assert "Kling's API takes no seed: the seed is recorded but not used" in clip.notes
    tokens = [r["headers"]["authorization"][7:] for r in kling.requests if "authorization" in r["headers"]]
    assert_no_secret(repr(fast()), json.dumps(clip.to_dict()), tokens=tokens)


def test_a_fresh_token_signs_each_request_and_matches_the_documented_recipe():
    token = api_token(AK, SK, now=1_700_000_000)
    head, payload, _ = token.split(".")
    assert json.loads(_unb64(head)) == {"alg": "HS256", "typ": "JWT"}
    assert json.loads(_unb64(payload)) == {"iss": AK, "exp": 1_700_001_800, "nbf": 1_699_999_995}
    assert token != api_token(AK, "another secret", now=1_700_000_000)
    assert token_claims(f"Bearer {api_token(AK, SK)}") is not None
    assert token_claims(f"Bearer {api_token(AK, SK, now=time.time() - 1900)}") is None  # expired


def test_sizes_lengths_and_modes_are_snapped_with_notes(monkeypatch):
    gen = KlingGenerator()
    req, notes = gen.snap(RenderRequest(prompt="x", width=1920, height=1080, seconds=9))
    assert (req.width, req.height, req.seconds) == (1280, 720, 10.0) and gen.aspect_of(req) == "16:9"
    assert len(notes) == 2 and gen.snap(req)[1] == []  # a snapped request snaps to itself, with no new note
    req, notes = gen.snap(RenderRequest(prompt="x", width=480, height=480, num_frames=24, fps=24))
    assert (req.width, req.height, req.seconds) == (720, 720, 5.0) and gen.aspect_of(req) == "1:1"
    monkeypatch.setenv("POPCORN_KLING_MODE", "pro")
    monkeypatch.setenv("POPCORN_KLING_MODEL", "kling-v3")
    req, notes = gen.snap(RenderRequest(prompt="x"))  # kling-v3 renders 3-15 s: the default 3 s clip fits
    assert (req.width, req.height, req.seconds) == (1080, 1920, 3.0) and notes == []


# ------------------------------------------------------------------------------------------------------------ failures


def test_a_refused_prompt_is_a_render_error_naming_the_content_policy(kling):
    with pytest.raises(StageError) as err:
        fast().render(RenderRequest(prompt=f"something {REFUSED} here"))
    assert err.value.stage == "render"
    assert err.value.message.startswith("Kling refused the prompt (the content security policy; HTTP 400, code 1301")
    assert "rephrase the video prompt" in err.value.hint
    assert kling.paths() == ["/v1/videos/text2video"]  # a refusal is not sent again


def test_rate_limits_and_a_server_hiccup_are_waited_out(kling):
    kling.create_replies = [(429, {"code": 1302, "message": "too fast", "request_id": "r1"}),
                            (429, {"code": 1303, "message": "parallel task over resource pack limit",
                                   "request_id": "r2"})]
    kling.poll_replies = [(503, {"code": 5001, "message": "maintenance", "request_id": "r3"})]
    seen = []
    clip = fast().render(RenderRequest(prompt=PROMPT), progress=lambda f, m: seen.append(m))
    assert clip.num_frames == 16
    assert kling.paths("POST") == ["/v1/videos/text2video"] * 3  # two refused for the rate, the third made the task
    assert len(kling.paths("GET")) == 4  # 503, processing, succeed, the video
    waits = [m for m in seen if "trying again" in m]
    assert len(waits) == 3 and "Kling create: HTTP 429; trying again" in waits[0] and "(try 2 of 4)" in waits[0]


def test_a_rate_limit_that_does_not_pass_says_so(kling):
    kling.create_replies = [(429, {"code": 1302, "message": "too fast", "request_id": "r"})] * 4
    with pytest.raises(StageError) as err:
        fast().render(RenderRequest(prompt=PROMPT))
    assert "code 1302" in err.value.message and "still rate limited" in err.value.hint
    assert kling.paths("POST") == ["/v1/videos/text2video"] * 4


def test_an_exhausted_account_fails_at_once_with_what_to_do(kling):
    kling.create_replies = [(429, {"code": 1102, "message": "resource pack exhausted", "request_id": "r"})]
    with pytest.raises(StageError) as err:
        fast().render(RenderRequest(prompt=PROMPT))
    assert "HTTP 429, code 1102" in err.value.message and "resource packs" in err.value.hint
    assert kling.paths() == ["/v1/videos/text2video"]


def test_a_failed_task_is_a_render_error_with_kling_s_reason(kling):
    kling.states = ["processing", "failed"]
    with pytest.raises(StageError) as err:
        fast().render(RenderRequest(prompt=PROMPT))
    assert err.value.stage == "render"
    assert err.value.message.startswith("Kling task 86") and err.value.message.endswith(
        "failed: Failure to pass the risk control system")
    assert "rephrase the video prompt" in err.value.hint
    assert not any(p.startswith("/cdn/") for p in kling.paths())


def test_a_task_that_never_ends_times_out(kling, caplog):
    kling.states = ["processing"]
    with pytest.raises(StageError) as err:
        fast(poll_interval=0.05, timeout_s=0.3).render(RenderRequest(prompt=PROMPT))
    assert err.value.stage == "render" and "did not finish in 0 s" in err.value.message
    assert "may still finish" in err.value.hint
    assert "runs on (and is billed) at Kling" in caplog.text


def test_cancel_stops_the_wait_within_a_second_and_downloads_nothing(kling, caplog):
    from popcorn.studio import Cancelled

    kling.states = ["processing"]
    asked = threading.Event()

    def progress(fraction, message):
        if asked.is_set():
            raise Cancelled("render", "cancelled by the user", "press the button again to start over")
        if message.startswith("Kling: task submitted"):
            asked.set()  # the user presses Cancel once the task is submitted

    started = time.monotonic()
    with pytest.raises(Cancelled):
        fast(poll_interval=30).render(RenderRequest(prompt=PROMPT), progress=progress)
    assert time.monotonic() - started < 5  # the 30 s wait before the next read is cut: it reports every second
    time.sleep(0.3)
    assert kling.paths() == ["/v1/videos/text2video"]  # no status read after the Cancel, no download
    assert "runs on (and is billed) at Kling" in caplog.text


def test_keys_and_tokens_never_reach_logs_or_errors(kling, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # httpx, httpcore and popcorn at their most talkative
    fast().render(RenderRequest(prompt=PROMPT))
    monkeypatch.setenv("KLING_SECRET_KEY", "not-the-secret")  # Kling rejects the token and echoes it back
    with pytest.raises(StageError) as err:
        fast().render(RenderRequest(prompt=PROMPT))
    assert "HTTP 401, code 1002" in err.value.message and "KLING_SECRET_KEY" in err.value.hint
    assert "Authorization is invalid: Bearer ***" in err.value.message
    tokens = [r["headers"]["authorization"][7:] for r in kling.requests if "authorization" in r["headers"]]
    assert len(tokens) == 4 and len(set(tokens)) >= 2  # create + 2 reads, then the refused create
    assert_no_secret(caplog.text, str(err.value), err.value.hint, tokens=tokens)


def test_without_keys_it_is_unavailable_and_names_the_variable(monkeypatch):
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.delenv("KLING_SECRET_KEY", raising=False)
    monkeypatch.delenv("POPCORN_KLING_MODE", raising=False)
    ok, reason = KlingGenerator().available()
    assert not ok and "KLING_SECRET_KEY" in reason and "KLING_ACCESS_KEY" not in reason
    with pytest.raises(StageError, match="KLING_SECRET_KEY not set"):
        KlingGenerator().render(RenderRequest(prompt="x"))
    monkeypatch.delenv("KLING_ACCESS_KEY")
    assert "KLING_ACCESS_KEY and KLING_SECRET_KEY" in KlingGenerator().available()[1]
    monkeypatch.setenv("KLING_ACCESS_KEY", AK)
    monkeypatch.setenv("KLING_SECRET_KEY", SK)
    monkeypatch.setenv("POPCORN_KLING_MODE", "turbo")
    assert "use std or pro" in KlingGenerator().available()[1]
    monkeypatch.delenv("POPCORN_KLING_MODE")
    monkeypatch.setenv("POPCORN_OFFLINE", "1")
    monkeypatch.delenv("KLING_BASE_URL", raising=False)
    assert KlingGenerator().available() == (False, "offline (POPCORN_OFFLINE / HF_HUB_OFFLINE is set)")
    monkeypatch.setenv("KLING_BASE_URL", "http://127.0.0.1:9")  # a local stand-in is reachable offline
    assert KlingGenerator().available()[0] is True


def test_on_a_public_instance_kling_is_paid_and_limited(monkeypatch):
    monkeypatch.setenv("POPCORN_PAID_LIMIT", "2")
    monkeypatch.setenv("POPCORN_PAID_TOTAL", "3")
    monkeypatch.setattr(access, "_PAID", {})
    assert access.is_paid("kling")
    access.charge_paid("c:k1", "kling")
    access.charge_paid("c:k1", "sora")  # one allowance for all paid backends
    with pytest.raises(StageError, match="'kling' uses the owner's API key and this visitor has used it 2 times"):
        access.charge_paid("c:k1", "kling")
    access.charge_paid("c:k2", "kling")
    with pytest.raises(StageError, match="this studio's visitors have used paid backends 3 times"):
        access.charge_paid("c:k3", "kling")


# ------------------------------------------------------------------------------------------- CLI, batch and studio


def test_cli_render_with_video_kling(kling, tmp_path):
    plan = {"title": "Kite day", "cover_prompt": "a red kite", "video_prompt": PROMPT, "mode": "basic", "llm": "local",
            "query": "kite flying at the beach"}
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    env = {**os.environ, "POPCORN_HOME": str(tmp_path / "home")}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "popcorn", "render", "--plan", str(tmp_path / "plan.json"),
                           "--video", "kling", "--out", str(out), "--no-score"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (out / "video.mp4").stat().st_size > 1000 and (out / "cover.png").is_file()
    run_json, video_json = ((out / name).read_text(encoding="utf-8") for name in ("run.json", "video.json"))
    assert json.loads(run_json)["video"]["generator"] == "kling"
    settings = json.loads(video_json)["clip"]["settings"]
    assert f"/cdn/{settings['task_id']}.mp4" in kling.paths("GET")
    assert (settings["aspect_ratio"], settings["model"], settings["duration"]) == ("9:16", "kling-v1-6", 5)
    tokens = [r["headers"]["authorization"][7:] for r in kling.requests if "authorization" in r["headers"]]
    assert_no_secret(run_json, video_json, proc.stdout, proc.stderr, tokens=tokens)


def test_cli_names_the_stage_of_a_refused_prompt(kling, tmp_path):
    plan = {"title": "No", "cover_prompt": "x", "video_prompt": f"a {REFUSED} scene", "mode": "basic", "llm": "local"}
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "popcorn", "render", "--plan", str(tmp_path / "plan.json"),
                           "--video", "kling", "--out", str(tmp_path / "out"), "--no-score"],
                          cwd=ROOT, env={**os.environ, "POPCORN_HOME": str(tmp_path / "home")},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "render" in proc.stderr and "Kling refused the prompt (the content security policy" in proc.stderr
    assert_no_secret(proc.stdout, proc.stderr)


@pytest.mark.slow  # scores with the predictor
def test_batch_renders_with_kling_and_records_a_refusal_at_its_stage(registered, kling, tmp_path):
    from popcorn import pipeline
    from popcorn.experiments import grid, prompts_file, runner
    from popcorn.experiments.shard import Shard
    from popcorn.store import Store
    from popcorn.types import Plan

    prompts = [prompts_file.Prompt("kite flying at the beach"), prompts_file.Prompt("a forbidden scene")]
    specs = grid.build_grid(prompts, ["basic"], ["local"], ["kling"], [0])
    store = Store(home=tmp_path)
    for spec, video_prompt in zip(specs, (PROMPT, f"A {REFUSED} scene on a beach.")):
        plan = Plan(title="Kite day", cover_prompt="a red kite", video_prompt=video_prompt, mode="basic", llm="local",
                    query=spec.prompt.query)
        record = pipeline.Run(spec.settings(), id=spec.key, plan=plan).to_dict()
        record["settings"]["batch"] = {**spec.meta(), "stage": "planned", "attempts": 0}
        store.save_run(record, status="planned")  # planned already: the batch asks no LLM
    result = runner.run_batch(specs, tmp_path, shard=Shard(0, 1), show_bar=False)
    assert (result.done, result.failed, result.plans) == (1, 1, 0)
    done, refused = (store.get_run(s.key) for s in specs)
    assert done["status"] == "done" and done["video"]["generator"] == "kling"
    assert Path(done["video"]["video"]).is_file() and done["score"]["predicted_comments"] >= 0
    failure = refused["settings"]["batch"]["failure"]
    assert refused["status"] == "failed" and failure["stage"] == "render"
    assert failure["message"].startswith("Kling refused the prompt") and "rephrase" in failure["hint"]


def test_studio_renders_with_kling_and_cancel_stops_it(registered, kling, tmp_path, monkeypatch):
    from popcorn import studio
    from popcorn.store import Store

    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    out = studio.render_action("", "Kite day", "a red kite", PROMPT, "kling", 0, visitor="me")
    record = Store(tmp_path / "home" / "popcorn.db").get_run(out.run_id)
    assert record["status"] == "done", record["error"]
    assert record["video"]["generator"] == "kling" and Path(out.video).name == "video.mp4"
    settings = json.loads(Path(record["video"]["metadata"]).read_text(encoding="utf-8"))["clip"]["settings"]
    assert kling.paths("GET")[-1] == f"/cdn/{settings['task_id']}.mp4"

    kling.states = ["processing"]
    key = "tab-kling"

    def sink(fraction, desc=None):
        if desc and "Kling: rendering" in desc:
            studio.cancel(key)  # the visitor presses Cancel while Kling renders

    with pytest.raises(studio.StudioError) as info:
        studio.render_action("", "Kite day", "a red kite", PROMPT, "kling", 0, visitor="me", progress=sink,
                             cancel_key=key)
    assert str(info.value).startswith("Cancelled during stage render.")
    runs = Store(tmp_path / "home" / "popcorn.db").list_runs()
    assert sorted(r["status"] for r in runs) == ["cancelled", "done"]
    cdn = [p for p in kling.paths() if p.startswith("/cdn/")]
    assert len(cdn) == 1  # only the first render's video was fetched
