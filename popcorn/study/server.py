"""The participant side of a study: plain FastAPI routes, one HTML page that works on a phone (page.html beside
this file: consent, two videos side by side that must be played to the end, A / B / Tie / Both bad, progress, the
completion code and the way back to the recruiting platform).

    GET  /s/<link>/                     the page
    POST /s/<link>/api/join             {"invite": "...", "consent": true, "platform": {"PROLIFIC_PID": ...}}
                                        -> {"participant": token} (+ a cookie); 429 over the per-address limit,
                                        410 closed or full, 400 without consent when the study asks for it
    GET  /s/<link>/api/state            the next unanswered pair: {"task", "left", "right", "done", "total", ...};
                                        once finished: "completion_code", "redirect"
    POST /s/<link>/api/vote             {"task": 3, "choice": "A"|"B"|"tie"|"both_bad", "reason": ""}; 425 sooner
                                        than the videos last (per the frozen viewing rule), 409 out of order
    GET  /s/<link>/v/<media id>.mp4     a video of this participant's pairs, by its opaque id

The participant is named by their token: `?p=<token>` in the URL (the page puts it there, so a reload or a copied
link resumes) or the cookie. A vote is answered 200 only after it is committed; a second answer to the same pair is
409 and stores nothing. What goes out names no system, model, run, mode or file: media ids are random, the files are
stripped copies (media.py), the study's name stays with the owner.

Owner routes (the admin secret in `Authorization: Bearer <secret>`; refused when POPCORN_ADMIN_SECRET is unset;
each request one try against popcorn.serve.access's limits, per client address and per server: 429 when over them):
    GET /study-admin/<study id>/results.json | votes.csv | participants.csv | chart.png

`router` is included into the studio's FastAPI app; `create_app()` serves it alone (bench/study_load.py, tests):
    python -m popcorn.study.server --home DIR --port 8765
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from popcorn.serve import access
from popcorn.study import StudyError, analysis, owner

PAGE = (Path(__file__).with_name("page.html")).read_text(encoding="utf-8")  # the participant page's template
PROXIES_ENV = "POPCORN_TRUSTED_PROXIES"  # comma-separated addresses of the proxies whose X-Forwarded-For is believed
COOKIE = "sp"
SIDES = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad"}
MAX_BODY = 16_384  # a vote is ~100 bytes, its reason at most 500 characters (up to 4 bytes each, JSON-escaped)
PRIVATE = {"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

router = APIRouter()
_HOME: list[Path] = []  # set by create_app(home); else the studio's home (config.home_dir())
_PROXIES: list[set[str]] = []  # set by create_app(trusted_proxies=...); else POPCORN_TRUSTED_PROXIES


def _studies():
    return owner.get_studies(_HOME[0] if _HOME else None)


def client_address(request: Request) -> str:
    """The participant's address for the join limit (popcorn.serve.access.client_address: the peer's, or what a
    configured proxy saw; create_app(trusted_proxies=...) else POPCORN_TRUSTED_PROXIES)."""
    proxies = access.trusted_proxies(_PROXIES[0]) if _PROXIES else None
    return access.client_address(request.client.host if request.client else "",
                                 request.headers.get("x-forwarded-for", ""), proxies)


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
    except (ValueError, RecursionError):
        raise StudyError("send JSON") from None
    if not isinstance(data, dict):
        raise StudyError("send a JSON object")
    return data


def _state(link: str, pid: str) -> dict:
    me = _studies().participant(link, pid)
    total, answered = len(me["tasks"]), me["answered"]
    state = {"question": me["study"]["question"], "total": total, "done": len(answered),
             "finished": len(answered) >= total, "task": None}
    if state["finished"]:  # the completion code and the way back to the recruiting platform, only once done
        settings = me["study"]["settings"]
        state["completion_code"] = settings.get("completion_code", "")
        state["redirect"] = settings.get("redirect_url", "")
    nxt = next((i for i in range(total) if i not in answered), None)
    if nxt is not None:
        shown = _studies().shown(me, nxt, serve=True)
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
        return HTMLResponse(f"<!doctype html><title>Study</title><p>{html.escape(exc.message)}</p>",
                            status_code=exc.status, headers=PRIVATE)
    consent = study["settings"].get("consent", "")
    body = PAGE.replace("__QUESTION__", html.escape(study["question"])).replace(
        "__INVITE__", "true" if study["invite_only"] else "false").replace("__LINK__", html.escape(link)).replace(
        "__HAS_CONSENT__", "true" if consent else "false").replace("__CONSENT__", html.escape(consent))
    return HTMLResponse(body, headers=PRIVATE)


@router.post("/s/{link}/api/join")
async def join(link: str, request: Request):
    try:
        body = await _body(request)
        me = await run_in_threadpool(_studies().join, link, str(body.get("invite", "")), client_address(request),
                                     body.get("platform"), body.get("consent") is True)
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
        # checked in a worker thread, then queued for the next group commit: the event loop keeps serving meanwhile
        prepared = await run_in_threadpool(_studies().prepare_vote, link, pid, body.get("task"), choice,
                                           body.get("reason", ""))
        ack = await asyncio.wrap_future(_studies().commit_vote(prepared))
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
        if what == "participants.csv":
            studies = owner.get_studies(home)
            studies.study(study_id)
            return PlainTextResponse(analysis.participants_csv(studies.participants(study_id)),
                                     media_type="text/csv", headers=PRIVATE)
        if what == "chart.png":
            with tempfile.TemporaryDirectory() as tmp:
                path = analysis.chart_png(owner.results(owner.LOCAL, study_id, home=home), Path(tmp) / "chart.png")
                return Response(Path(path).read_bytes(), media_type="image/png", headers=PRIVATE)
        raise StudyError("no such export", 404)
    except StudyError as exc:
        return _error(exc)


# ------------------------------------------------------------------------------------------------------------ app


def create_app(home: str | Path | None = None, trusted_proxies: list[str] | None = None) -> FastAPI:
    """The study routes alone (no docs, no OpenAPI schema), serving the store in `home`; `trusted_proxies` (else
    POPCORN_TRUSTED_PROXIES) are the addresses whose X-Forwarded-For names the participant."""
    _HOME[:] = [Path(home)] if home else []
    _PROXIES[:] = [set(trusted_proxies)] if trusted_proxies else []
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
    parser.add_argument("--trusted-proxy", action="append", default=[],
                        help=f"a proxy whose X-Forwarded-For is believed (repeatable; default ${PROXIES_ENV})")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.home, args.trusted_proxy), host=args.host, port=args.port, log_level="warning",
                server_header=False, date_header=False, access_log=False,
                proxy_headers=False)  # uvicorn would believe X-Forwarded-For from 127.0.0.1: client_address decides
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
