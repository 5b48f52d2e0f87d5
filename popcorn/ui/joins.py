"""What a join of Gradio's queue may ask, checked before the event is queued and before any file in it is touched.

Every way into the queue (the browser's /queue/join by fn_index, gradio_client's, /call/<api_name>) ends in
`Queue.push`; `install(demo)` puts `check_join` in front of it. A refused join is an HTTP error with a message:

- 400 when the event does not exist (an unknown fn_index was an unhandled KeyError, HTTP 500, before);
- 400 when a file input is a URL (Gradio would download it on the visitor's behalf, past the 10 MB upload limit) or
  a path outside Gradio's upload folder, unless the owner sets POPCORN_ALLOW_URL_FILES=1;
- 403 on a public studio when an owner's event (one that takes a file, or has a password field: the Study tab's) comes
  from someone who is not the owner: the owner signed in (History -> Owner), or the admin secret in the event's
  password field (one try against the limits of popcorn.serve.access, per client address; 429 past them). So a
  stranger's file is never copied, hashed or parsed, and a stranger's guesses count against their address however
  often they renew their visitor id;
- 429 with Retry-After on a public studio when the visitor (or their address) already has as many jobs queued or
  running as popcorn.serve.access.queue_limits() allows (the owner is exempt; a private studio has no such limit).
"""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
from fastapi import HTTPException
from gradio.utils import get_upload_folder

from popcorn.serve import access
from popcorn.types import StageError

# events that take the admin secret to sign in, counting their own tries (popcorn/ui/history.py); every other event
# with a password field is the owner's (the Study tab's) and its secret is checked here, per client address
SIGN_IN_EVENTS = {"on_owner"}
URL_LIKE = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//|\\\\)")


def _files(value):
    """The FileData dicts in an event's data, at any depth."""
    if isinstance(value, dict):
        if "path" in value and ("meta" in value or "url" in value or "orig_name" in value):
            yield value
        else:
            for item in value.values():
                yield from _files(item)
    elif isinstance(value, list):
        for item in value:
            yield from _files(item)


def file_refusal(data, upload_folder: Path) -> str:
    """'' when every file in `data` is a file uploaded to this server, else why not. A path relative to the upload
    folder (as popcorn.ui.guard hands them out) is made absolute in `data`."""
    for item in _files(data):
        path = item.get("path")
        if isinstance(path, str) and path and not path.startswith("/") and not URL_LIKE.match(path):
            item["path"] = str(upload_folder / path)
    if access.url_files_allowed():
        return ""
    for item in _files(data):
        for key in ("path", "url"):
            raw = item.get(key)
            if isinstance(raw, str) and URL_LIKE.match(raw) and not (key == "url" and raw.startswith("/")):
                return (f"a file given as a URL ({key}) is not fetched on this studio: upload the file itself "
                        "(the owner can allow URLs with POPCORN_ALLOW_URL_FILES=1)")
        path = item.get("path")
        if not isinstance(path, str) or not path:
            return "a file input has no path: upload the file itself"
        try:
            Path(path).resolve().relative_to(upload_folder.resolve())
        except (ValueError, OSError):
            return "a file input is not a file uploaded to this studio: upload the file itself"
    return ""


def _who(request, session: str | None, user: str | None) -> tuple[str, str]:
    """(visitor id, client address) of the request behind a queued event or a join (ids as popcorn.ui.requester's)."""
    cookies = getattr(request, "cookies", None) or {}
    headers = getattr(request, "headers", None) or {}
    client = getattr(request, "client", None)
    return (access.visitor_id(cookies.get(access.COOKIE), session, user),
            access.client_address(getattr(client, "host", ""), headers.get("x-forwarded-for")))


def _jobs(queue) -> list:
    """Every event waiting in `queue` or running."""
    waiting = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
    running = [e for job in list(queue.active_jobs) if job for e in job]
    return waiting + running


def _retry_after(queue, fn) -> int:
    """Seconds until a job of `fn` is likely done: its mean run time so far (30 s before the first)."""
    timed = queue.process_time_per_fn.get(fn)
    return max(5, min(600, round(timed.avg_time))) if timed and timed.count else 30


async def check_join(queue, body, request, username: str | None = None) -> None:
    """HTTPException when the join may not be queued (see the module's docstring); nothing when it may."""
    fns = queue.blocks.fns
    if not isinstance(body.fn_index, int) or body.fn_index not in fns:
        raise HTTPException(400, detail=f"no event {body.fn_index!r} on this studio: reload the page")
    fn = fns[body.fn_index]
    data = body.data or []
    reason = file_refusal(data, Path(get_upload_folder()))
    if reason:
        raise HTTPException(400, detail=reason)
    if not access.public():
        return
    visitor, address = _who(request, body.session_hash, username)
    owner = access.is_owner(visitor)
    secrets = [v for c, v in zip(fn.inputs, data) if isinstance(c, gr.Textbox) and c.type == "password"]
    owners_only = any(True for _ in _files(data)) or (secrets and fn.name not in SIGN_IN_EVENTS)
    if owners_only and not owner:
        try:
            ok = bool(secrets) and await access.admin_secret_ok_async(str(secrets[0] or ""), f"owner:{address}")
        except StageError as exc:
            raise HTTPException(429, detail=f"{exc.message}: {exc.hint}") from None
        if not ok:
            raise HTTPException(403, detail="only the studio's owner may use this: give the admin secret")
    if owner:
        return
    limits = access.queue_limits()
    mine = same_group = from_address = 0
    for event in _jobs(queue):
        their_visitor, their_address = _who(event.request, event.session_hash, event.username)
        if their_visitor == visitor:
            mine += 1
            same_group += event.concurrency_id == fn.concurrency_id
        from_address += their_address == address
    verdict = access.queue_verdict(fn.concurrency_id, same_group, mine, from_address, limits)
    if verdict:
        wait = _retry_after(queue, fn)
        raise HTTPException(429, detail=f"{verdict}: try again in about {wait} s, when one of them has finished",
                            headers={"Retry-After": str(wait)})


def install(demo: gr.Blocks) -> None:
    """Put check_join in front of the queue of `demo` (after demo.queue())."""
    queue = demo._queue
    push = queue.push

    async def checked_push(body, request, username):
        await check_join(queue, body, request, username)
        return await push(body=body, request=request, username=username)

    queue.push = checked_push
