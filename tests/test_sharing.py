"""A public studio shares nothing between visitors: files, history, runs, backends, the API (issue 11).

The server is `python app.py` on 127.0.0.1, made public-safe as docs/DEPLOY.md says (POPCORN_PUBLIC=1, an admin
secret), with its own POPCORN_HOME and Gradio cache. Visitors are gradio_client / httpx clients, each with the
visitor cookie the server gave it, and Chromium contexts for the History tab.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest

from popcorn.serve import access

try:
    from tests.test_app_client import ARTIFACTS, StudioServer
    from tests.test_browser import CHROMIUM, _field, _wait
except ImportError:
    from test_app_client import ARTIFACTS, StudioServer
    from test_browser import CHROMIUM, _field, _wait

SECRET = "owner-secret-7f3a9c"
PLAN = ("Puppy meets the sea", "a golden retriever puppy on a beach at dawn",
        "A golden retriever puppy runs to the water. A small wave touches its paws. It jumps back and barks.")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharing")
    env = {"POPCORN_PUBLIC": "1", "POPCORN_ADMIN_SECRET": SECRET, "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "POPCORN_BACKENDS": "", "POPCORN_ALLOW_CUSTOM_BACKENDS": "",
           "POPCORN_TRUSTED_PROXIES": "127.0.0.1"}  # so a test can guess from an address of its own
    with StudioServer(tmp / "home", "studio_sharing.log", env=env) as s:
        s.gradio_cache = tmp / "gradio"
        yield s


def _client(server):
    from gradio_client import Client

    return Client(server.url, verbose=False, download_files=False)


def _render(client) -> tuple[str, str, str]:
    """A visitor renders a plan of their own (storyboard): (run id, video URL, run.json URL)."""
    video, cover, card, details, neighbours, files, run_id, notes = client.predict("", *PLAN, "storyboard", 0,
                                                                                   api_name="/render")
    return run_id, video["video"]["url"] if "video" in video else video["url"], files[0]["url"]


@pytest.fixture(scope="module")
def visitors(server):
    """Two visitors, each with a rendered run: {"a": (client, run id, video URL, run.json URL), "b": ...}."""
    out = {}
    for name in ("a", "b"):
        client = _client(server)
        out[name] = (client, *_render(client))
    return out


def _get(server, url_or_path: str, cookie: str | None = None) -> httpx.Response:
    url = url_or_path if url_or_path.startswith("http") else server.url.rstrip("/") + url_or_path
    return httpx.get(url, cookies={access.COOKIE: cookie} if cookie else None, timeout=30)


# ------------------------------------------------------------------------------------------------ cookies, visitors


def test_signed_cookie_identifies_a_visitor_and_forgeries_are_ignored(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path))
    value = access.new_cookie()
    token = access.cookie_token(value)
    assert token and len(token) >= 22  # 128 random bits, url-safe base64
    assert access.visitor_id(value, "sess") == f"c:{token}"
    assert access.visitor_id(value, "sess", user="alice") == "hf:alice"  # a signed-in HF user wins
    forged = token + "." + "A" * 22
    assert access.cookie_token(forged) is None and access.visitor_id(forged, "sess") == "s:sess"
    for odd in (token + "." + "\u00e9" * 22, "\u00e9." + "A" * 22):  # non-ASCII: ignored, not an exception
        assert access.cookie_token(odd) is None and access.visitor_id(odd, "sess") == "s:sess"
    assert access.visitor_id(None, "") == ""
    assert (tmp_path / "secret.key").stat().st_mode & 0o077 == 0  # the signing key is the server's alone


def test_first_response_sets_an_httponly_cookie_and_a_valid_one_is_kept(server):
    first = _get(server, "/")
    header = first.headers.get("set-cookie", "")
    assert header.startswith(f"{access.COOKIE}=") and "HttpOnly" in header and "SameSite=Lax" in header
    cookie = first.cookies[access.COOKIE]
    again = _get(server, "/config", cookie)
    assert again.status_code == 200 and "set-cookie" not in again.headers
    # a cookie that decodes to non-ASCII text (octal escapes) is a cookie like any forged one: a fresh one, no error
    odd = httpx.get(server.url + "config", headers={"cookie": f'{access.COOKIE}="abc.\\303\\251"'}, timeout=30)
    assert odd.status_code == 200 and odd.headers.get("set-cookie", "").startswith(f"{access.COOKIE}=")


def test_owner_secret_is_checked_and_enables_seeing_all(monkeypatch):
    monkeypatch.setenv("POPCORN_ADMIN_SECRET", SECRET)
    assert not access.sign_in_owner("c:x", "wrong") and not access.is_owner("c:x")
    assert not access.sign_in_owner("c:x", SECRET[:-1])
    assert access.sign_in_owner("c:x", SECRET) and access.is_owner("c:x")
    assert access.may_see("c:x", "c:someone-else") and not access.may_see("c:y", "c:someone-else")
    access.sign_out_owner("c:x")
    monkeypatch.delenv("POPCORN_ADMIN_SECRET")
    assert not access.sign_in_owner("c:x", "")  # no secret set: there is no owner mode


def test_run_ids_are_unguessable():
    from popcorn.studio import new_run_id

    ids = {new_run_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"\d{8}-[0-9a-f]{32}", i) for i in ids)  # a date and 128 random bits


# ------------------------------------------------------------------------------------------------ files


def _sensitive(server, visitors) -> dict[str, Path]:
    """Files a visitor must never get, each present on disk."""
    from popcorn import config

    home = server.home
    other_run = home / "runs" / visitors["b"][1]
    files = {"db": home / "popcorn.db", "db-wal": home / "popcorn.db-wal", "db-shm": home / "popcorn.db-shm",
             "cookie key": home / "secret.key", "a run's video in the home": other_run / "video.mp4",
             "a run's run.json in the home": other_run / "run.json", "passwd": Path("/etc/passwd")}
    cache = config.cache_dir()
    ggufs = sorted(cache.glob("models/**/*.gguf"))
    caches = sorted(cache.glob("embeddings/*.npy")) + sorted(cache.glob("retrieval/**/*.faiss"))
    if ggufs:
        files["GGUF"] = ggufs[0]
    if caches:
        files["cache"] = caches[0]
    assert all(files[k].exists() for k in ("db", "cookie key", "a run's video in the home")), files
    return files  # the -wal/-shm exist while a connection is open; refused whether there or not


def _file_routes() -> list[str]:
    """Every GET route of a Gradio 6 app that takes a path (from the app's own route table), as format strings."""
    import gradio as gr
    from gradio.routes import App

    with gr.Blocks() as demo:
        gr.Textbox()
    app = App.create_app(demo)

    def walk(routes):  # FastAPI keeps an included router (Gradio's /gradio_api one) as one entry
        for route in routes:
            inner = getattr(route, "original_router", None)
            yield from walk(inner.routes) if inner is not None else [route]

    routes = set()
    for route in walk(app.routes):
        methods = getattr(route, "methods", None) or set()
        if "GET" in methods and re.search(r"\{[^}]*:path\}", route.path):
            routes.add(re.sub(r"\{[^}]*:path\}", "{}", route.path))
    return sorted(routes)


def test_every_file_route_refuses_the_store_the_caches_and_other_visitors_files(server, visitors):
    client_a, run_a, video_a, json_a = visitors["a"]
    cookie_a = client_a.cookies[access.COOKIE]
    routes = _file_routes()
    assert {"/gradio_api/file={}", "/gradio_api/file/{}", "/static/{}", "/assets/{}"} <= set(routes), routes
    routes += ["/file={}", "/file/{}"]  # the pre-5 spellings, in case a client still asks for them
    for name, path in _sensitive(server, visitors).items():
        data = path.read_bytes()[:64] if path.exists() else b"SQLite format 3"
        spellings = [str(path), str(path).lstrip("/"), os.path.relpath(path), f"{server.gradio_cache}/{os.path.relpath(path, server.gradio_cache)}",
                     str(path).replace("/", "%2F")]
        for route in routes:
            for spelling in spellings:
                response = _get(server, route.format(spelling), cookie_a)
                assert response.status_code in (400, 403, 404, 405), (name, route, spelling, response.status_code)
                assert data not in response.content
    # a hand-out of visitor a: a gets it; b, and someone with no cookie, do not
    assert _get(server, video_a, cookie_a).content[4:8] == b"ftyp"
    assert _get(server, json_a, cookie_a).json()["id"] == run_a
    cookie_b = visitors["b"][0].cookies[access.COOKIE]
    for cookie in (cookie_b, None, "forged." + "A" * 22):
        assert _get(server, video_a, cookie).status_code == 403
        assert _get(server, json_a, cookie).status_code == 403


def test_handed_out_run_json_names_no_server_folder(server, visitors):
    client_a, run_a, video_a, json_a = visitors["a"]
    text = _get(server, json_a, client_a.cookies[access.COOKIE]).text
    assert str(server.home) not in text and '"visitor"' not in text
    assert '"video": "video.mp4"' in text


def test_a_holder_asking_again_for_the_same_run_gets_the_same_copies(tmp_path, monkeypatch):
    """A History click (or its event called over the queue API in a loop) does not copy the video again each time."""
    from popcorn.serve import serving

    monkeypatch.setattr(serving, "_ROOT", [tmp_path / "serve"])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "video.mp4").write_bytes(b"\0\0\0\x18ftypisom" + b"v" * 1000)
    record = {"id": "20260101-" + "a" * 32, "updated": 1.0, "video": {"video": str(tmp_path / "run" / "video.mp4")}}
    first = serving.publish(record, "c:a")
    assert set(first) == {"video", "run_json"} and serving.holder_of(first["video"]) == "c:a"
    for _ in range(20):
        assert serving.publish(record, "c:a") == first
    assert len(list((tmp_path / "serve").iterdir())) == 1
    other = serving.publish(record, "c:b")  # another holder: a folder of their own
    newer = serving.publish({**record, "updated": 2.0}, "c:a")  # the run changed: fresh copies
    folders = {Path(x["video"]).parent for x in (first, other, newer)}
    assert len(folders) == 3 and serving.holder_of(other["video"]) == "c:b"


