"""The Experiments page: its plain actions (popcorn/experiments/actions.py) and the tab it builds."""

import pytest

from popcorn.experiments import actions
from popcorn.types import StageError


def test_small_batch_refuses_big_or_empty_grids(tmp_path):
    many = "\n".join(f"idea number {i}" for i in range(13))
    with pytest.raises(StageError, match="more than the studio runs at once") as err:
        actions.small_batch(many, ["basic", "pe"], ["local"], ["storyboard"], 1, str(tmp_path))
    assert "python -m popcorn batch" in err.value.hint
    with pytest.raises(StageError, match="holds no prompt"):
        actions.small_batch("\n# only a comment\n", ["basic"], ["local"], ["storyboard"], 1, str(tmp_path))
    with pytest.raises(StageError, match="no llms given"):
        actions.small_batch("an idea", ["basic"], [], ["storyboard"], 1, str(tmp_path))
    with pytest.raises(StageError, match="no batch folder"):
        actions.small_batch("an idea", ["basic"], ["local"], ["storyboard"], 1, " ")
    assert not list(tmp_path.iterdir())  # nothing was started


def test_small_batch_reports_progress_and_failures(tmp_path):
    heard = []
    summary = actions.small_batch("concrete\tPets\ta dog surfing", ["basic"], ["no-such-llm"], ["storyboard"], 1,
                                  str(tmp_path), progress=lambda done, total, msg: heard.append((done, total)))
    assert (summary["grid"], summary["failed"], summary["done"]) == (1, 1, 0)
    assert summary["failures"][0]["stage"] == "plan"
    assert heard[-1] == (3, 3)  # the failed run's render and score counted as skipped: the bar ends full


def test_show_report_of_a_folder_without_a_batch(tmp_path):
    with pytest.raises(StageError, match="holds no batch"):
        actions.show_report(str(tmp_path))


def test_the_tab_builds():
    gr = pytest.importorskip("gradio")
    from popcorn.ui import experiments

    with gr.Blocks() as demo:
        experiments.build_tab()
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert {"experiments_batch", "experiments_report"} <= names
