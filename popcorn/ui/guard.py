"""The studio's outer ASGI layer: a signed visitor cookie, and Gradio's file routes limited to what a visitor may fetch.

- Every response to a request without a valid visitor cookie sets one (popcorn.serve.access: 128 random bits + HMAC;
  HttpOnly; SameSite=Lax, or None + Secure on a Space, whose page is framed by huggingface.co). Browsers and
  gradio_client (it keeps the cookies of /config) then come back as the same visitor.
- File routes (/gradio_api/file=..., /gradio_api/file/..., and the same without the prefix) serve only files inside
  Gradio's cache folder, where the studio's hand-outs are copied (popcorn.serve.serving): a hand-out only to the browser it
  was handed to, nothing from the session-state folder, no URLs (no fetching on a visitor's behalf). POPCORN_HOME (the
  SQLite store and its -wal/-shm, every run's files) and POPCORN_CACHE_DIR (GGUF, indexes) are never inside it.
- Routes the studio does not use and that reach other sessions or the network are refused: deep links (another
  session's state), the proxy, media streams, monitoring, run history, vibe editing, dev reload.
- A studio that is not public (popcorn.serve.access.public: bound to 127.0.0.1) offers every backend and the Experiments
  page, which reads and writes server folders. It answers only requests addressed to this machine by name (Host
  localhost, 127.0.0.1 or [::1]): a web page that re-points its own name at 127.0.0.1 (DNS rebinding) or a reverse
  proxy that passes on its public Host is refused, instead of driving that page from outside.
"""

from __future__ import annotations

import json
import os
import re
from http.cookies import SimpleCookie
from pathlib import Path

from popcorn.serve import access, serving

FILE_ROUTE = re.compile(r"^/(?:gradio_api/)?file(?:=|/)(?P<path>.*)$", re.S)
REFUSED_PREFIXES = ("/gradio_api/deep_link", "/gradio_api/proxy=", "/gradio_api/stream", "/monitoring",
                    "/gradio_api/monitoring", "/gradio_api/run-history", "/gradio_api/runs", "/gradio_api/vibe",
                    "/gradio_api/undo-vibe", "/gradio_api/dev/", "/gradio_api/mcp", "/gradio_api/process_recording")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def file_verdict(raw: str, cache_dir: Path, visitor: str) -> str:
    """'' when the file route may serve `raw` to `visitor`, else why not."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", raw) or raw.startswith("//"):
        return "URLs are not fetched"
    try:
        path = Path(os.path.abspath(raw)).resolve()
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


class Guard:
    """ASGI middleware around the whole app (Gradio and any extra routers)."""

    def __init__(self, app, cache_dir: str | Path):
        self.app, self.cache_dir = app, Path(cache_dir)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if not access.public() and not loopback_host(headers.get("host", "")):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _refuse(send, "this studio serves this machine only (its owner sets POPCORN_PUBLIC=1 to "
                                       "serve others, with the public defaults of docs/DEPLOY.md)")
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
                reason = file_verdict(match.group("path"), self.cache_dir, visitor)
        if reason:
            return await _refuse(send, reason)

        if visitor:
            return await self.app(scope, receive, send)
        secure = bool(os.environ.get("SPACE_ID")) or headers.get("x-forwarded-proto", "") == "https"
        cookie = _cookie_header(access.new_cookie(), secure)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [(b"set-cookie", cookie)]
            await send(message)

        return await self.app(scope, receive, send_with_cookie)


async def _refuse(send, reason: str) -> None:
    body = json.dumps({"detail": f"Forbidden: {reason}."}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
