"""The studio's outer ASGI layer: a signed visitor cookie, request limits, security headers, and Gradio's file routes
limited to what a visitor may fetch.

- Every response to a request without a valid visitor cookie sets one (popcorn.serve.access: 128 random bits + HMAC;
  HttpOnly; SameSite=Lax, or None + Secure on a Space, whose page is framed by huggingface.co). Browsers and
  gradio_client (it keeps the cookies of /config) then come back as the same visitor.
- File routes (/gradio_api/file=..., /gradio_api/file/..., and the same without the prefix) serve only files inside
  Gradio's cache folder, where the studio's hand-outs are copied (popcorn.serve.serving): a hand-out only to the browser it
  was handed to, nothing from the session-state folder, no URLs (no fetching on a visitor's behalf). POPCORN_HOME (the
  SQLite store and its -wal/-shm, every run's files) and POPCORN_CACHE_DIR (GGUF, indexes) are never inside it.
- No server path reaches a visitor: in JSON and event-stream answers the cache folder's absolute path is cut off, so a
  file's path and URL are relative to it (file=popcorn-serve/<token>/video.mp4); file routes and queue joins take
  such relative paths back (popcorn.ui.joins maps them).
- Request bodies: a body needs a Content-Length (411 without), at most access.request_limits()["body"] bytes (the
  queue join included; uploads: "upload_files" files of 10 MB), read within "body_seconds" (+1 s per 100 kB), and an
  upload holds at most "upload_files" files (413 otherwise). (Half-sent headers: popcorn.serve.connections.)
- Every answer carries a Content-Security-Policy (frame-ancestors: this studio, and the Hugging Face Space domains on
  a Space), X-Content-Type-Options: nosniff and a Referrer-Policy; request headers an app copied into a response are
  dropped; CORS headers only for the origins in POPCORN_CORS_ORIGINS.
- Routes the studio does not use and that reach other sessions or the network are refused: deep links (another
  session's state), the proxy, media streams, monitoring, run history, vibe editing, dev reload.
- A studio that is not public (popcorn.serve.access.public: bound to 127.0.0.1) offers every backend and the Experiments
  page, which reads and writes server folders. It answers only requests addressed to this machine by name (Host
  localhost, 127.0.0.1 or [::1]): a web page that re-points its own name at 127.0.0.1 (DNS rebinding) or a reverse
  proxy that passes on its public Host is refused, instead of driving that page from outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path

from popcorn.serve import access, serving

FILE_ROUTE = re.compile(r"^/(?:gradio_api/)?file(?:=|/)(?P<path>.*)$", re.S)
UPLOAD_ROUTES = ("/gradio_api/upload", "/upload")
REFUSED_PREFIXES = ("/gradio_api/deep_link", "/gradio_api/proxy=", "/gradio_api/stream", "/monitoring",
                    "/gradio_api/monitoring", "/gradio_api/run-history", "/gradio_api/runs", "/gradio_api/vibe",
                    "/gradio_api/undo-vibe", "/gradio_api/dev/", "/gradio_api/mcp", "/gradio_api/process_recording")
# request headers that have no business in a response (Gradio's ranged file answer copied the request's, Cookie too)
REQUEST_ONLY_HEADERS = {b"cookie", b"authorization", b"proxy-authorization", b"host", b"range", b"if-range",
                        b"referer", b"origin", b"user-agent", b"accept", b"accept-encoding", b"accept-language",
                        b"if-none-match", b"if-modified-since", b"x-forwarded-for", b"x-forwarded-host",
                        b"x-forwarded-proto", b"x-real-ip", b"x-admin-secret", b"upgrade-insecure-requests"}
REWRITTEN_TYPES = (b"application/json", b"text/event-stream")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def file_verdict(raw: str, cache_dir: Path, visitor: str) -> str:
    """'' when the file route may serve `raw` (absolute, or relative to the cache folder) to `visitor`, else why
    not."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", raw) or raw.startswith("//"):
        return "URLs are not fetched"
    try:
        path = Path(os.path.abspath(cache_dir / raw)).resolve()
        cache = cache_dir.resolve()
    except (OSError, ValueError):
        return "not a file path"
    if not _inside(path, cache):
        return "outside the served folder"
    if _inside(path, cache / "deep_links"):
        return "session state is not served"
    root = serving.serve_root().resolve()
    if _inside(path, root):
        holder = serving.holder_of(path)
        if holder is None:
            return "not handed out"
        if holder != visitor and not holder.startswith("s:"):  # a session-only hand-out is a capability URL
            return "handed to another visitor"
    return ""


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def loopback_host(host: str) -> bool:
    """Is an HTTP Host header this machine by name ('' too: a request without one is not from a browser)?"""
    host = host.strip().lower()
    if host.startswith("["):  # [::1]:7860
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host in LOOPBACK_HOSTS or host == ""


