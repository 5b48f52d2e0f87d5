"""The Experiments page: launch a small batch with progress, and read a batch's report (tables and plots).

`build_tab()` adds one gr.Tab to the Blocks being built (widgets only: the backend lists are filled when the page
loads, since asking a backend whether it can run here may import torch); the work is done by
popcorn/experiments/actions.py."""

from __future__ import annotations

import gradio as gr

from popcorn import ui
from popcorn.experiments import actions
from popcorn.llm import list_backends
from popcorn.studio.errors import _sentence
from popcorn.types import StageError
from popcorn.video import list_generators


def _backend_names() -> tuple[list[str], list[str]]:
    return ([r["name"] for r in list_backends() if r["available"]],
            [r["name"] for r in list_generators() if r["available"]])


def on_load():
    llms, videos = _backend_names()
    return (gr.Dropdown(choices=llms, value=llms[:1]),
            gr.Dropdown(choices=videos, value=["storyboard"] if "storyboard" in videos else videos[:1]))


def error_text(exc: StageError) -> tuple[str, str]:
    """(title, message) in the creator's words: what to enter for a bad input, the stage that failed otherwise."""
    title = "Check what you entered" if exc.stage == "input" else f"The batch's {exc.stage} step failed"
    return title, " ".join(part for part in (_sentence(exc.message), _sentence(exc.hint)) if part)


def _errors_shown(fn):
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StageError as exc:
            title, message = error_text(exc)
            raise gr.Error(message, title=title, print_exception=False) from None
    wrapped.__name__ = fn.__name__
    return wrapped


@_errors_shown
def run_batch(prompts_text, modes, llms, videos, seeds, out_dir, progress=gr.Progress()):
    def tell(done: int, total: int, message: str) -> None:
        progress((done, max(total, 1)), desc=message or "batch", unit="steps")

    summary = actions.small_batch(prompts_text, modes, llms, videos, seeds, out_dir, progress=tell)
    failures = "".join(f"\n- `{f['id']}` failed at {f['stage']}: {f['error']}" for f in summary["failures"])
    text = (f"**{summary['done']} runs finished now**, {summary['already_done']} were already done, "
            f"{summary['failed']} failed ({summary['given_up']} given up) of {summary['grid']} in `{summary['out']}` "
            f"({summary['seconds']:.0f} s).{failures}")
    return text, out_dir


@_errors_shown
def load_report(out_dir, judges, progress=gr.Progress()):
    progress(0.1, desc="building the report (the second judge trains once, about a minute)")
    markdown, images, report = actions.show_report(out_dir, judges=judges)
    return markdown, images, report


def build_tab() -> None:
    with gr.Tab("Experiments", id="experiments"):
        gr.Markdown("Run a small grid of prompts x modes x LLMs x video models, then read the paper's tables for it. "
                    f"At most {actions.MAX_UI_RUNS} runs here; `python -m popcorn batch` (and `accelerate launch`) "
                    "runs big grids. A folder that holds a batch resumes: finished runs are skipped.")
        with gr.Row():
            prompts = gr.Textbox(label="Prompts: one per line, or type<TAB>category<TAB>query", lines=6,
                                 elem_id="exp-prompts",
                                 placeholder="a cat learns to skateboard\nconcrete\tPets\ta dog surfing at sunset")
            with gr.Column():
                modes = gr.CheckboxGroup([("Basic", "basic"), ("PE", "pe"), ("PE+", "plus")], value=["basic", "pe"],
                                         label="Modes")
                llm = gr.Dropdown([], value=[], multiselect=True, label="LLMs", elem_id="exp-llms")
                video = gr.Dropdown([], value=[], multiselect=True, label="Video models", elem_id="exp-videos")
                seeds = gr.Number(1, precision=0, minimum=1, maximum=4, label="Seeds (versions of each run)")
                folder = gr.Textbox(actions.default_folder(), label="Batch folder (on this server; created if new)",
                                    elem_id="exp-folder")
        start = gr.Button("Run batch", variant="primary")
        status = gr.Markdown()
        with gr.Row():
            report_folder = gr.Textbox(label="Batch folder to report on", scale=4, elem_id="exp-report-folder",
                                       placeholder="the folder of a batch run here or with `python -m popcorn batch`")
            judges = gr.Checkbox(True, label="Honest judging (novelty, second judge)", min_width=220)
            show = gr.Button("Show report", elem_id="exp-show")
        tables = gr.Markdown(elem_id="exp-tables", elem_classes="pc-md-tables")
        plots = gr.Gallery(label="Predicted popularity per LLM", columns=2, height="auto")
        with gr.Accordion("Details (the report as JSON)", open=False):
            raw = gr.JSON(label="Report (JSON)")
        start.click(run_batch, [prompts, modes, llm, video, seeds, folder], [status, report_folder],
                    api_name="experiments_batch").success(
            load_report, [report_folder, judges], [tables, plots, raw], api_name=False)
        show.click(load_report, [report_folder, judges], [tables, plots, raw], api_name="experiments_report")
    ui.page_load(on_load, [llm, video])
