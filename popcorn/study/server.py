"""The participant side of a study: plain FastAPI routes, one HTML page that works on a phone.

    GET  /s/<link>/                     the page: the question, two videos, A / B / Tie / Both bad, progress "3 / 10"
    POST /s/<link>/api/join             {"invite": "..."} -> {"participant": token}  (+ a cookie for this link)
    GET  /s/<link>/api/state            the next unanswered pair: {"task", "left", "right", "done", "total", ...}
    POST /s/<link>/api/vote             {"task": 3, "choice": "A"|"B"|"tie"|"both_bad", "reason": ""}
    GET  /s/<link>/v/<media id>.mp4     a video of this participant's pairs, by its opaque id

The participant is named by their token: `?p=<token>` in the URL (the page puts it there, so a reload or a copied
link resumes) or the cookie. A vote is answered 200 only after it is committed; a second answer to the same pair is
409 and stores nothing. What goes out names no system, model, run, mode or file: media ids are random, the files are
stripped copies (media.py), the study's name stays with the owner.

Owner routes (the admin secret in `Authorization: Bearer <secret>`; refused when POPCORN_ADMIN_SECRET is unset;
each request one try against popcorn.serve.access's limits, per client address and per server: 429 when over them):
    GET /study-admin/<study id>/results.json | votes.csv | chart.png

`router` is included into the studio's FastAPI app; `create_app()` serves it alone (bench/study_load.py, tests):
    python -m popcorn.study.server --home DIR --port 8765
"""

from __future__ import annotations

import argparse
import html
import json
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from popcorn.study import StudyError, analysis, owner

COOKIE = "sp"
SIDES = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad"}
MAX_BODY = 16_384  # a vote is ~100 bytes, its reason at most 500 characters (up to 4 bytes each, JSON-escaped)
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter()
_HOME: list[Path] = []  # set by create_app(home); else the studio's home (config.home_dir())


def _studies():
    return owner.get_studies(_HOME[0] if _HOME else None)


def _error(exc: StudyError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=PRIVATE)


def _participant_id(request: Request, body: dict | None = None) -> str:
    return str((body or {}).get("p") or request.query_params.get("p") or request.headers.get("x-participant")
               or request.cookies.get(COOKIE) or "")


async def _body(request: Request) -> dict:
    raw = bytearray()
    async for chunk in request.stream():  # read no further than MAX_BODY: a stranger's body is not held whole
        raw += chunk
        if len(raw) > MAX_BODY:
            raise StudyError(f"the request is too large (at most {MAX_BODY} bytes)", 413)
    try:
        data = json.loads(bytes(raw) or b"{}")
    except ValueError:
        raise StudyError("send JSON") from None
    if not isinstance(data, dict):
        raise StudyError("send a JSON object")
    return data


def _state(link: str, pid: str) -> dict:
    me = _studies().participant(link, pid)
    total, answered = len(me["tasks"]), me["answered"]
    state = {"question": me["study"]["question"], "total": total, "done": len(answered),
             "finished": len(answered) >= total, "task": None}
    nxt = next((i for i in range(total) if i not in answered), None)
    if nxt is not None:
        shown = _studies().shown(me, nxt)
        state["task"] = {"index": nxt, "number": len(answered) + 1,
                         "left": f"/s/{link}/v/{shown['left']}.mp4?p={me['id']}",
                         "right": f"/s/{link}/v/{shown['right']}.mp4?p={me['id']}"}
    return state


# ------------------------------------------------------------------------------------------------------------ routes


@router.get("/s/{link}")
def page_redirect(link: str):
    return RedirectResponse(f"/s/{link}/", status_code=307)


@router.get("/s/{link}/", response_class=HTMLResponse)
def page(link: str):
    try:
        study = _studies().study_by_link(link)
    except StudyError as exc:
        return HTMLResponse("<!doctype html><title>Study</title><p>This study link is not valid.</p>",
                            status_code=exc.status, headers=PRIVATE)
    body = PAGE.replace("__QUESTION__", html.escape(study["question"])).replace(
        "__INVITE__", "true" if study["invite_only"] else "false").replace("__LINK__", html.escape(link))
    return HTMLResponse(body, headers=PRIVATE)


