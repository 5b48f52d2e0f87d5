"""The "Score a title" tab: the popularity predictor h alone (also the /score API endpoint)."""

from __future__ import annotations

import gradio as gr

from popcorn import studio, ui


def on_score(title, description, category):
    with ui.shown_errors():
        return studio.score_action(title, description, category)


def build_tab() -> None:
    with gr.Tab("Score a title", id="score"):
        gr.Markdown("The popularity predictor h alone (also the `/score` API endpoint).")
        with gr.Row():
            with gr.Column():
                title = gr.Textbox(label="Title")
                description = gr.Textbox(label="Description (optional)", lines=3)
                category = gr.Textbox(label="Category (optional, a MicroLens category)")
                score_btn = gr.Button("Score", variant="primary")
            with gr.Column():
                card = gr.HTML()
                with gr.Accordion("Details (JSON)", open=False):
                    score = gr.JSON(label="Score")
                    baseline = gr.JSON(label="Human-matched baseline")
    score_btn.click(on_score, [title, description, category], [score, baseline, card], api_name="score")
