"""What the studio's Experiments page does, as plain functions (popcorn/ui/experiments.py only wires them).

    small_batch(prompts_text, modes, llms, videos, seeds, out_dir, progress) -> summary dict
    show_report(out_dir, judges, progress) -> (markdown, [png paths], report dict)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from popcorn import config
from popcorn.experiments.grid import build_grid, split_names
from popcorn.experiments.prompts_file import dedupe, parse_line
from popcorn.experiments.runner import run_batch
from popcorn.experiments.shard import Shard
from popcorn.types import StageError

MAX_UI_RUNS = 24  # the studio runs small batches; the CLI (and accelerate) runs the big ones


def default_folder() -> str:
    return str(config.home_dir() / "experiments" / time.strftime("%Y%m%d-%H%M%S"))


def small_batch(prompts_text: str, modes: list[str], llms: list[str], videos: list[str], seeds: int,
                out_dir: str, progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Run a small grid in this process (resumable like the CLI's: the same folder skips what is done)."""
    found = [p for i, line in enumerate(str(prompts_text or "").splitlines(), 1)
             if (p := parse_line(line, f"line {i}")) is not None]
    prompts = dedupe(found, "the prompt box")
    if not str(out_dir or "").strip():
        raise StageError("input", "no batch folder given", "type a folder for the batch's runs")
    specs = build_grid(prompts, split_names(list(modes or []), "modes"), split_names(list(llms or []), "llms"),
                       split_names(list(videos or []), "videos"), list(range(max(1, int(seeds or 1)))))
    if len(specs) > MAX_UI_RUNS:
        raise StageError("input", f"{len(specs)} runs is more than the studio runs at once ({MAX_UI_RUNS})",
                         "use fewer prompts, models or seeds, or `python -m popcorn batch` for big grids")
    result = run_batch(specs, Path(out_dir), progress=progress, shard=Shard(0, 1), show_bar=False)
    return {"out": str(out_dir), "grid": len(specs), **result.to_dict()}


def show_report(out_dir: str, judges: bool = True,
                progress: Callable[[str], None] | None = None) -> tuple[str, list[str], dict]:
    """The batch's report: its Markdown (tables; plots shown apart), the histogram PNGs, and the JSON object."""
    from popcorn.experiments.report import to_markdown, write_report

    if not str(out_dir or "").strip():
        raise StageError("input", "no batch folder given", "type the folder of a batch")
    report, _ = write_report(out_dir, judges=judges, progress=progress)
    return to_markdown(report), list(report["histograms"].values()), report