@router.post("/s/{link}/api/join")
async def join(link: str, request: Request):
    try:
        body = await _body(request)
        me = _studies().join(link, str(body.get("invite", "")))
    except StudyError as exc:
        return _error(exc)
    response = JSONResponse({"participant": me["id"], "total": len(me["tasks"])}, headers=PRIVATE)
    response.set_cookie(COOKIE, me["id"], path=f"/s/{link}/", httponly=True, samesite="lax", max_age=90 * 86400,
                        secure=_over_https(request))
    return response


def _over_https(request: Request) -> bool:
    """Whether the participant reached the study over HTTPS: directly, or through the TLS proxy in front of a Space
    (X-Forwarded-Proto). Then the participant's cookie is Secure, never sent over plain HTTP. (A client that claims
    https over plain HTTP only loses its own cookie: the browser will not send it back.)"""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


@router.get("/s/{link}/api/state")
def state(link: str, request: Request):
    try:
        return JSONResponse(_state(link, _participant_id(request)), headers=PRIVATE)
    except StudyError as exc:
        return _error(exc)


@router.post("/s/{link}/api/vote")
async def vote(link: str, request: Request):
    try:
        body = await _body(request)
        choice = SIDES.get(str(body.get("choice", "")))
        if choice is None:
            raise StudyError("choice must be A, B, tie or both_bad")
        pid = _participant_id(request, body)
        # the write runs in a worker thread: the event loop keeps serving while SQLite commits
        ack = await run_in_threadpool(_studies().vote, link, pid, body.get("task"), choice, body.get("reason", ""))
    except StudyError as exc:
        return _error(exc)
    return JSONResponse({"stored": True, "task": ack["task"], "done": ack["done"], "total": ack["total"]},
                        headers=PRIVATE)


@router.get("/s/{link}/v/{name}")
def video(link: str, name: str, request: Request):
    media_id = name[:-4] if name.endswith(".mp4") else name
    try:
        path = _studies().media_path(link, _participant_id(request), media_id)
    except StudyError as exc:
        return _error(exc)
    response = FileResponse(path, media_type="video/mp4", headers=PRIVATE, stat_result=os.stat(path))
    # no filename header (the id is all), and no validators: Starlette's Last-Modified and ETag come from the file's
    # mtime, and the copies were written pair by pair, "a" before "b", so they would tell the sides apart
    del response.headers["last-modified"], response.headers["etag"]
    return response


# ------------------------------------------------------------------------------------------------------------ owner


