"""A public studio under hostile visitors (issue 25): each attack the issue lists, repeated against a served studio.

The server is `python app.py` on 127.0.0.1 with POPCORN_PUBLIC=1 and an admin secret (docs/DEPLOY.md), its own
POPCORN_HOME and Gradio cache, short header/body deadlines, and 127.0.0.1 as its trusted proxy, so a test can speak
for several client addresses through X-Forwarded-For. "The attacker's host" is a local HTTP server that records
every request made to it: nothing the studio shows, to the visitor or to the owner, may make a browser fetch from it,
and the studio itself never fetches from it.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from popcorn.serve import access
from popcorn.studio import views

try:
    from tests.test_app_client import ARTIFACTS, StudioServer
    from tests.test_browser import CHROMIUM, _close_toasts, _error_toast, _field, _wait
    from tests.test_sharing import queue_outcome
except ImportError:
    from test_app_client import ARTIFACTS, StudioServer
    from test_browser import CHROMIUM, _close_toasts, _error_toast, _field, _wait
    from test_sharing import queue_outcome

SECRET = "owner-secret-2b81e4d0"
FRIEND = "https://friend.example"
HEADER_SECONDS, BODY_SECONDS, PENDING = 2, 2, 64


class Attacker:
    """A web server on loopback that records the path of every request it gets (and serves 30 MB to each)."""

    def __init__(self):
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(30_000_000))
                self.end_headers()
                try:
                    self.wfile.write(b"x" * 30_000_000)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def attacker():
    host = Attacker()
    yield host
    host.httpd.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    env = {"POPCORN_PUBLIC": "1", "POPCORN_ADMIN_SECRET": SECRET, "GRADIO_TEMP_DIR": str(tmp / "gradio"),
           "POPCORN_BACKENDS": "", "POPCORN_ALLOW_CUSTOM_BACKENDS": "", "POPCORN_TRUSTED_PROXIES": "127.0.0.1",
           "POPCORN_CORS_ORIGINS": FRIEND, "POPCORN_HEADER_SECONDS": str(HEADER_SECONDS),
           "POPCORN_BODY_SECONDS": str(BODY_SECONDS), "POPCORN_PENDING": str(PENDING), "POPCORN_QUEUE_LIMITS": "",
           "POPCORN_ALLOW_URL_FILES": ""}
    with StudioServer(tmp / "home", "studio_hostile.log", env=env) as s:
        s.gradio_cache = tmp / "gradio"
        yield s


def _cookie(server) -> str:
    return httpx.get(server.url, timeout=30).cookies[access.COOKIE]


def _config(server, cookie: str) -> dict:
    return httpx.get(server.url + "config", cookies={access.COOKIE: cookie}, timeout=30).json()


def _fn(config: dict, api_name: str) -> int:
    return next(d["id"] for d in config["dependencies"] if (d.get("api_name") or "").startswith(api_name))


def _join(server, cookie: str | None, fn_index, data, session: str | None = None, headers: dict | None = None,
          **body) -> httpx.Response:
    payload = {"data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None,
               "session_hash": session or uuid.uuid4().hex[:11], **body}
    return httpx.post(server.url + "gradio_api/queue/join", json=payload, headers=headers, timeout=60,
                      cookies={access.COOKIE: cookie} if cookie else None)


def _call(server, cookie, fn_index, data, headers=None) -> dict:
    session = uuid.uuid4().hex[:11]
    joined = _join(server, cookie, fn_index, data, session, headers)
    assert joined.status_code == 200, joined.text
    return queue_outcome(server, session, cookie)


def _payload(attacker) -> str:
    """A title that is an image, a link, an HTML tag and an autolink to the attacker's host, cut at 50 characters
    (so the studio adds a "the title was cut" note that repeats it)."""
    return (f"![x](//{attacker.url[7:]}/md.png) <img src=//{attacker.url[7:]}/tag.png> [go]({attacker.url}/link) "
            f"www.example.org *bold* padding padding padding")


# ------------------------------------------------------------------------------------------------ 1. fair queues


@pytest.fixture(scope="module")
def payload_run(server, attacker):
    """Visitor A fills what a visitor may of the render queue; visitor B's render still joins and runs. B's title is
    the attacker's payload: {"a": cookie, "b": cookie, "run": B's run id, "joins": [status codes of A's joins], ...}."""
    cookie_a, cookie_b = _cookie(server), _cookie(server)
    render = _fn(_config(server, cookie_a), "render")
    plain = ["", "Puppy meets the sea", "a puppy on a beach", "A puppy runs to the water. It barks.", "storyboard", 0]
    session_a = uuid.uuid4().hex[:11]
    joins = [_join(server, cookie_a, render, plain, session_a if i == 0 else None) for i in range(6)]
    session_b = uuid.uuid4().hex[:11]
    joined_b = _join(server, cookie_b, render, ["", _payload(attacker), "a cover", "A puppy runs.", "storyboard", 0],
                     session_b)
    done_a, done_b = queue_outcome(server, session_a, cookie_a), queue_outcome(server, session_b, cookie_b)
    assert done_a["success"] and done_b["success"], (done_a, done_b)
    return {"a": cookie_a, "b": cookie_b, "joins": joins, "joined_b": joined_b, "run": done_b["output"]["data"][6],
            "output_b": done_b["output"]}


def test_one_visitor_cannot_fill_the_queue_and_a_refused_join_says_why_and_when(payload_run):
    joins = payload_run["joins"]
    assert joins[0].status_code == 200
    for refused in joins[1:]:  # before: every join accepted until the queue (64) was full for everyone
        assert refused.status_code == 429, refused.text
        detail = refused.json()["detail"]
        assert detail.startswith("Renders you have queued or running: 1; the limit per visitor is 1: try again in "
                                 "about "), detail
        assert int(refused.headers["retry-after"]) >= 5
    assert payload_run["joined_b"].status_code == 200  # another visitor is not locked out


def test_queue_limits_are_configurable_and_a_private_studio_keeps_todays_behaviour(monkeypatch):
    monkeypatch.setenv("POPCORN_QUEUE_LIMITS", "llm=3,gpu=2,address=5,bogus=1")
    limits = access.queue_limits()
    assert limits["llm"] == 3 and limits["gpu"] == 2 and limits["address"] == 5 and "bogus" not in limits
    assert access.queue_verdict("llm", 2, 2, 2, limits) == ""
    assert access.queue_verdict("llm", 3, 3, 3, limits).startswith("Plans you have queued or running: 3")
    assert "your address has queued or running: 5" in access.queue_verdict("gpu", 0, 0, 5, limits)
    assert access.queue_verdict("17", 4, 4, 0, limits).startswith("Jobs of this kind")  # "other": 4 per event
    # a private studio: check_join lets a visitor queue as much as before (only a malformed join is refused)
    import asyncio
    from types import SimpleNamespace

    import gradio as gr
    from fastapi import HTTPException
    from gradio.queueing import Event

    from popcorn.ui import joins

    monkeypatch.setenv("POPCORN_PUBLIC", "0")
    monkeypatch.setenv("POPCORN_BIND_HOST", "127.0.0.1")
    monkeypatch.delenv("SPACE_ID", raising=False)
    with gr.Blocks() as demo:
        gr.Button().click(lambda: None, None, None, concurrency_id="gpu")
    demo.queue()
    queue, fn = demo._queue, next(iter(demo.fns.values()))
    request = SimpleNamespace(cookies={}, headers={}, client=SimpleNamespace(host="127.0.0.1"))
    queue.create_event_queue_for_fn(fn)
    for _ in range(10):
        queue.event_queue_per_concurrency_id["gpu"].queue.append(Event("same-session", fn, request, None))
    body = SimpleNamespace(fn_index=fn._id, data=[], session_hash="same-session")
    asyncio.run(joins.check_join(queue, body, request))  # accepted: no per-visitor limit
    monkeypatch.setenv("POPCORN_PUBLIC", "1")
    with pytest.raises(HTTPException) as refused:
        asyncio.run(joins.check_join(queue, body, request))
    assert refused.value.status_code == 429
    with pytest.raises(HTTPException) as unknown:
        asyncio.run(joins.check_join(queue, SimpleNamespace(fn_index=10_000, data=[], session_hash="x"), request))
    assert unknown.value.status_code == 400


# ------------------------------------------------------------------------------------------------ 2. no fetching


def _file_event(config: dict) -> tuple[int, list]:
    """The Study tab's create event (the one event that takes a file) and inputs for it: (fn_index, data with the
    file at the index of the file component, the secret first)."""
    components = {c["id"]: c for c in config["components"]}
    for dependency in config["dependencies"]:
        kinds = [components[i]["type"] for i in dependency["inputs"]]
        if "file" in kinds:
            data = [{"textbox": "", "radio": "file", "dropdown": "mode", "number": 1}.get(k) for k in kinds]
            return dependency["id"], data, kinds.index("file")
    raise AssertionError("no event takes a file")


def _filedata(path: str, url: str | None = None) -> dict:
    return {"path": path, "url": url, "orig_name": "pairs.json", "size": None, "mime_type": None, "is_stream": False,
            "meta": {"_type": "gradio.FileData"}}


def test_a_file_given_as_a_url_is_never_fetched(server, attacker):
    cookie = _cookie(server)
    fn_index, data, at = _file_event(_config(server, cookie))
    for file in (_filedata(f"{attacker.url}/pairs.json"), _filedata("pairs.json", f"{attacker.url}/pairs.json"),
                 _filedata(f"//{attacker.url[7:]}/pairs.json"), _filedata("data:application/json;base64,e30=")):
        data[at] = file
        for secret in ("", SECRET):  # not even for the owner, unless POPCORN_ALLOW_URL_FILES=1
            data[0] = secret
            joined = _join(server, cookie, fn_index, data)
            assert joined.status_code == 400 and "is not fetched on this studio" in joined.json()["detail"], \
                joined.text
    data[at] = _filedata("/etc/passwd")
    joined = _join(server, cookie, fn_index, data)
    assert joined.status_code == 400 and "not a file uploaded to this studio" in joined.json()["detail"]
    time.sleep(1)
    assert attacker.hits == []  # before: Gradio downloaded 30 MB before the secret was checked


def test_a_strangers_file_is_refused_before_any_file_work_and_uploads_are_bounded(server):
    cookie = _cookie(server)
    fn_index, data, at = _file_event(_config(server, cookie))
    files = [("files", (f"p{i}.json", b"[]", "application/json")) for i in range(5)]
    too_many = httpx.post(server.url + "gradio_api/upload", files=files, cookies={access.COOKIE: cookie}, timeout=30)
    assert too_many.status_code == 413 and "at most 4 files" in too_many.text  # before: up to 1,000 per request
    uploaded = httpx.post(server.url + "gradio_api/upload", files=files[:1], cookies={access.COOKIE: cookie},
                          timeout=30)
    assert uploaded.status_code == 200, uploaded.text
    path = uploaded.json()[0]
    assert not path.startswith("/") and str(server.gradio_cache) not in uploaded.text  # no server path
    data[at] = _filedata(path)
    data[0] = "a wrong secret"
    refused = _join(server, cookie, fn_index, data, headers={"x-forwarded-for": "192.0.2.50"})
    assert refused.status_code == 403 and "only the studio's owner may use this" in refused.json()["detail"]
    data[0] = SECRET
    accepted = _join(server, cookie, fn_index, data, headers={"x-forwarded-for": "192.0.2.51"})
    assert accepted.status_code == 200, accepted.text  # the owner's file goes on to the event
    over = httpx.post(server.url + "gradio_api/upload", cookies={access.COOKIE: cookie}, timeout=30,
                      files=[("files", ("big.json", b"x" * 10_500_000, "application/json"))])
    assert over.status_code == 413


# ------------------------------------------------------------------------------------------------ 3. text stays text


def test_markdown_views_show_visitor_text_as_text():
    payload = "![](//evil.example/x.png) [a](http://evil.example) <img src=x onerror=alert(1)> www.evil.example $$x$$"
    for markdown in (views.why_markdown(None, [payload]), views.reasoning_markdown({"reasoning": payload + "\n# h"}),
                     views.why_markdown({"matched_categories": [payload], "category_scores": [],
                                         "references": []}, [])):
        assert views.plain_markdown(payload) in markdown
        for raw in ("![", "](", "http://", "www.evil.example", "$$", "\n# h"):
            assert raw not in markdown, (raw, markdown)
    # every punctuation character of the payload is escaped: none can start an image, link, tag or autolink
    assert not re.search(r"(?<!\\)[!\[\]()<>$*/:.@]", views.plain_markdown(payload))
    assert views.plain_markdown("a  b\n\n    c") == "a b c"
    card = views.popularity_card({"predicted_comments": 3, "category": payload}, {"videos": [{"title": payload}]})
    assert "<img" not in card and "&lt;img" in card


def _no_injected_markup(page, attacker) -> None:
    """No image or link on the page points at the attacker's host (or at the payload's autolink)."""
    host = attacker.url[7:]
    for selector, attribute in (("img", "src"), ("a", "href"), ("iframe", "src"), ("source", "src")):
        for element in page.locator(selector).all():
            value = element.get_attribute(attribute) or ""
            assert host not in value and "example.org" not in value, (selector, value)
    for elem_id in ("render-notes", "why", "reasoning"):
        assert page.locator(f"#{elem_id} img, #{elem_id} a").count() == 0, page.locator(f"#{elem_id}").inner_html()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
def test_a_runs_text_is_plain_text_for_the_visitor_and_the_owner_and_pages_work_under_the_csp(server, attacker,
                                                                                            payload_run, tmp_path):
    """B's run (title: image, link, HTML and autolink to the attacker) opened from History by B and by the owner:
    nothing of it becomes markup, nothing is fetched, the cut-title note shows the characters themselves; every tab
    loads with no CSP error in the console."""
    from playwright.sync_api import sync_playwright

    run = payload_run["run"]
    notes_b = payload_run["output_b"]["data"][7]
    assert "title was cut" in notes_b and "![" not in notes_b.replace("\\!\\[", "")
    console = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for who in ("visitor", "owner"):
                context = browser.new_context()
                if who == "visitor":
                    context.add_cookies([{"name": access.COOKIE, "value": payload_run["b"], "url": server.url}])
                page = context.new_page()
                page.on("console", lambda m: console.append(m.text))
                page.goto(server.url, wait_until="domcontentloaded")
                for tab in ("Score a title", "Study", "History"):
                    page.get_by_role("tab", name=tab).click()
                    page.wait_for_timeout(1000)
                if who == "owner":
                    page.locator("#owner-box").get_by_text("Owner").first.click()
                    _field(page, "owner-secret").fill(SECRET)
                    page.locator("#owner-btn").click()
                _wait(page, f"the run in the {who}'s history", lambda: run in page.locator("#history").inner_text(),
                      120)
                page.locator("#history [role=row]", has_text=run).first.click()
                _wait(page, "the run opened in the studio", lambda: "title was cut" in page.locator(
                    "#render-notes").inner_text(), 120)
                notes = page.locator("#render-notes").inner_text()
                assert f"![x](//{attacker.url[7:]}/md.png)" in notes, notes  # the characters, shown as text
                assert "![x](" in page.locator("#history").inner_text()
                _no_injected_markup(page, attacker)
                page.screenshot(path=str(ARTIFACTS / f"hostile_text_{who}.png"), full_page=True)
                if who == "visitor":  # an error toast quoting what the visitor typed shows it as text too
                    page.get_by_role("tab", name="Studio").click()
                    tag = f"<img src=//{attacker.url[7:]}/toast.png>"
                    _field(page, "llm").fill(tag)
                    _field(page, "llm").press("Enter")
                    page.locator("#plan-btn").click()
                    toast = _wait(page, "the error toast", lambda: _error_toast(page), 120)
                    assert tag in toast, toast
                    assert page.locator("[data-testid='toast-body'] img").count() == 0
                if who == "owner":  # the owner's own upload still reaches the Study tab's event (relative paths)
                    _close_toasts(page)  # the "Owner mode" message
                    page.get_by_role("tab", name="Study").click()
                    _field(page, "study-secret").fill(SECRET)
                    page.get_by_text("Pair file", exact=True).click()
                    pairs = tmp_path / "pairs.json"
                    pairs.write_text("[]")
                    page.locator("input[type=file]").first.set_input_files(str(pairs))
                    page.wait_for_timeout(3000)
                    page.get_by_role("button", name="Create study").click()
                    toast = _wait(page, "the study's answer", lambda: _error_toast(page), 120)  # an error
                    assert "only the studio's owner" not in toast and "not a file uploaded" not in toast, toast
                    assert "pair" in toast.lower(), toast  # the study code read the (empty) pair file
                context.close()
        finally:
            browser.close()
    assert attacker.hits == [], attacker.hits
    assert not [m for m in console if "Content Security Policy" in m], console


# ------------------------------------------------------------------------------------------------ 4. owner secret


def test_strangers_cannot_lock_the_owner_out(server):
    """A stranger's wrong tries count against their address only; the owner, from another address, still gets in;
    the stranger's own right try is refused once over (nothing is compared then)."""
    cookie = _cookie(server)
    owner_fn = _fn(_config(server, cookie), "on_owner")
    stranger = {"x-forwarded-for": "203.0.113.7"}
    for i in range(access.SECRET_TRIES["client"][0]):
        message = _call(server, _cookie(server), owner_fn, [f"guess-{i}"], stranger)  # a fresh cookie each time
        assert message["logs"] == ["That is not the admin secret."], message["logs"]
    message = _call(server, _cookie(server), owner_fn, [SECRET], stranger)
    assert message["logs"][0].startswith("too many wrong admin secret tries from your address"), message["logs"]
    spoofed = {"x-forwarded-for": "198.51.100.9, 203.0.113.7"}  # a client-made first hop: the proxy's hop counts
    assert _call(server, _cookie(server), owner_fn, [SECRET], spoofed)["logs"][0].startswith("too many wrong")
    for _ in range(3):  # the owner, elsewhere, any number of times: right tries never count
        message = _call(server, cookie, owner_fn, [SECRET], {"x-forwarded-for": "198.51.100.2"})
        assert message["logs"] == ["Owner mode: the history shows every visitor's runs."], message["logs"]


def test_guessing_through_the_study_tab_counts_per_address_too(server):
    """The Study tab's events take the secret too: a stranger renewing their cookie for each guess is stopped after
    the address's tries (before, each fresh visitor id had tries of its own), and the owner elsewhere is not."""
    config = _config(server, _cookie(server))
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    listing = next(d["id"] for d in config["dependencies"]  # "List studies": the secret and the study picked
                   if d["inputs"] == [ids["study-secret"], ids["study-pick"]] and ids["study-list"] in d["outputs"])
    stranger = {"x-forwarded-for": "203.0.113.80"}
    for i in range(access.SECRET_TRIES["client"][0]):
        refused = _join(server, _cookie(server), listing, [f"guess-{i}", None], headers=stranger)
        assert refused.status_code == 403 and "only the studio's owner may use this" in refused.text, refused.text
    refused = _join(server, _cookie(server), listing, [SECRET, None], headers=stranger)
    assert refused.status_code == 429 and "too many wrong admin secret tries" in refused.text
    owner = _call(server, _cookie(server), listing, [SECRET, None], {"x-forwarded-for": "198.51.100.80"})
    assert owner["success"], owner


def test_forwarded_addresses_are_believed_only_from_a_trusted_proxy(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("POPCORN_TRUSTED_PROXIES", "")
    assert access.client_address("203.0.113.7", "1.2.3.4") == "203.0.113.7"  # before: any client's claim was used
    monkeypatch.setenv("POPCORN_TRUSTED_PROXIES", "10.0.0.1")
    assert access.client_address("203.0.113.7", "1.2.3.4") == "203.0.113.7"
    assert access.client_address("10.0.0.1", "1.2.3.4, 198.51.100.5") == "198.51.100.5"
    assert access.client_address("10.0.0.1", "198.51.100.5, 10.0.0.1") == "198.51.100.5"
    monkeypatch.setenv("SPACE_ID", "someone/popcorn")
    monkeypatch.delenv("POPCORN_TRUSTED_PROXIES")
    assert access.client_address("10.9.9.9", "198.51.100.5") == "198.51.100.5"  # a Space: only its proxy reaches it


def test_the_server_wide_count_slows_guesses_but_never_refuses_the_right_secret(monkeypatch):
    monkeypatch.setenv("POPCORN_ADMIN_SECRET", SECRET)
    monkeypatch.setattr(access, "_SECRET_TRIES", access.RateLimiter(1000, 900))
    monkeypatch.setattr(access, "_SECRET_TRIES_SERVER", access.RateLimiter(1000, 900))
    monkeypatch.setattr(access, "SECRET_TRIES", {"client": (1000, 900.0), "server": (5, 900.0)})
    monkeypatch.setattr(access, "SECRET_BACKOFF_STEP", 0.05)
    for i in range(20):  # right tries never count
        assert access.admin_secret_ok(SECRET, f"a{i}")
    assert access._SECRET_TRIES_SERVER.count("server") == 0
    for i in range(5):  # 5 wrong tries from 5 addresses: free
        started = time.monotonic()
        assert not access.admin_secret_ok("guess", f"b{i}")
        assert time.monotonic() - started < 0.05
    waits = []
    for i in range(3):
        started = time.monotonic()
        assert not access.admin_secret_ok("guess", f"c{i}")
        waits.append(time.monotonic() - started)
    assert waits[0] >= 0.05 and waits[2] >= 0.15  # the backoff grows with each wrong try past the free ones
    started = time.monotonic()
    assert access.admin_secret_ok(SECRET, "the-owner")  # slowed, never refused
    assert time.monotonic() - started >= 0.2
    assert access._SECRET_TRIES_SERVER.count("server") == 8


# ------------------------------------------------------------------------------------------------ 5. request limits


def test_request_bodies_are_limited_on_every_route_the_queue_join_included(server):
    cookie = _cookie(server)
    render = _fn(_config(server, cookie), "render")
    big = _join(server, cookie, render, ["x" * 2_000_000, "t", "c", "v", "storyboard", 0])
    assert big.status_code == 413 and "the limit here is 1,000,000" in big.text  # before: 64 MB accepted
    for route in ("gradio_api/queue/join", "gradio_api/upload", "s/anything/api/vote", "gradio_api/info"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(f"POST /{route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        f"Content-Length: 900000000\r\n\r\n".encode())
            assert raw.recv(200).startswith(b"HTTP/1.1 413"), route  # refused from the declared length alone
    chunked = httpx.post(server.url + "gradio_api/queue/join", content=iter([b"{}"]), timeout=30)
    assert chunked.status_code == 411


def test_a_slow_body_is_cut_off(server):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"data\": [")
        answer = raw.recv(200)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < BODY_SECONDS + 5


def test_slow_headers_are_closed_in_time_and_bounded_in_count(server):
    """A load of half-sent request heads on loopback (before: 3,000 held for minutes): at most PENDING are held at
    once, each for at most HEADER_SECONDS, and the studio answers others meanwhile and afterwards."""
    n = 3 * PENDING
    started = time.monotonic()
    sockets = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=HEADER_SECONDS + 10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(s)
    time.sleep(0.5)
    closed_at_once = 0
    for s in sockets:
        s.settimeout(0.01)
        try:
            closed_at_once += s.recv(10) == b""
        except (socket.timeout, BlockingIOError):
            pass
        except OSError:
            closed_at_once += 1
    assert closed_at_once >= n - PENDING - 2, closed_at_once  # over the count: closed as soon as they open
    closed_at = []
    for s in sockets:
        s.settimeout(HEADER_SECONDS + 10)
        try:
            s.recv(10)
        except OSError:
            pass
        closed_at.append(time.monotonic() - started)
        s.close()
    assert max(closed_at) < HEADER_SECONDS + 5, max(closed_at)
    assert httpx.get(server.url + "config", timeout=30).status_code == 200


# ------------------------------------------------------------------------------------------------ 6. headers


def test_every_answer_has_the_security_headers_and_echoes_no_request_header(server, payload_run):
    cookie = payload_run["b"]
    video = payload_run["output_b"]["data"][0]
    video_url = (video.get("video") or video)["url"]
    answers = {"page": httpx.get(server.url, cookies={access.COOKIE: cookie}, timeout=30),
               "config": httpx.get(server.url + "config", cookies={access.COOKIE: cookie}, timeout=30),
               "refused": httpx.get(server.url + "gradio_api/file=/etc/passwd", timeout=30),
               "study page": httpx.get(server.url + "s/nothing/", timeout=30),
               "file with Range": httpx.get(video_url, timeout=30, headers={
                   "range": "bytes=0-99", "cookie": f"{access.COOKIE}={cookie}; other=COOKIE-VALUE-31337",
                   "x-forwarded-for": "203.0.113.99", "user-agent": "UA-31337"})}
    assert answers["file with Range"].status_code == 206 and answers["file with Range"].content[4:8] == b"ftyp"
    for name, answer in answers.items():
        csp = answer.headers.get("content-security-policy", "")
        assert "frame-ancestors 'self'" in csp and "img-src 'self' data: blob:" in csp, (name, csp)
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert answer.headers.get("referrer-policy") in ("strict-origin-when-cross-origin", "no-referrer"), name
        values = " ".join(f"{k}: {v}" for k, v in answer.headers.items() if k != "set-cookie")
        for echoed in ("COOKIE-VALUE-31337", cookie, "203.0.113.99", "UA-31337"):
            assert echoed not in values, (name, values)  # before: the Range answer repeated the Cookie header


def test_cors_only_for_configured_origins_and_frames_only_where_the_studio_is_embedded(server, monkeypatch):
    for origin in ("http://localhost:9999", "http://127.0.0.1:1", "null", "https://evil.example"):
        answer = httpx.get(server.url + "config", headers={"origin": origin}, timeout=30)
        assert "access-control-allow-origin" not in answer.headers, origin  # before: localhost ports echoed
        preflight = httpx.options(server.url + "gradio_api/queue/join", timeout=30, headers={
            "origin": origin, "access-control-request-method": "POST"})
        assert "access-control-allow-origin" not in preflight.headers, origin
    answer = httpx.get(server.url + "config", headers={"origin": FRIEND}, timeout=30)
    assert answer.headers["access-control-allow-origin"] == FRIEND
    preflight = httpx.options(server.url + "gradio_api/queue/join", timeout=30, headers={
        "origin": FRIEND, "access-control-request-method": "POST", "access-control-request-headers": "content-type"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == FRIEND
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("POPCORN_FRAME_ANCESTORS", raising=False)
    assert access.frame_ancestors() == ["'self'"]
    monkeypatch.setenv("SPACE_ID", "someone/popcorn")
    assert access.frame_ancestors() == ["'self'", "https://huggingface.co", "https://*.hf.space"]


# ------------------------------------------------------------------------------------------------ 7. malformed input


def test_malformed_queue_joins_get_a_4xx_and_handed_out_urls_name_no_server_path(server, payload_run):
    cookie = _cookie(server)
    for fn_index in (9999, -1):
        answer = _join(server, cookie, fn_index, [])
        assert answer.status_code == 400 and "no event" in answer.text, answer.text  # before: HTTP 500
    for body in (b"{", b"[]", b'{"data": 5, "fn_index": 1, "session_hash": "x"}',
                 b'{"data": [], "fn_index": "x", "session_hash": "x"}', b'{"data": [], "fn_index": 1}'):
        answer = httpx.post(server.url + "gradio_api/queue/join", content=body, timeout=30,
                            headers={"content-type": "application/json"}, cookies={access.COOKIE: cookie})
        assert 400 <= answer.status_code < 500, (body, answer.status_code)
    text = json.dumps(payload_run["output_b"])
    assert str(server.gradio_cache) not in text and "/tmp/" not in text  # before: the absolute cache path
    assert "file=popcorn-serve/" in text
