"""The History tab: the visitor's own runs (every run for the owner, after giving POPCORN_ADMIN_SECRET); a click
opens a run in the Studio tab. Layout and wiring only; popcorn/studio/ decides what a visitor may see."""

from __future__ import annotations

import gradio as gr

from popcorn import studio, ui
from popcorn.serve import access
from popcorn.types import StageError


def on_history(request: gr.Request):
    return studio.history(ui.requester(request).visitor)


def open_run_in(page: ui.StudioPanels, tabs: gr.Tabs):
    """The event that opens the clicked run in the studio's panels (filled by name) and shows the Studio tab."""

    def on_open_run(evt: gr.SelectData, request: gr.Request):
        who = ui.requester(request)
        with ui.shown_errors():
            row = evt.row_value if isinstance(evt.row_value, (list, tuple)) else []
            column = studio.HISTORY_COLUMNS.index("run")
            loaded = studio.load_run(row[column] if len(row) > column else "", who.visitor, who.holder)
        rendered = loaded.render or studio.empty_render(loaded.plan.run_id, loaded.error)
        # the plan's fields after the render's: where both have a field (run_id), the plan's names the run opened
        return {page.query: loaded.query, **ui.fill(page.render, rendered), **ui.fill(page.plan, loaded.plan),
                tabs: gr.Tabs(selected="studio")}

    return on_open_run


async def on_owner(secret, request: gr.Request):
    """Owner mode: the admin secret lets this visitor see every run (constant time, never logged; wrong tries count
    against the client's address, and the server's backoff is awaited here, holding no worker thread)."""
    who = ui.requester(request)
    client = getattr(request, "client", None)
    address = access.client_address(getattr(client, "host", ""), (getattr(request, "headers", None) or {})
                                     .get("x-forwarded-for"))
    try:
        signed_in = bool(who.visitor) and await access.admin_secret_ok_async(
            str(secret or "")[: access.LIMITS["secret"]], f"owner:{address}")
    except StageError as exc:  # too many wrong tries from this address
        gr.Warning(f"{exc.message}: {exc.hint}.")
    else:
        if signed_in:
            access.make_owner(who.visitor)
            gr.Info("Owner mode: the history shows every visitor's runs.")
        else:
            gr.Warning("That is not the admin secret.")
    return "", studio.history(who.visitor)


def on_leave_owner(request: gr.Request):
    who = ui.requester(request)
    access.sign_out_owner(who.visitor)
    return studio.history(who.visitor)


def build_tab() -> None:
    with gr.Tab("History", id="history"):
        gr.Markdown("Your runs, kept with their files on this studio (only you see them). Click a row to open it in the "
                    "studio.")
        history = gr.Dataframe(headers=studio.HISTORY_COLUMNS, interactive=False, wrap=True,
                               elem_id="history", elem_classes="pc-table")
        refresh = gr.Button("Refresh", size="sm")
        with gr.Accordion("Owner", open=False, visible=access.owner_mode_enabled(), elem_id="owner-box"):
            secret = gr.Textbox(label="Admin secret (set on the server)", type="password", elem_id="owner-secret")
            with gr.Row():
                sign_in = gr.Button("See every run", size="sm", elem_id="owner-btn")
                sign_out = gr.Button("Only mine", size="sm")

    page: ui.StudioPanels = ui.shared["studio"]
    for event in page.events:
        event.then(on_history, None, history, api_visibility="private")
    opened = {id(c): c for c in (page.query, *page.plan, *page.render, ui.shared["tabs"])}  # run_id is in both panels
    history.select(open_run_in(page, ui.shared["tabs"]), None, list(opened.values()), api_visibility="private")
    refresh.click(on_history, None, history, api_visibility="private")
    sign_in.click(on_owner, secret, [secret, history], api_visibility="private", concurrency_limit=None)
    sign_out.click(on_leave_owner, None, history, api_visibility="private")
    ui.page_load(on_history, [history])