def _admin_secret(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-admin-secret", "")


@router.get("/study-admin/{study_id}/{what}")
def admin(study_id: str, what: str, request: Request):
    home = _HOME[0] if _HOME else None
    try:
        owner.authorise(_admin_secret(request), f"study-admin:{request.client.host if request.client else ''}")
        if what == "results.json":  # authorised above (LOCAL below): one request is one try
            return JSONResponse(owner.results(owner.LOCAL, study_id, home=home), headers=PRIVATE)
        if what == "votes.csv":
            studies = owner.get_studies(home)
            studies.study(study_id)  # 404 for an unknown study
            return PlainTextResponse(analysis.votes_csv(studies.votes(study_id)), media_type="text/csv",
                                     headers=PRIVATE)
        if what == "chart.png":
            with tempfile.TemporaryDirectory() as tmp:
                path = analysis.chart_png(owner.results(owner.LOCAL, study_id, home=home), Path(tmp) / "chart.png")
                return Response(Path(path).read_bytes(), media_type="image/png", headers=PRIVATE)
        raise StudyError("no such export", 404)
    except StudyError as exc:
        return _error(exc)


# ------------------------------------------------------------------------------------------------------------ app


def create_app(home: str | Path | None = None) -> FastAPI:
    """The study routes alone (no docs, no OpenAPI schema), serving the store in `home`."""
    _HOME[:] = [Path(home)] if home else []
    owner.get_studies(home)  # open and migrate the store before the first request
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description="serve study links alone on 127.0.0.1")
    parser.add_argument("--home", help="the store's folder (default POPCORN_HOME)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.home), host=args.host, port=args.port, log_level="warning", server_header=False,
                date_header=False, access_log=False)
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Which one?</title>
<style>
 *{box-sizing:border-box} body{margin:0;font:16px/1.4 system-ui,-apple-system,sans-serif;background:#fafafa;color:#222}
 main{max-width:980px;margin:0 auto;padding:12px}
 h1{font-size:1.15rem;margin:.3rem 0 .6rem} #progress{font-weight:600;color:#555}
 .pair{display:flex;gap:10px;flex-wrap:wrap} .side{flex:1 1 300px;min-width:0;background:#fff;border-radius:10px;
 padding:8px;box-shadow:0 1px 3px #0002} .side b{display:block;margin-bottom:4px}
 video{width:100%;max-height:60vh;background:#000;border-radius:6px}
 .answers{display:grid;grid-template-columns:repeat(4,1fr);gap:8px;margin:12px 0}
 button{font-size:1.05rem;padding:14px 6px;border:0;border-radius:10px;background:#2d6cdf;color:#fff;min-height:48px}
 button.alt{background:#666} button:disabled{opacity:.5}
 textarea,input{width:100%;font-size:1rem;padding:8px;border-radius:8px;border:1px solid #bbb}
 #msg{color:#b00020;min-height:1.2em} .hidden{display:none}
 @media (max-width:560px){.answers{grid-template-columns:repeat(2,1fr)}}
</style></head>
<body><main>
<div id="start">
 <h1>__QUESTION__</h1>
 <p>You will see pairs of short videos. For each pair, pick the one you think fits the question better,
 or say they are equally good (tie) or both bad.</p>
 <div id="invite-box" class="hidden"><label>Invite code <input id="invite" autocomplete="off"></label></div>
 <p><button id="begin">Start</button></p>
</div>
<div id="study" class="hidden">
 <p><span id="progress"></span></p>
 <h1 id="question">__QUESTION__</h1>
 <div class="pair">
  <div class="side"><b>A</b><video id="left" controls playsinline preload="metadata" loop></video></div>
  <div class="side"><b>B</b><video id="right" controls playsinline preload="metadata" loop></video></div>
 </div>
 <div class="answers">
  <button data-choice="A">A</button><button data-choice="B">B</button>
  <button class="alt" data-choice="tie">Tie</button><button class="alt" data-choice="both_bad">Both bad</button>
 </div>
 <label>Why? (optional) <textarea id="reason" rows="2" maxlength="500"></textarea></label>
</div>
<div id="done" class="hidden"><h1>Thank you!</h1><p>All your answers are saved. You can close this page.</p></div>
<p id="msg" role="alert"></p>
</main>
<script>
const INVITE = __INVITE__, base = "/s/__LINK__/";
let pid = new URLSearchParams(location.search).get("p") || "", task = null, busy = false;
const $ = id => document.getElementById(id);
function show(which) { for (const id of ["start", "study", "done"]) $(id).classList.toggle("hidden", id !== which); }
function say(text) { $("msg").textContent = text || ""; }
function remember(token) {
  pid = token; const u = new URL(location.href); u.searchParams.set("p", token); history.replaceState(null, "", u);
}
async function api(path, body) {
  const q = pid ? "?p=" + encodeURIComponent(pid) : "";
  const r = await fetch(base + path + q, body === undefined ? {credentials: "same-origin"} :
    {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
     body: JSON.stringify(body)});
  let data = {}; try { data = await r.json(); } catch (e) {}
  return {status: r.status, data};
}
async function load() {
  const {status, data} = await api("api/state");
  if (status === 404 || status === 400) {
    pid = ""; $("invite-box").classList.toggle("hidden", !INVITE); show("start"); return;
  }
  if (status !== 200) { say(data.error || "Something went wrong; reload the page."); return; }
  if (data.finished) { show("done"); return; }
  task = data.task; $("progress").textContent = task.number + " / " + data.total;
  $("left").src = task.left; $("right").src = task.right; $("reason").value = "";
  show("study"); setBusy(false);
}
function setBusy(b) { busy = b; document.querySelectorAll("button[data-choice]").forEach(x => x.disabled = b); }
$("begin").onclick = async () => {
  say(""); const {status, data} = await api("api/join", {invite: $("invite").value});
  if (status !== 200) { say(data.error || "Could not start."); return; }
  remember(data.participant); load();
};
document.querySelectorAll("button[data-choice]").forEach(b => b.onclick = async () => {
  if (busy || !task) return; setBusy(true); say("");
  const {status, data} = await api("api/vote", {task: task.index, choice: b.dataset.choice, reason: $("reason").value});
  if (status !== 200 && status !== 409) { say(data.error || "Not saved; try again."); setBusy(false); return; }
  load();
});
if (pid) load(); else { $("invite-box").classList.toggle("hidden", !INVITE); (async () => {
  const {status} = await api("api/state"); if (status === 200) load(); else show("start"); })(); }
</script></body></html>
"""

if __name__ == "__main__":
    raise SystemExit(main())
