"""The studio app: the pages in order, on a FastAPI app that also serves extra routers, behind popcorn.ui.guard.

    PAGES    the page modules, each with build_tab() -> None (one gr.Tab); a page that cannot be imported is an error
    ROUTERS  "module:attribute" of FastAPI APIRouters served beside the studio (the study's participant pages, /s/...)
    build()  the Blocks;  create_app()  the ASGI app;  main(argv)  serve it with uvicorn (app.py, `popcorn studio`)

Nothing heavy loads at start (the corpus, index, LLM, video model and predictor load on first use, with progress),
except on ZeroGPU, where the enabled GPU backends' weights load before serving, as ZeroGPU expects.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
from pathlib import Path

import gradio as gr

from popcorn import config, ui
from popcorn.serve import access, serving, zerogpu
from popcorn.ui import joins
from popcorn.ui.gradio_import import app_made_later

log = logging.getLogger("popcorn.ui")

PAGES = ["popcorn.ui.studio_page", "popcorn.ui.history", "popcorn.ui.score", "popcorn.ui.study",
         "popcorn.ui.experiments"]
# pages that read and write server folders a caller names: left out of a public studio (popcorn.serve.access.public)
PRIVATE_PAGES = {"popcorn.ui.experiments"}
ROUTERS = ["popcorn.study.server:router"]

CSS = """
.pc-card { display: flex; gap: 12px; flex-wrap: wrap; }
.pc-col { flex: 1 1 180px; border-radius: 12px; padding: 12px 14px; border: 1px solid var(--border-color-primary); }
.pc-yours { background: linear-gradient(135deg, rgba(255,149,0,.16), rgba(255,94,98,.10)); }
.pc-baseline { background: var(--background-fill-secondary); }
.pc-label { font-size: .78rem; text-transform: uppercase; letter-spacing: .05em; opacity: .75; }
.pc-big { font-size: 2.2rem; font-weight: 800; line-height: 1.1; margin-top: 4px; }
.pc-title { font-weight: 600; margin: 6px 0 2px; }
.pc-sub { font-size: .85rem; opacity: .85; }
.pc-pair { display: flex; gap: 14px; margin-top: 6px; font-size: .9rem; }
.pc-pair b { font-size: 1.25rem; }
.pc-chart { flex: 1 1 100%; padding: 4px 2px 0; }
.pc-bar-row { display: flex; align-items: center; gap: 8px; margin-top: 6px; font-size: .85rem; }
.pc-bar-label { flex: 0 0 160px; opacity: .85; white-space: nowrap; }
.pc-bar-track { flex: 1; height: 14px; border-radius: 7px; background: var(--background-fill-secondary); }
.pc-bar { display: block; height: 100%; border-radius: 7px; }
.pc-bar-yours { background: linear-gradient(90deg, #ff9500, #ff5e62); }
.pc-bar-predicted { background: #9aa4b8; }
.pc-bar-actual { background: #4a5568; }
.pc-bar-value { flex: 0 0 64px; text-align: right; font-weight: 700; }
.pc-empty, .pc-error { padding: 14px; border-radius: 12px; border: 1px dashed var(--border-color-primary); }
.pc-error { border-color: #e5484d; }
.pc-studies { display: grid; gap: 10px; grid-template-columns: repeat(auto-fill, minmax(min(100%, 300px), 1fr)); }
.pc-study { border-radius: 12px; padding: 10px 14px; border: 1px solid var(--border-color-primary); }
.pc-study .pc-title { margin-top: 0; overflow-wrap: anywhere; }
.pc-facts { display: flex; gap: 8px 22px; flex-wrap: wrap; margin: 6px 0; }
.pc-fact { display: flex; flex-direction: column; }
.pc-share a { align-self: flex-start; }
.pc-link { font-size: .9rem; overflow-wrap: anywhere; user-select: all; -webkit-user-select: all; cursor: text; }
#header h1 { margin-bottom: 0; }
.pc-status { min-height: 0 !important; }
.pc-status:empty { display: none; }
/* phones: a table keeps its columns as wide as their headers and content (gradio measures its header row to size
   both the headers and the cells, so sizes set here are the ones it measures) and scrolls sideways, headers with it */
.pc-table .table-wrap, .pc-table .virtual-table-viewport { overflow-x: auto !important; }
.pc-table .header-cell .header { white-space: nowrap; }
.pc-table .sizing-body td { white-space: normal !important; }  /* a long text column may wrap, so the others fit */
/* Markdown tables (the batch report): each scrolls sideways inside the page; headers stay on one line, words whole */
.pc-md-tables table { display: block; width: max-content; max-width: 100%; overflow-x: auto; padding: 0; border: none; }
.pc-md-tables th { white-space: nowrap; }
.pc-md-tables td { overflow-wrap: normal; word-break: normal; }
@media (max-width: 640px) {
  .pc-table .header-table { width: max-content !important; }
  .pc-table .header-table .header-cell { min-width: 6.5em; }
  .pc-bar-label { flex-basis: 110px; white-space: normal; }
}
"""

HEADER = """# 🍿 Popcorn studio
**A one-line idea → a plan (title, cover, video prompt) → a titled micro-video → its predicted popularity**, next to
the closest human-made MicroLens video. [LLMPopcorn](https://arxiv.org/abs/2502.12945): F(x) = h(g(f(x))).
"""


def _load(spec: str):
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        log.info("%s is not available: %s", module_name, exc)
        return None
    return getattr(module, attribute) if attribute else module


def build() -> gr.Blocks:
    """The Blocks: the header, then each importable page's tab, in PAGES order (cheap: widgets only)."""
    ui.shared.clear()
    with app_made_later(), gr.Blocks(title="Popcorn studio", delete_cache=(3600, 24 * 3600)) as demo:
        ui.shared["demo"] = demo
        gr.Markdown(HEADER, elem_id="header")
        with gr.Tabs() as tabs:
            ui.shared["tabs"] = tabs
            for spec in PAGES:
                page = None if spec in PRIVATE_PAGES and access.public() else ui.load_page(spec)
                if page is not None:
                    page.build_tab()
    return demo


def create_app(demo: gr.Blocks | None = None, on_page=None):
    """The ASGI app: extra routers first, Gradio mounted at /, all behind the visitor cookie and the file guard.
    `on_page`: called once when the page first went out (Guard)."""
    from fastapi import FastAPI
    from gradio.utils import get_upload_folder

    from popcorn.ui.guard import Guard

    demo = demo or build()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    for spec in ROUTERS:  # here other helpers' plain FastAPI routes join the studio
        router = _load(spec)
        if router is not None:
            app.include_router(router)
    cache = Path(get_upload_folder()).resolve()  # Gradio's cache: what it serves, and where it copies what it serves
    serving.set_root(cache / "popcorn-serve")  # hand-outs are made there, so Gradio serves them as they are
    demo.queue(default_concurrency_limit=2, max_size=64)
    joins.install(demo)  # fair per-visitor limits, known events, no URL files, the owner before any file work
    app = gr.mount_gradio_app(
        app, demo, path="/", theme=gr.themes.Soft(primary_hue="orange", secondary_hue="rose"), css=CSS,
        footer_links=["api"], run_history=False, enable_monitoring=False, mcp_server=False, ssr_mode=False,
        blocked_paths=[str(config.home_dir()), str(config.cache_dir())], max_file_size="10mb",
    )
    return Guard(app, cache, on_page=on_page)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Popcorn studio (Gradio)")
    parser.add_argument("--host", default=os.environ.get("POPCORN_HOST") or os.environ.get("GRADIO_SERVER_NAME")
                        or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("POPCORN_PORT")
                                                        or os.environ.get("GRADIO_SERVER_PORT") or 7860))
    args = parser.parse_args(argv)
    from popcorn.studio import apply_space_defaults

    apply_space_defaults()
    os.environ["POPCORN_BIND_HOST"] = args.host  # access.public(): bound beyond loopback = public (a fact)
    if zerogpu.active():
        from popcorn.studio.backends import rows

        names = {kind: [r["name"] for r in rows(kind)] for kind in ("llm", "video")}
        log.info("ZeroGPU: loaded at start-up: %s", zerogpu.preload(names["llm"], names["video"]) or "nothing")
    import uvicorn

    from popcorn.serve import warm
    from popcorn.serve.connections import HeaderDeadlineProtocol

    app = create_app(on_page=warm.page_served)
    # the collector back on (app.py and `popcorn studio` pause it while gradio loads), with what start-up made moved
    # out of its view for good: the modules, classes and the Blocks live as long as the process
    gc.enable()
    gc.freeze()
    server = uvicorn.Server(uvicorn.Config(
        app, host=args.host, port=args.port, log_level="warning", http=HeaderDeadlineProtocol,
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1; access.client_address decides
        # whom to believe (POPCORN_TRUSTED_PROXIES), for the queue limits and the owner's secret as for the study's joins
        proxy_headers=False, server_header=False))
    # the caches and models the first click needs, warmed in a low-priority thread; it starts once the server
    # listens and its page has gone out (or warm.PAGE_GRACE_S later), so it does not slow the first page down
    warm.start_background(llm=os.environ.get("POPCORN_LLM") or None,
                          after=warm.after_first_page(lambda: server.started))
    print(f"Popcorn studio on http://{args.host}:{args.port}/ "
          f"({'public' if access.public() else 'this machine only'}; backends: "
          f"{', '.join(sorted(access.enabled_names() or ['all registered']))})", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:  # as uvicorn.run: Ctrl-C ends the studio quietly
        pass
    if not server.started:  # as uvicorn.run: it never served (the port was taken, say)
        raise SystemExit(3)
