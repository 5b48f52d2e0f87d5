"""The studio's work as plain functions (no gradio): the page modules in popcorn/ui/ lay out widgets and call these.

    actions.py   plan_action, render_action, score_action, load_run   (the buttons)
    slots.py     the plan step and render + compose (the pipeline's), as functions that may run in a ZeroGPU worker
    runs.py      the store (shared with the command line), run ids, keeping a run, a visitor's history, picking a
                 candidate, Space storage defaults
    backends.py  the LLM / video pickers: enabled backends, each usable or labelled with why not
    progress.py  progress by stage name; Cancel (a flag that crosses into a GPU worker)
    views.py     tables, markdown and the popularity card
    errors.py    StudioError: "Stage <stage> failed: <message>. <Hint>."

Values in and out are plain (str, int, dict, pandas DataFrame). Long actions take `progress`, any callable
`progress(fraction, desc=...)` (a gr.Progress fits), and report each pipeline stage by name. Every failure becomes a
StudioError -- never a traceback (that goes to the log). Every run is kept in the SQLite store (popcorn/store.py)
with its files under <home>/runs/<id>/ and the visitor who made it; visitors get copies (popcorn/serve/serving.py).
"""

from popcorn.llm.prompts import EXAMPLES
from popcorn.studio.actions import (LoadedRun, PlanOutput, RenderOutput, ScoreOutput, empty_render, load_run,
                                    plan_action, render_action, score_action)
from popcorn.studio.backends import backend_choices, backend_info
from popcorn.studio.errors import Cancelled, StudioError, user_message
from popcorn.studio.progress import StageProgress, cancel, cancellable
from popcorn.studio.runs import apply_space_defaults, get_store, history, new_run_id, pick_candidate, visible_run
from popcorn.studio.views import (CANDIDATE_COLUMNS, HISTORY_COLUMNS, NEIGHBOUR_COLUMNS, REFERENCE_COLUMNS,
                                  candidates_table, chart_frame, neighbours_table, popularity_card, references_table,
                                  why_markdown)

MODE_CHOICES = [("PE (with MicroLens references)", "pe"), ("PE+ (references, then four titles ranked by the predictor)", "plus"),
                ("Basic (the idea alone)", "basic")]
K_CHOICES = [10, 50, 100]
MAX_CANDIDATES = 8


__all__ = [
    "CANDIDATE_COLUMNS", "EXAMPLES", "HISTORY_COLUMNS", "K_CHOICES", "MAX_CANDIDATES", "MODE_CHOICES",
    "NEIGHBOUR_COLUMNS", "REFERENCE_COLUMNS", "Cancelled", "LoadedRun", "PlanOutput", "RenderOutput", "ScoreOutput",
    "StageProgress", "StudioError", "apply_space_defaults", "backend_choices", "backend_info", "cancel", "cancellable",
    "candidates_table", "chart_frame", "empty_render", "get_store", "history", "load_run", "new_run_id",
    "neighbours_table", "pick_candidate", "plan_action", "popularity_card", "references_table", "render_action",
    "score_action", "user_message", "visible_run", "why_markdown",
]