def _cookie_header(value: str, secure: bool) -> bytes:
    attrs = f"{access.COOKIE}={value}; Path=/; Max-Age={access.COOKIE_MAX_AGE}; HttpOnly"
    attrs += "; SameSite=None; Secure" if secure else "; SameSite=Lax"
    return attrs.encode("latin-1")


def content_security_policy() -> str:
    """The pages' CSP: scripts, styles, images, media and connections from this server only, so nothing a page shows
    can make the browser fetch from elsewhere; frames of this studio only in its own pages and the Space domains
    (access.frame_ancestors). Gradio 6's page needs inline scripts and styles, and its HTML component compiles its
    template with Function() ('unsafe-eval'); its theme's font comes from Google Fonts."""
    return "; ".join([
        "default-src 'self'", "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
        "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
        "font-src 'self' data: https://fonts.gstatic.com",
        "img-src 'self' data: blob:", "media-src 'self' data: blob:", "connect-src 'self'", "worker-src 'self' blob:",
        "frame-src 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'",
        "frame-ancestors " + " ".join(access.frame_ancestors()),
    ])


class _Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class PathAlias:
    """The cache folder's absolute path, cut from what visitors receive and put back on what they send."""

    def __init__(self, cache_dir: Path):
        prefix = str(cache_dir.resolve()).rstrip("/") + "/"
        self.cut = [p.encode() for p in {prefix, urllib.parse.quote(prefix, safe="/")}]

    def outgoing(self, body: bytes) -> bytes:
        for prefix in self.cut:
            body = body.replace(prefix, b"")
        return body