def test_routes_that_reach_other_sessions_or_the_network_are_refused(server, visitors):
    cookie = visitors["a"][0].cookies[access.COOKIE]
    for path in ("/gradio_api/deep_link?session_hash=x", "/gradio_api/proxy=https://huggingface.co/x",
                 "/gradio_api/file=https://example.com/x.mp4", "/gradio_api/stream/x/y/1/playlist.m3u8",
                 "/monitoring", "/gradio_api/runs", "/gradio_api/run-history/records"):
        assert _get(server, path, cookie).status_code == 403, path


# ------------------------------------------------------------------------------------------------ runs, backends


def test_another_visitors_run_cannot_be_rendered_or_picked(visitors):
    from gradio_client.exceptions import AppError

    client_b = visitors["b"][0]
    run_a = visitors["a"][1]
    with pytest.raises(AppError) as info:
        client_b.predict(run_a, *PLAN, "storyboard", 0, api_name="/render")
    assert f"Stage input failed: no run '{run_a}' in your history" in str(info.value)


@pytest.mark.parametrize("llm, message", [
    ("local:/etc/passwd", "custom LLM backends like 'local:/etc/passwd' are switched off on this studio"),
    ("transformers:gpt2", "custom LLM backends like 'transformers:gpt2' are switched off"),
    ("openai-compatible:gpt-4o", "are switched off"),
    ("openai", "the plan backend 'openai' is not enabled on this studio"),
    ("smollm2", "the plan backend 'smollm2' is not enabled on this studio. Use one of: local, storyboard"),
])
def test_only_the_owners_backends_can_be_chosen(visitors, llm, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as info:
        visitors["a"][0].predict("a cat", "basic", 10, llm, 0, 1, api_name="/plan")
    assert message in str(info.value)


def test_video_backends_and_input_sizes_are_limited(visitors):
    from gradio_client.exceptions import AppError

    client = visitors["a"][0]
    with pytest.raises(AppError, match="the render backend 'ltx' is not enabled on this studio"):
        client.predict("", *PLAN, "ltx", 0, api_name="/render")
    with pytest.raises(AppError, match="the query is 10,001 characters long; the limit is 10,000"):
        client.predict("x" * 10_001, "basic", 10, "local", 0, 1, api_name="/plan")
    with pytest.raises(AppError, match="the video prompt is 4,001 characters long; the limit is 4,000"):
        client.predict("", "A title", "", "y" * 4001, "storyboard", 0, api_name="/render")
    with pytest.raises(AppError, match="Value 9 is greater than maximum value 8"):
        client.predict("a cat", "basic", 10, "local", 0, 9, api_name="/plan")


def test_paid_backends_are_rate_limited_per_visitor(monkeypatch):
    from popcorn.types import StageError

    monkeypatch.setenv("POPCORN_PAID_LIMIT", "2")
    monkeypatch.setenv("POPCORN_PAID_WINDOW", "3600")
    access.charge_paid("c:v1", "local")  # not paid: never counted
    for _ in range(2):
        access.charge_paid("c:v1", "deepseek-chat")
    with pytest.raises(StageError, match="used it 2 times in the last 60 minutes"):
        access.charge_paid("c:v1", "openai")
    access.charge_paid("c:v2", "sora")  # another visitor has their own allowance
    limiter = access.RateLimiter(1, 10)
    assert limiter.take("k", now=0) == 0 and limiter.take("k", now=5) == 5 and limiter.take("k", now=10.5) == 0
    limiter = access.RateLimiter(3, 10)
    assert limiter.take("k", 2, now=0) == 0 and limiter.take("k", 2, now=1) == 9  # 2 more only when the first 2 expire
    assert limiter.take("k", 4, now=1) == float("inf") and limiter.take("k", 1, now=1) == 0


def test_paid_calls_are_capped_for_the_server_and_count_each_candidate(monkeypatch):
    """A visitor id is free to renew (a new cookie or session per request): the server-wide cap bounds the bill."""
    from popcorn.types import StageError

    monkeypatch.setenv("POPCORN_PAID_LIMIT", "3")
    monkeypatch.setenv("POPCORN_PAID_TOTAL", "7")
    monkeypatch.setenv("POPCORN_PAID_WINDOW", "1800")
    monkeypatch.setattr(access, "_PAID", {})
    with pytest.raises(StageError, match=r"used it 0 times in the last 30 minutes; the limit is 3 \(this asks for 4\)"):
        access.charge_paid("c:w0", "openai", 4)  # 4 candidate plans are 4 calls: more than a visitor's 3
    access.charge_paid("c:w0", "openai", 3)
    with pytest.raises(StageError, match="this visitor has used it 3 times"):
        access.charge_paid("c:w0", "openai")
    for i in range(1, 5):  # fresh ids, one call each: 3 + 4 = the server's 7
        access.charge_paid(f"s:renewed-{i}", "deepseek-chat")
    with pytest.raises(StageError, match="this studio's visitors have used paid backends 7 times in the last 30 min"):
        access.charge_paid("s:renewed-5", "openai")
    access.charge_paid("s:renewed-5", "local")  # not paid: never refused


def test_public_default_and_owner_lists(monkeypatch):
    monkeypatch.delenv("POPCORN_BACKENDS", raising=False)
    monkeypatch.setenv("POPCORN_PUBLIC", "1")
    assert access.enabled_names() == {"local", "storyboard"}
    monkeypatch.setenv("POPCORN_PUBLIC", "")
    monkeypatch.setenv("POPCORN_BIND_HOST", "0.0.0.0")
    assert access.public() and access.enabled_names() == {"local", "storyboard"}
    monkeypatch.setenv("POPCORN_BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not access.public() and access.enabled_names() is None  # this machine only: every registered backend
    monkeypatch.setenv("POPCORN_BACKENDS", "local, ltx ,storyboard")
    assert access.enabled_names() == {"local", "ltx", "storyboard"}
    assert access.is_enabled("ltx") and not access.is_enabled("wan-1.3b") and not access.is_enabled("local:/x.gguf")
    monkeypatch.setenv("POPCORN_ALLOW_CUSTOM_BACKENDS", "1")
    assert access.is_enabled("local:/x.gguf") and not access.is_enabled("transformers:x")


# ------------------------------------------------------------------------------------------------ the public API


def test_the_public_api_offers_no_endpoint_across_visitors(server, visitors):
    """view_api: only /plan, /render, /score; none takes whose data to return, and none returns another's."""
    from gradio_client.exceptions import AppError

    client = visitors["b"][0]
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/plan", "/render", "/score"}
    assert not api["unnamed_endpoints"]
    for name, endpoint in api["named_endpoints"].items():
        params = {p["parameter_name"] for p in endpoint["parameters"]}
        assert not params & {"visitor", "user", "owner", "session", "secret"}, (name, params)
    info = httpx.get(server.url + "gradio_api/info", timeout=30).json()
    assert set(info["named_endpoints"]) == {"/plan", "/render", "/score"}
    # /score reads only the MicroLens corpus; /render refuses others' runs (above); /plan makes a new run
    score, baseline, card = client.predict("a cat", "", "", api_name="/score")
    assert set(score) >= {"predicted_comments"} and visitors["a"][1] not in str(score) + str(baseline) + card
    with pytest.raises(ValueError, match="Cannot find a function with `api_name`: /on_history"):
        client.predict(api_name="/on_history")  # the History tab's events are not on the API


def _queue_call(server, cookie: str | None, fn_index: int, data: list, event_data: dict | None = None,
                headers: dict | None = None) -> dict:
    """One event through Gradio's queue API by fn_index, as the browser sends it (private events are callable this
    way too); returns the process_completed message."""
    import uuid

    session = uuid.uuid4().hex[:11]
    joined = httpx.post(server.url + "gradio_api/queue/join", headers=headers, timeout=120,
                        cookies={access.COOKIE: cookie} if cookie else None,
                        json={"data": data, "event_data": event_data, "fn_index": fn_index, "trigger_id": None,
                              "session_hash": session})
    if joined.status_code != 200:
        return {"success": False, "joined": joined.status_code, "output": joined.text}
    return queue_outcome(server, session, cookie)


def queue_outcome(server, session: str, cookie: str | None, timeout: float = 900) -> dict:
    """The process_completed message of the event joined under `session`, with its gr.Info / gr.Warning messages
    ("logs")."""
    import json

    logs = []
    with httpx.Client(base_url=server.url, cookies={access.COOKIE: cookie} if cookie else None, timeout=timeout) as c:
        with c.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                message = json.loads(line[5:]) if line.startswith("data:") else {}
                if message.get("msg") == "log":
                    logs.append(message.get("log", ""))
                if message.get("msg") == "process_completed":
                    return {**message, "logs": logs}
    raise AssertionError(f"the event of session {session} did not complete")


def test_no_event_private_or_public_hands_a_stranger_another_visitors_run(server, visitors):
    """Every event of the page, called by fn_index by visitor b with a's run id in every text input and selection:
    nothing that succeeds carries a's title (which b never sends) or a's hand-out folder."""
    import uuid

    secret_title = f"only a knows {uuid.uuid4().hex[:12]}"
    out = visitors["a"][0].predict("", secret_title, *PLAN[1:], "storyboard", 0, api_name="/render")
    run_a, folder_a = out[6], (out[0].get("video") or out[0])["url"].split("/")[-2]
    cookie_b = visitors["b"][0].cookies[access.COOKIE]
    config = httpx.get(server.url + "config", cookies={access.COOKIE: cookie_b}, timeout=30).json()
    components = {c["id"]: c for c in config["components"]}

    def value(component_id: int):
        component = components[component_id]
        kind, props = component["type"], component.get("props", {})
        if kind == "radio" and props.get("choices"):
            return props["choices"][0][1]
        # a's run id as every text and every backend name (so no event makes a run of b's that holds a's id as text)
        return {"textbox": run_a, "dropdown": run_a, "number": 0, "slider": 1, "dataset": 0}.get(kind)

    called, succeeded = set(), set()
    for dependency in config["dependencies"]:
        if not dependency.get("backend_fn"):
            continue
        data = [value(i) for i in dependency["inputs"]]
        event = {"index": [0, 1], "value": run_a, "row_value": ["x", run_a], "selected": True}
        message = _queue_call(server, cookie_b, dependency["id"], data, event)
        called.add(dependency["id"])
        if message.get("success"):
            succeeded.add(dependency.get("api_name"))
            text = str(message.get("output"))
            assert secret_title not in text and folder_a not in text, (dependency.get("api_name"), text[:500])
    assert len(called) >= 15  # the studio's, the History tab's and the Study tab's events were all tried
    assert {"on_history", "on_load"} <= succeeded, succeeded  # b's own history was read, and holds nothing of a's


def test_admin_secret_tries_are_limited_per_client_and_right_ones_never_count(monkeypatch):
    from popcorn.types import StageError

    monkeypatch.setenv("POPCORN_ADMIN_SECRET", SECRET)
    monkeypatch.setattr(access, "_SECRET_TRIES", access.RateLimiter(3, 900))
    monkeypatch.setattr(access, "_SECRET_TRIES_SERVER", access.RateLimiter(5, 900))
    for _ in range(5):
        assert access.sign_in_owner("c:owner", SECRET, "198.51.100.2")  # right tries never count
    access.sign_out_owner("c:owner")
    for i in range(3):
        assert not access.sign_in_owner(f"c:guesser-{i}", f"guess-{i}", "203.0.113.7")  # a fresh id each time
    with pytest.raises(StageError, match="too many wrong admin secret tries"):
        access.sign_in_owner("c:guesser-new", SECRET, "203.0.113.7")  # over: not even the right secret is compared
    assert not access.is_owner("c:guesser-new")
    assert access.sign_in_owner("c:owner", SECRET, "198.51.100.2") and access.is_owner("c:owner")  # elsewhere: in
    access.sign_out_owner("c:owner")


def test_admin_secret_guessing_over_the_queue_api_is_stopped(server):
    """A stranger calling the History tab's private owner event by fn_index: refused after SECRET_TRIES from their
    address, even with the right secret then; the owner, elsewhere, still signs in."""
    cookie = httpx.get(server.url, timeout=30).cookies[access.COOKIE]
    config = httpx.get(server.url + "config", cookies={access.COOKIE: cookie}, timeout=30).json()
    owner = next(d["id"] for d in config["dependencies"] if d.get("api_name", "").startswith("on_owner"))
    tries = access.SECRET_TRIES["client"][0]
    stranger = {"x-forwarded-for": "203.0.113.70"}
    for i in range(tries):
        message = _queue_call(server, cookie, owner, [f"guess-{i}"], headers=stranger)
        assert message["success"] and message["output"]["data"][1]["data"] == []
        assert message["logs"] == ["That is not the admin secret."]
    message = _queue_call(server, cookie, owner, [SECRET], headers=stranger)
    assert message["success"] and message["output"]["data"][1]["data"] == []  # the history stays the visitor's own
    assert len(message["logs"]) == 1
    assert message["logs"][0].startswith("too many wrong admin secret tries from your address")
    other = httpx.get(server.url, timeout=30).cookies[access.COOKIE]
    message = _queue_call(server, other, owner, [SECRET], headers={"x-forwarded-for": "198.51.100.70"})
    assert message["logs"] == ["Owner mode: the history shows every visitor's runs."]


# ------------------------------------------------------------------------------------------------ the History tab


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
def test_each_browser_sees_its_own_history_and_the_owner_sees_all(server, visitors):
    from playwright.sync_api import sync_playwright

    runs = {name: visitors[name][1] for name in ("a", "b")}
    cookies = {name: visitors[name][0].cookies[access.COOKIE] for name in ("a", "b")}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for name, other in (("a", "b"), ("b", "a")):
                context = browser.new_context()
                context.add_cookies([{"name": access.COOKIE, "value": cookies[name], "url": server.url}])
                page = context.new_page()
                for _ in range(2):  # and again after a reload: the cookie, not the tab, is the visitor
                    page.goto(server.url, wait_until="domcontentloaded")
                    page.get_by_role("tab", name="History").click()
                    _wait(page, f"{name}'s run in the history", lambda: runs[name] in page.locator("#history")
                          .inner_text(), 120)
                    assert runs[other] not in page.locator("#history").inner_text()
                page.screenshot(path=str(ARTIFACTS / f"sharing_history_{name}.png"), full_page=True)
                context.close()

            context = browser.new_context()  # a new browser: its own, empty history; then the owner's secret
            page = context.new_page()
            page.goto(server.url, wait_until="domcontentloaded")
            page.get_by_role("tab", name="History").click()
            page.locator("#history").wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            assert not any(r in page.locator("#history").inner_text() for r in runs.values())
            page.locator("#owner-box").get_by_text("Owner").first.click()
            _field(page, "owner-secret").fill(SECRET)
            page.locator("#owner-btn").click()
            _wait(page, "every run in the owner's history", lambda: all(
                r in page.locator("#history").inner_text() for r in runs.values()), 120)
            context.close()
        finally:
            browser.close()
    assert SECRET not in server.log_path.read_text(errors="replace")  # never logged
