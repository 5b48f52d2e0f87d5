"""The Experiments page: launch a small batch with progress, and read a batch's report (tables and plots).

`build_tab()` adds one gr.Tab to the Blocks being built; the work is done by popcorn/experiments/actions.py."""

from __future__ import annotations

import gradio as gr

from popcorn.experiments import actions
from popcorn.llm import list_backends
from popcorn.types import StageError
from popcorn.video import list_generators


def _backend_names() -> tuple[list[str], list[str]]:
    return ([r["name"] for r in list_backends() if r["available"]],
            [r["name"] for r in list_generators() if r["available"]])


def _errors_shown(fn):
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StageError as exc:
            raise gr.Error(str(exc), title=f"{exc.stage} failed", print_exception=False) from None
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
    llms, videos = _backend_names()
    with gr.Tab("Experiments"):
        gr.Markdown("Run a small grid of prompts x modes x LLMs x video models, then read the paper's tables for it. "
                    f"At most {actions.MAX_UI_RUNS} runs here; `python -m popcorn batch` (and `accelerate launch`) "
                    "runs big grids. A folder that holds a batch resumes: finished runs are skipped.")
        with gr.Row():
            prompts = gr.Textbox(label="Prompts: one per line, or type<TAB>category<TAB>query", lines=6,
                                 placeholder="a cat learns to skateboard\nconcrete\tPets\ta dog surfing at sunset")
            with gr.Column():
                modes = gr.CheckboxGroup(["basic", "pe"], value=["basic", "pe"], label="Modes")
                llm = gr.Dropdown(llms, value=[llms[0]] if llms else [], multiselect=True, label="LLMs")
                video = gr.Dropdown(videos, value=["storyboard"] if "storyboard" in videos else videos[:1],
                                    multiselect=True, label="Video models")
                seeds = gr.Number(1, precision=0, minimum=1, maximum=4, label="Seeds")
                folder = gr.Textbox(actions.default_folder(), label="Batch folder")
        start = gr.Button("Run batch", variant="primary")
        status = gr.Markdown()
        with gr.Row():
            report_folder = gr.Textbox(label="Report of the batch in folder", scale=4)
            judges = gr.Checkbox(True, label="Honest judging (novelty, second judge)")
            show = gr.Button("Show report")
        tables = gr.Markdown()
        plots = gr.Gallery(label="Predicted popularity per LLM", columns=2, height="auto")
        raw = gr.JSON(label="Report (JSON)")
        start.click(run_batch, [prompts, modes, llm, video, seeds, folder], [status, report_folder],
                    api_name="experiments_batch").success(
            load_report, [report_folder, judges], [tables, plots, raw], api_name=False)
        show.click(load_report, [report_folder, judges], [tables, plots, raw], api_name="experiments_report")
