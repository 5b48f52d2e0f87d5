"""The Studio tab: an idea -> plan (edit it) -> render -> the video and its predicted popularity.

Layout and wiring only: each button calls a plain function in popcorn/studio/. The /plan and /render API endpoints
are these events. Who asks (ui.requester) decides whose run it is and who may fetch its files.
"""

from __future__ import annotations

import gradio as gr

from popcorn import studio, ui
from popcorn.serve import warm
from popcorn.studio import EXAMPLES, K_CHOICES, MAX_CANDIDATES, MODE_CHOICES, PlanOutput, RenderOutput

# the panels are the outputs of the plan and render events, in the order of the records those events return
if ui.PlanPanel._fields != PlanOutput._fields or ui.RenderPanel._fields != RenderOutput._fields:
    raise TypeError("popcorn.ui.PlanPanel / RenderPanel no longer match popcorn.studio.PlanOutput / RenderOutput: "
                    "give them the same fields in the same order")


def on_plan(query, mode, k, llm, seed, candidates, video="storyboard", request: gr.Request = None,
            progress=gr.Progress()):
    who = ui.requester(request)
    with ui.shown_errors():
        return studio.plan_action(query, mode, k, llm, seed, candidates, video, progress=progress,
                                  cancel_key=who.session, visitor=who.visitor)


def on_render(run_id, title, cover_prompt, video_prompt, video, seed, request: gr.Request, progress=gr.Progress()):
    who = ui.requester(request)
    with ui.shown_errors():
        return studio.render_action(run_id, title, cover_prompt, video_prompt, video, seed, progress=progress,
                                    cancel_key=who.session, visitor=who.visitor, holder=who.holder)


def on_cancel(request: gr.Request):
    gr.Info(studio.cancel(ui.requester(request).session))


def on_pick_candidate(run_id, evt: gr.SelectData, request: gr.Request):
    with ui.shown_errors():
        return studio.pick_candidate(run_id, evt.index[0], ui.requester(request).visitor)


def on_load(request: gr.Request):
    choices = studio.backend_choices()
    return (gr.Dropdown(choices=choices["llm"], value=choices["llm_default"]),
            gr.Dropdown(choices=choices["video"], value=choices["video_default"]),
            studio.backend_info("llm", choices["llm_default"]), studio.backend_info("video", choices["video_default"]))


def on_warm_status():
    """The background warm-up's line (popcorn/serve/warm.py); the timer stops once it has finished."""
    state = warm.status()["state"]
    return warm.status_line(), gr.Timer(active=state == "running")


def on_backend_info(kind: str):
    return lambda name: studio.backend_info(kind, name)


