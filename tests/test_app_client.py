"""The studio's named API endpoints (/plan, /render, /score) from gradio_client, against `python app.py` on 127.0.0.1.

The app runs in a subprocess with POPCORN_HOME (runs + SQLite) in a temporary folder and the default cache (the
index and the predictor checkpoint are expensive to rebuild). Planning uses SmolLM2-135M (a real, tiny model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from tests.llm_server import free_port, stop_process
except ImportError:
    from llm_server import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
STARTUP_TIMEOUT = float(os.environ.get("POPCORN_TEST_STARTUP_TIMEOUT", "180"))
SMALL_LLM = "smollm2"


class StudioServer:
    """`python app.py --port N` on 127.0.0.1 with its own POPCORN_HOME; a context manager."""

    def __init__(self, home: Path, log_name: str = "studio_server.log", env: dict | None = None):
        self.home = Path(home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.log_path = ARTIFACTS / log_name
        self.env = {**os.environ, "POPCORN_HOME": str(self.home), "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1",
                    # the background warm-up (tests/test_warm.py) is off here, so each test's first click does its own
                    # loading and the machine is not shared with a warm-up the test does not look at
                    "POPCORN_WARM": "0", **(env or {})}
        for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "POPCORN_HOST", "POPCORN_PORT"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen | None = None
        self.seconds_to_serve: float | None = None

    def __enter__(self) -> "StudioServer":
        log = open(self.log_path, "w")
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "app.py", "--port", str(self.port)], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        self.seconds_to_serve = time.perf_counter() - started
                        print(f"studio served {self.url} after {self.seconds_to_serve:.1f} s")
                        return self
            except OSError:
                time.sleep(0.25)
        self.__exit__()
        raise RuntimeError(f"the studio did not answer within {STARTUP_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with StudioServer(tmp_path_factory.mktemp("studio-api-home"), "studio_api.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False)


def _store(server):
    from popcorn.store import Store

    return Store(server.home / "popcorn.db")


def test_a_studio_for_this_machine_answers_only_requests_addressed_to_it(server):
    """Bound to 127.0.0.1 (every backend, the Experiments page): a request naming another host (a DNS-rebinding page,
    a proxy passing its public Host) is refused, HTTP and the queue API alike; this machine's names are served."""
    import httpx

    from popcorn.ui.guard import loopback_host

    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost"):
        assert httpx.get(server.url + "config", headers={"host": host}, timeout=30).status_code == 200, host
    for host in (f"evil.example:{server.port}", "127.0.0.1.evil.example", f"192.168.1.5:{server.port}"):
        for method, path in (("GET", "config"), ("GET", ""), ("POST", "gradio_api/queue/join")):
            response = httpx.request(method, server.url + path, headers={"host": host}, json={}, timeout=30)
            assert response.status_code == 403 and "this machine only" in response.text, (host, path)
    assert loopback_host("[::1]:7860") and loopback_host("::1") and not loopback_host("[::2]:7860")


def test_named_endpoints_are_public_and_nothing_else(client):
    api = client.view_api(print_info=False, return_format="dict")
    named = set(api["named_endpoints"])
    assert {"/plan", "/render", "/score"} <= named
    # UI-only events are private; the batch page's two endpoints exist on a studio bound to this machine only
    assert not (named - {"/plan", "/render", "/score", "/experiments_batch", "/experiments_report"}), named
    params = [p["parameter_name"] for p in api["named_endpoints"]["/plan"]["parameters"]]
    assert params == ["query", "mode", "k", "llm", "seed", "candidates", "video"]


def test_plan_basic_then_render_through_the_api(client, server):
    out = client.predict("street basketball trick shot at sunset", "basic", 10, SMALL_LLM, 2, 1, api_name="/plan")
    title, cover_prompt, video_prompt, references, reasoning, candidates, run_id, why = out
    assert title and len(title) <= 50 and video_prompt
    assert references["headers"] == ["title", "label", "comments", "match", "category"]  # titles first (issue 26)
    assert "Basic mode" in why
    stored = _store(server).get_run(run_id)
    assert stored["status"] == "planned"
    assert stored["plan"]["title"] == title
    assert stored["settings"]["llm"] == SMALL_LLM and stored["settings"]["seed"] == 2
    assert stored["settings"]["video"] == "storyboard"  # the plan was fitted to the video model picked beside it

    video, cover, card, details, neighbours, files, render_id, notes = client.predict(
        run_id, title, cover_prompt, video_prompt, "storyboard", 2, api_name="/render")
    assert render_id == run_id
    data = Path(video["video"] if isinstance(video, dict) else video).read_bytes()
    assert data[4:8] == b"ftyp" and len(data) > 10_000  # an MP4 came back
    assert Path(cover).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = _store(server).get_run(run_id)
    assert stored["status"] == "done", stored["error"]
    baseline = stored["baseline"]["videos"][0]
    assert "Human-matched baseline" in card and f"<b>{baseline['comments']:,}</b> actual" in card
    assert [Path(f).name for f in files] == ["run.json", "video.mp4"]
    assert details["score"] == stored["score"] and details["baseline"] == stored["baseline"]
    assert neighbours["headers"] == ["title", "category", "comments", "match"] and neighbours["data"]


def test_score_endpoint_matches_the_predictor(client):
    from popcorn.popularity import get_predictor

    score, baseline, card = client.predict("When my dog sees the sea for the first time # cute pet", "", "Animal",
                                           api_name="/score")
    expected = get_predictor().score("When my dog sees the sea for the first time # cute pet", "",
                                     category="Animal").to_dict()
    assert score["predicted_comments"] == pytest.approx(expected["predicted_comments"], rel=1e-6)
    assert score["category"] == "Animal"
    assert [n["video_id"] for n in score["neighbours"]] == [n["video_id"] for n in expected["neighbours"]]
    assert baseline["videos"] and baseline["videos"][0]["category"] == "Animal"
    assert f"{round(score['predicted_comments']):,}" in card


def test_errors_come_back_as_messages_not_tracebacks(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        client.predict("   ", "basic", 10, SMALL_LLM, 0, 1, api_name="/plan")
    assert "Stage input failed: the query is empty." in str(info.value)
    with pytest.raises(AppError) as info:
        client.predict("a cat", "basic", 10, "openai", 0, 1, api_name="/plan")
    assert "Stage plan failed: LLM 'openai' cannot run here" in str(info.value)
    assert "Traceback" not in str(info.value)
    with pytest.raises(AppError) as info:
        client.predict("", "A title", "", "", "storyboard", 0, api_name="/render")
    assert "Stage input failed: the video prompt is empty." in str(info.value)
