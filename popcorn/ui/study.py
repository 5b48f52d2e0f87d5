"""The Study tab (owner side): create a blind A/B study from stored runs, a pair file or a batch folder, list the
studies with their participant links, close or reopen one, then see its results and chart. Layout and wiring only;
the work is in popcorn/study/owner.py. Everything here asks for the admin secret (POPCORN_ADMIN_SECRET; without it
set, the tab refuses), or a visitor signed in as the owner in the History tab; each action is one try against
popcorn.serve.access's limits. Participants use /s/<link>/, not this tab.
"""

from __future__ import annotations

import html
import tempfile
from contextlib import contextmanager
from typing import Iterator

import gradio as gr

from popcorn import ui
from popcorn.studio.views import details_fold
from popcorn.study import StudyError, owner
from popcorn.study.pairs import FACTORS


@contextmanager
def _shown() -> Iterator[None]:
    try:
        yield
    except StudyError as exc:
        raise gr.Error(html.escape(exc.message, quote=False), title="Study", print_exception=False) from None


def study_cards(studies: list[dict]) -> str:
    """The list of studies as cards (one per study, each value under its label), readable at any width: the name, its
    status, people and votes, and the participant link (a click or tap on it selects all of it, ready to copy) with a
    link that opens it."""
    if not studies:
        return '<div class="pc-empty">No studies yet: create one above, then press "List studies".</div>'
    cards = []
    for s in studies:
        facts = "".join(f'<div class="pc-fact"><span class="pc-label">{html.escape(label)}</span>'
                        f'<b>{html.escape(str(s[label]))}</b></div>' for label in ("status", "people", "votes"))
        url = html.escape(str(s["link to share"]))
        cards.append(f'<div class="pc-study" data-study="{html.escape(s["id"])}">'
                     f'<div class="pc-title">{html.escape(s["name"])} <span class="pc-sub">· {html.escape(s["id"])}'
                     f'</span></div><div class="pc-facts">{facts}</div>'
                     f'<div class="pc-fact pc-share"><span class="pc-label">link to share</span>'
                     f'<code class="pc-link" title="click to select, then copy">{url}</code>'
                     f'<a class="pc-sub" href="{url}" target="_blank" rel="noopener">open the participant page</a>'
                     f'</div></div>')
    return f'<div class="pc-studies">{"".join(cards)}</div>'


def _listed(choices: list[tuple[str, str]], value: str | None = None):
    """The study picker (on `value`, else the newest study) and the cards; the caller has authorised the visitor."""
    ids = [i for _, i in choices]
    return (gr.Dropdown(choices=choices, value=value if value in ids else (ids[0] if ids else None)),
            study_cards(owner.studies_table(owner.LOCAL)))


def on_create(secret, name, question, source, factor, a, b, pair_file, batch_dir, per_participant, checks,
              invites, request: gr.Request = None):
    with _shown():
        path = pair_file if isinstance(pair_file, str) or pair_file is None else getattr(pair_file, "name", "")
        done = owner.create_view(secret, name, question, source, factor, a, b, path, batch_dir, per_participant,
                                 checks, invites, who=ui.requester(request).visitor)
        return (done, *_listed(owner.study_choices(owner.LOCAL)))  # authorised by create_view; the newest first


def on_list(secret, study_id, request: gr.Request = None):
    with _shown():
        return _listed(owner.study_choices(secret, who=ui.requester(request).visitor), study_id)


def on_results(secret, study_id, request: gr.Request = None):
    with _shown():
        return owner.results_view(secret, study_id, tempfile.mkdtemp(prefix="study-results-"),
                                  who=ui.requester(request).visitor)


def on_status(secret, study_id, status, request: gr.Request = None):
    with _shown():
        note = owner.status_view(secret, study_id, status, who=ui.requester(request).visitor)
        return (note, *_listed(owner.study_choices(owner.LOCAL), study_id))  # authorised by status_view


def build_tab() -> None:
    with gr.Tab("Study", id="study", elem_id="study-tab"):
        gr.Markdown("Blind A/B studies: people compare two videos made for the same idea without knowing which "
                    "system made which. Results are for you only.\n\n" + details_fold(
                        "Details", "The admin secret is the value of `POPCORN_ADMIN_SECRET` on the server (this tab "
                        "refuses everything while it is not set). Studies made with `python -m popcorn study create` "
                        "on this machine are listed here too."))
        secret = gr.Textbox(label="Admin secret (set on the server)", type="password", elem_id="study-secret")
        with gr.Accordion("Create a study", open=True):
            with gr.Row():
                name = gr.Textbox(label="Name (only you see it)", elem_id="study-name")
                question = gr.Textbox(label="Question", value="Which video would be more popular?")
            with gr.Row():
                source = gr.Radio([("Stored runs", "runs"), ("Pair file", "file"), ("Batch folder", "batch")],
                                  value="runs", label="Pairs from")
                factor = gr.Dropdown(list(FACTORS), value="mode", label="Pair runs differing in")
                a = gr.Textbox(label="Condition A (optional, e.g. pe)")
                b = gr.Textbox(label="Condition B (optional, e.g. basic)")
            with gr.Row():
                pair_file = gr.File(label="Pair file (JSON or CSV)", file_types=[".json", ".csv"], type="filepath")
                batch_dir = gr.Textbox(label="Batch output folder")
            with gr.Row():
                per_participant = gr.Number(10, label="Pairs per participant", precision=0, minimum=1)
                checks = gr.Number(1, label="Attention checks", precision=0, minimum=0)
                invites = gr.Number(0, label="Invite codes (0: open link)", precision=0, minimum=0)
            create = gr.Button("Create study", variant="primary")
            created = gr.Markdown(elem_id="study-created")
        with gr.Accordion("Your studies", open=True):
            refresh = gr.Button("List studies", elem_id="study-refresh")
            listed = gr.HTML(elem_id="study-list")
            with gr.Row():
                study = gr.Dropdown([], label="Study", scale=3, elem_id="study-pick")
                show = gr.Button("Results", variant="primary", scale=1, elem_id="study-results")
                close = gr.Button("Close study (no more answers)", scale=1, elem_id="study-close")
                reopen = gr.Button("Reopen", scale=1, elem_id="study-reopen")
            state = gr.Markdown(elem_id="study-state")
            summary = gr.Markdown(elem_id="study-summary")
            table = gr.Dataframe(headers=owner.RESULT_COLUMNS, label="Win rates", interactive=False, wrap=True,
                                 elem_id="study-win-rates", elem_classes="pc-table")
            # no label: on a phone it covered the chart's first row (the chart names its axis itself)
            chart = gr.Image(label="Win rates (95% intervals)", show_label=False, type="filepath",
                             elem_id="study-chart")
            files = gr.File(label="Exports (votes CSV, participants CSV, results JSON)", file_count="multiple")

        shown = dict(fn=None, inputs=None, outputs=None, api_visibility="private")  # each answer brought into view
        create.click(on_create, [secret, name, question, source, factor, a, b, pair_file, batch_dir,
                                 per_participant, checks, invites], [created, study, listed], api_visibility="private"
                     ).success(js=ui.reveal("study-created"), **shown)
        refresh.click(on_list, [secret, study], [study, listed], api_visibility="private").success(
            js=ui.reveal("study-list"), **shown)
        show.click(on_results, [secret, study], [summary, table, chart, files], api_visibility="private").success(
            js=ui.reveal("study-summary"), **shown)
        for button, status in ((close, "closed"), (reopen, "open")):
            button.click(on_status, [secret, study, gr.State(status)], [state, study, listed],
                         api_visibility="private").success(js=ui.reveal("study-state"), **shown)