def build_tab() -> None:
    with gr.Tab("Studio", id="studio"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                gr.Markdown("### 1 · Your idea")
                query = gr.Textbox(label="Idea (one line, any language)", lines=2, max_lines=6,
                                   placeholder="e.g. a golden retriever puppy sees the sea for the first time",
                                   elem_id="query")
                # the next action right under the idea, and its progress right under the button
                with gr.Row(elem_classes="pc-actions"):
                    plan_btn = gr.Button("Plan", variant="primary", elem_id="plan-btn", scale=3)
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn", scale=1)
                plan_status = gr.Markdown(elem_id="plan-status", elem_classes="pc-status", min_height=0)
                warm_status = gr.Markdown(elem_id="warm-status")
                warm_timer = gr.Timer(2.0)
                gr.Examples([[q] for q, _ in EXAMPLES], inputs=query, label="Examples: abstract and concrete")
                with gr.Row():
                    mode = gr.Radio(MODE_CHOICES, value="pe", label="Mode", elem_id="mode")
                    k = gr.Radio(K_CHOICES, value=10, label="K references (PE)", elem_id="k")
                with gr.Row():
                    llm = gr.Dropdown([("local", "local")], value="local", label="LLM", elem_id="llm", scale=3,
                                      allow_custom_value=True)  # checked against the owner's list, with a message
                    n_candidates = gr.Slider(1, MAX_CANDIDATES, value=1, step=1, label="Candidate plans",
                                             elem_id="candidates", scale=2)
                    seed = gr.Number(0, precision=0, label="Seed", minimum=0, elem_id="seed", scale=1)
                llm_info = gr.Markdown(elem_id="llm-info")
            with gr.Column(scale=6):
                gr.Markdown("### 2 · The plan: edit it, then render")
                title = gr.Textbox(label="Title (at most 50 characters)", max_lines=1, elem_id="title")
                cover_prompt = gr.Textbox(label="Cover prompt", lines=2, elem_id="cover-prompt")
                video_prompt = gr.Textbox(label="Video prompt (~3 s)", lines=4, elem_id="video-prompt")
                with gr.Row():
                    video_model = gr.Dropdown([("storyboard", "storyboard")], value="storyboard",
                                              label="Video model", elem_id="video-model", scale=3,
                                              allow_custom_value=True)
                    run_id = gr.Textbox(label="Run", interactive=False, elem_id="run-id", scale=2)
                render_btn = gr.Button("Render", variant="primary", elem_id="render-btn")
                render_status = gr.Markdown(elem_id="render-status", elem_classes="pc-status", min_height=0)
                video_info = gr.Markdown(elem_id="video-info")
                candidates = gr.Dataframe(label="Candidates, ranked by predicted popularity (click to use)",
                                          headers=studio.CANDIDATE_COLUMNS, interactive=False, wrap=True,
                                          max_height=260, elem_id="candidates-table", elem_classes="pc-table")

        gr.Markdown("### 3 · What the LLM saw")
        why = gr.Markdown(elem_id="why", latex_delimiters=[])  # visitor text: no LaTeX
        references = gr.Dataframe(label="MicroLens videos the LLM saw as examples (popular and unpopular)",
                                  headers=studio.REFERENCE_COLUMNS, interactive=False, wrap=True, max_height=340,
                                  elem_id="references", elem_classes="pc-table")
        with gr.Accordion("Reasoning", open=False, elem_id="reasoning-box"):
            reasoning = gr.Markdown(elem_id="reasoning", latex_delimiters=[])

        gr.Markdown("### 4 · The video and its predicted popularity")
        with gr.Row(equal_height=False):
            video = gr.Video(label="Video (title overlaid)", height=460, elem_id="video", interactive=False,
                             autoplay=True, loop=True)
            cover = gr.Image(label="Cover", height=460, type="filepath", interactive=False, elem_id="cover")
            with gr.Column():
                card = gr.HTML(studio.popularity_card(None, None), elem_id="popularity-card")
                notes = gr.Markdown(elem_id="render-notes", latex_delimiters=[])
                files = gr.File(label="Downloads: run.json and video.mp4", file_count="multiple", interactive=False,
                                elem_id="downloads")
        with gr.Accordion("Neighbours that drove the score", open=False):
            neighbours = gr.Dataframe(headers=studio.NEIGHBOUR_COLUMNS, interactive=False, wrap=True, max_height=300,
                                      elem_id="neighbours", elem_classes="pc-table")
        with gr.Accordion("Score details (JSON)", open=False):
            details = gr.JSON(elem_id="score-details")

    plan_panel = ui.PlanPanel(title=title, cover_prompt=cover_prompt, video_prompt=video_prompt, references=references,
                              reasoning=reasoning, candidates=candidates, run_id=run_id, why=why)
    render_panel = ui.RenderPanel(video=video, cover=cover, card=card, details=details, neighbours=neighbours,
                                  files=files, run_id=run_id, notes=notes)
    plan_event = plan_btn.click(on_plan, [query, mode, k, llm, seed, n_candidates, video_model], list(plan_panel),
                                api_name="plan", concurrency_limit=2, concurrency_id="llm",
                                show_progress_on=[plan_status, video_prompt, references])
    render_event = render_btn.click(on_render, [run_id, title, cover_prompt, video_prompt, video_model, seed],
                                    list(render_panel), api_name="render", concurrency_limit=1, concurrency_id="gpu",
                                    show_progress_on=[render_status, video, card])
    # when the result is ready, the page brings it into view (in the browser: no server round trip)
    plan_event.success(None, None, plan_status, js=ui.reveal("title", "✓ The plan is ready: edit it, then Render."),
                       api_visibility="private")
    render_event.success(None, None, render_status, js=ui.reveal("video", "✓ The video is ready, with its score."),
                         api_visibility="private")
    cancel_btn.click(on_cancel, None, None, cancels=[plan_event, render_event], api_visibility="private")
    candidates.select(on_pick_candidate, run_id, [title, cover_prompt, video_prompt], api_visibility="private")
    llm.change(on_backend_info("llm"), llm, llm_info, api_visibility="private")
    video_model.change(on_backend_info("video"), video_model, video_info, api_visibility="private")
    ui.page_load(on_load, [llm, video_model, llm_info, video_info])
    warm_timer.tick(on_warm_status, None, [warm_status, warm_timer], api_visibility="private", show_progress="hidden")
    # what the History page fills when a run is opened, and the events after which it refreshes
    ui.shared["studio"] = ui.StudioPanels(query=query, plan=plan_panel, render=render_panel,
                                          events=(plan_event, render_event))