class Guard:
    """ASGI middleware around the whole app (Gradio and any extra routers)."""

    def __init__(self, app, cache_dir: str | Path, on_page=None):
        """`on_page`: called once, after the page itself (GET /) first went out (the studio then starts its
        warm-up, popcorn/ui/app.py main)."""
        self.app, self.cache_dir = app, Path(cache_dir)
        self.alias = PathAlias(self.cache_dir)
        self.on_page = on_page

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not access.public() and not loopback_host(headers.get("host", "")):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _refuse(send, 403, "this studio serves this machine only (its owner sets POPCORN_PUBLIC=1 "
                                            "to serve others, with the public defaults of docs/DEPLOY.md)")
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        jar = SimpleCookie()
        try:
            jar.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header: treated as none
            jar = SimpleCookie()
        value = jar[access.COOKIE].value if access.COOKIE in jar else ""
        visitor = access.visitor_id(value)  # "" when the cookie is missing or forged

        path = scope.get("path", "")
        reason = ""
        if path.startswith(REFUSED_PREFIXES):
            reason = "not offered by this studio"
        else:
            match = FILE_ROUTE.match(path)
            if match:
                raw = match.group("path")
                reason = file_verdict(raw, self.cache_dir, visitor)
                if not reason and not raw.startswith("/"):  # a path relative to the cache, as visitors get them
                    absolute = str(self.cache_dir.resolve() / raw)
                    new_path = path[: match.start("path")] + absolute
                    scope = {**scope, "path": new_path, "raw_path": urllib.parse.quote(new_path).encode()}
        if reason:
            return await _refuse(send, 403, reason)

        origin = headers.get("origin", "")
        allowed_origin = origin if origin and origin in access.cors_origins() else ""
        if scope["method"] == "OPTIONS" and allowed_origin and "access-control-request-method" in headers:
            return await _preflight(send, allowed_origin, headers.get("access-control-request-headers", ""))

        broken: list[_Refused] = []  # a limit the body broke while the app was reading it
        try:
            receive = self._bounded_body(scope, headers, receive, broken)
        except _Refused as exc:
            return await _refuse(send, exc.status, exc.reason)

        cookie = b""
        if not visitor:
            secure = bool(os.environ.get("SPACE_ID")) or headers.get("x-forwarded-proto", "") == "https"
            cookie = _cookie_header(access.new_cookie(), secure)
        state = {"started": False, "rewrite": False, "held": []}

        async def guarded_send(message):
            if broken:  # the app's answer to a body it could not read (a 500): ours goes out instead
                return
            if message["type"] == "http.response.start":
                message = dict(message)
                out = _response_headers(message.get("headers", []), cookie, allowed_origin)
                kind = next((v for k, v in out if k == b"content-type"), b"")
                state["rewrite"] = kind.startswith(REWRITTEN_TYPES)
                if state["rewrite"] and any(k == b"content-length" for k, _ in out):
                    state["held"] = [message, b""]  # the length changes: the body is held until its end
                    message["headers"] = [(k, v) for k, v in out if k != b"content-length"]
                    state["started"] = True
                    return
                message["headers"] = out
                state["started"] = True
                return await send(message)
            if message["type"] == "http.response.body" and state["rewrite"]:
                body = message.get("body", b"")
                if state["held"]:
                    state["held"][1] += body
                    if message.get("more_body"):
                        return
                    start, whole = state["held"]
                    whole = self.alias.outgoing(whole)
                    start["headers"] = start["headers"] + [(b"content-length", str(len(whole)).encode())]
                    state["held"] = []
                    await send(start)
                    return await send({"type": "http.response.body", "body": whole})
                message = {**message, "body": self.alias.outgoing(body)}
            return await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except _Refused:
            pass
        except Exception:
            if not broken:
                raise
        if broken and not state["started"]:
            await _refuse(send, broken[0].status, broken[0].reason)
        elif self.on_page is not None and path == "/" and scope["method"] == "GET" and state["started"]:
            on_page, self.on_page = self.on_page, None
            on_page()

    def _bounded_body(self, scope, headers: dict[str, str], receive, broken: list):
        """`receive`, limited as the module's docstring says; _Refused at once when the declared length is over,
        later (also put in `broken`) when the body comes too slowly or holds too many files."""
        limits = access.request_limits()
        upload = scope["path"].rstrip("/") in UPLOAD_ROUTES
        cap = limits["upload_files"] * limits["file_bytes"] + limits["body"] if upload else limits["body"]
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is None and not chunked:
            return receive  # no body (uvicorn hands an empty one)
        if declared is None:
            raise _Refused(411, "send the body with a Content-Length")
        if not declared.isdigit():
            raise _Refused(400, "the Content-Length is not a number")
        if int(declared) > cap:
            raise _Refused(413, f"the request body is {int(declared):,} bytes; the limit here is {cap:,}")
        deadline = time.monotonic() + limits["body_seconds"] + int(declared) / 100_000
        boundary = _boundary(headers.get("content-type", "")) if upload else b""
        parts = {"n": 0, "tail": b""}

        async def bounded_receive():
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, left))
            except asyncio.TimeoutError:
                broken.append(_Refused(408, "the request body was not sent in time"))
                raise broken[-1] from None
            if boundary and message["type"] == "http.request":
                seen = parts["tail"] + message.get("body", b"")
                parts["n"] += seen.count(b"--" + boundary + b"\r\n")
                parts["tail"] = seen[-(len(boundary) + 4):]
                if parts["n"] > limits["upload_files"]:
                    broken.append(_Refused(413, f"an upload holds at most {limits['upload_files']} files"))
                    raise broken[-1]
            return message

        return bounded_receive


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    return match.group(1).encode("latin-1") if match else b""


def _response_headers(headers, cookie: bytes, allowed_origin: str) -> list[tuple[bytes, bytes]]:
    """The app's headers without request headers it copied and without CORS headers (unless the origin is allowed),
    plus the security headers and, for a new visitor, the cookie."""
    out = [(k.lower(), v) for k, v in headers]
    out = [(k, v) for k, v in out if k not in REQUEST_ONLY_HEADERS and not k.startswith(b"sec-")
           and not k.startswith(b"access-control-") and k not in (b"content-security-policy", b"x-frame-options")]
    out.append((b"content-security-policy", content_security_policy().encode()))
    defaults = ((b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"strict-origin-when-cross-origin"))
    for name, value in defaults:
        if not any(k == name for k, _ in out):  # a route's own (the study's no-referrer) is kept
            out.append((name, value))
    if allowed_origin:
        out += [(b"access-control-allow-origin", allowed_origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]
    if cookie:
        out.append((b"set-cookie", cookie))
    return out


async def _preflight(send, origin: str, requested: str) -> None:
    headers = _response_headers([], b"", origin) + [
        (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
        (b"access-control-allow-headers", (requested or "content-type").encode("latin-1")),
        (b"access-control-max-age", b"600"), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


REFUSALS = {400: "Bad request", 403: "Forbidden", 408: "Request timeout", 411: "Length required",
            413: "Too large"}


async def _refuse(send, status: int, reason: str) -> None:
    body = json.dumps({"detail": f"{REFUSALS.get(status, 'Refused')}: {reason}."}).encode()
    headers = _response_headers([(b"content-type", b"application/json"),
                                 (b"content-length", str(len(body)).encode())], b"", "")
    if status in (408, 413):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
