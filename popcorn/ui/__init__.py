"""The gradio layer: one module per page, each with `build_tab() -> None` (one gr.Tab: widgets and wiring).

    studio_page.py  idea -> plan -> render -> score        history.py   the visitor's runs (all of them for the owner)
    score.py        h alone                                 study.py, experiments.py   (other pages)
    app.py          the pages in order, the FastAPI app (visitor cookie, file guard, extra routers), serve()
    guard.py        the ASGI middleware: visitor cookie, file routes limited to the visitor's own copies

This module holds the glue the pages share: who is asking (`requester`), errors shown as messages (`shown_errors`),
and `shared`, where a page leaves components another page wires to (the studio's panels, the tabs, the Blocks).
"""

from __future__ import annotations

import html
from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple

import gradio as gr

from popcorn.serve import access
from popcorn.studio import StudioError

# filled while the app is built: "demo" (the Blocks), "tabs" (gr.Tabs), "studio" (the studio page's components)
shared: dict[str, Any] = {}


@contextmanager
def shown_errors() -> Iterator[None]:
    """A StudioError becomes a gr.Error: the message in a toast, no traceback, the spinner stops, inputs stay."""
    try:
        yield
    except StudioError as exc:
        title = f"{exc.stage or 'Studio'} failed"
        # a toast renders its message as HTML, and messages quote what the visitor typed: shown as text
        raise gr.Error(html.escape(str(exc), quote=False), duration=None, title=title, print_exception=False) from None


class Requester(NamedTuple):
    visitor: str  # whose runs: the signed-in HF user, else the browser's signed cookie, else the gradio session
    holder: str  # who may fetch the files handed out: the browser (cookie) or the session
    session: str  # the gradio session: the key under which Cancel finds the running actions


def requester(request: gr.Request | None) -> Requester:
    """Who is asking, from the request gradio hands an event (cookies, session hash, signed-in user)."""
    session = str(getattr(request, "session_hash", "") or "")
    cookies = getattr(request, "cookies", None) or {}
    cookie = cookies.get(access.COOKIE) if hasattr(cookies, "get") else None
    user = getattr(request, "username", None) or None
    return Requester(access.visitor_id(cookie, session, user), access.visitor_id(cookie, session), session)


def page_load(fn, outputs) -> None:
    """Run fn(request) when the page loads (each page fills its own widgets)."""
    shared["demo"].load(fn, None, outputs, api_visibility="private")
