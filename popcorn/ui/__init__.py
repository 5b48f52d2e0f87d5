"""The gradio layer: one module per page, each with `build_tab() -> None` (one gr.Tab: widgets and wiring).

    studio_page.py  idea -> plan -> render -> score        history.py   the visitor's runs (all of them for the owner)
    score.py        h alone                                 study.py, experiments.py   (other pages)
    app.py          the pages in order, the FastAPI app (visitor cookie, file guard, extra routers), serve()
    guard.py        the ASGI middleware: visitor cookie, file routes limited to the visitor's own copies

This module holds the glue the pages share: who is asking (`requester`), errors shown as messages (`shown_errors`),
`load_page` (a page that cannot be imported is an error), `reveal` (bring a result into view), and `shared`, where a page leaves components another page
wires to: the Blocks, the tabs, and the studio's panels as named fields (`StudioPanels`), filled by name (`fill`).
"""

from __future__ import annotations

import html
import importlib
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Iterator, NamedTuple

from popcorn.ui.gradio_import import quiet_telemetry, skip_stub_writer

quiet_telemetry()  # no version check nor usage post to huggingface.co at each start (unless the operator asks)
skip_stub_writer()  # before gradio's first import: its type-stub writer is ~40% of it (popcorn/ui/gradio_import.py)
import gradio as gr  # noqa: E402

from popcorn.serve import access
from popcorn.studio import StudioError

# filled while the app is built: "demo" (the Blocks), "tabs" (gr.Tabs), "studio" (StudioPanels)
shared: dict[str, Any] = {}


class PlanPanel(NamedTuple):
    """The studio's plan components, one per field of popcorn.studio.PlanOutput (same names, same order)."""

    title: gr.Textbox
    cover_prompt: gr.Textbox
    video_prompt: gr.Textbox
    references: gr.Dataframe
    reasoning: gr.Markdown
    candidates: gr.Dataframe
    run_id: gr.Textbox
    why: gr.Markdown


class RenderPanel(NamedTuple):
    """The studio's render components, one per field of popcorn.studio.RenderOutput (same names, same order)."""

    video: gr.Video
    cover: gr.Image
    card: gr.HTML
    details: gr.JSON
    neighbours: gr.Dataframe
    files: gr.File
    run_id: gr.Textbox
    notes: gr.Markdown


class StudioPanels(NamedTuple):
    """What the studio page leaves in shared["studio"] for the other pages."""

    query: gr.Textbox
    plan: PlanPanel
    render: RenderPanel
    events: tuple  # the plan and render events (History refreshes after them)


def fill(panel: NamedTuple, values: NamedTuple) -> dict:
    """{component: value} for each of `values`' fields that `panel` has a component of the same name: an event
    returns this to fill those components (gradio leaves the others of its outputs as they are)."""
    return {getattr(panel, name): value for name, value in values._asdict().items() if name in panel._fields}


def load_page(name: str) -> ModuleType:
    """A page module. One that cannot be imported stops the build, naming the page: a studio silently missing a
    page is worse than one that does not start."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"the studio page {name} cannot be imported ({exc}); fix the import or take the page out "
                          "of popcorn.ui.app.PAGES") from exc


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


def reveal(elem_id: str, note: str | None = None) -> str:
    """Browser code for an event: scroll #elem_id into view and return `note` (shown in the status under the
    button), if any; once more half a second later if it is out of view then (the page was still laying out the
    new content). Run by gradio with Function(), which the studio's CSP allows (popcorn/ui/guard.py)."""
    returned = f"return {note!r}; " if note is not None else ""
    return ("() => { const go = () => { const e = document.getElementById(" + repr(elem_id) + "); if (!e) return; "
            "const r = e.getBoundingClientRect(); if (r.top < 0 || r.top + Math.min(40, r.height) > innerHeight) "
            "e.scrollIntoView({behavior: 'smooth', block: 'start'}); }; go(); setTimeout(go, 500); " + returned + "}")


def page_load(fn, outputs) -> None:
    """Run fn(request) when the page loads (each page fills its own widgets), on the Blocks being built (the app's,
    or the one a test builds a page in)."""
    demo = gr.context.Context.root_block or shared["demo"]
    demo.load(fn, None, outputs, api_visibility="private")
