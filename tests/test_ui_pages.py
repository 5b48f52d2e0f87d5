"""The pages' shared glue (popcorn/ui/__init__.py) on the real Blocks the app builds: the studio's panels are read
by name, History fills them field by field, and a page that cannot be imported stops the build."""

from __future__ import annotations

import pandas as pd
import pytest

gr = pytest.importorskip("gradio")

from popcorn import studio, ui  # noqa: E402
from popcorn.ui import app  # noqa: E402


@pytest.fixture(scope="module")
def built():
    demo = app.build()
    return demo, ui.shared["studio"]


def test_the_studio_panels_name_the_components_its_events_fill(built):
    demo, page = built
    assert isinstance(page, ui.StudioPanels)
    assert ui.PlanPanel._fields == studio.PlanOutput._fields
    assert ui.RenderPanel._fields == studio.RenderOutput._fields
    assert page.plan.run_id is page.render.run_id  # one run-id box, in both panels
    elem_ids = {name: getattr(component, "elem_id", None) for name, component in page.plan._asdict().items()}
    assert elem_ids["title"] == "title" and elem_ids["video_prompt"] == "video-prompt" and elem_ids["why"] == "why"
    assert page.render.video.elem_id == "video" and page.render.notes.elem_id == "render-notes"
    plan_event = next(d for d in demo.fns.values() if d.api_name == "plan")
    render_event = next(d for d in demo.fns.values() if d.api_name == "render")
    assert [c._id for c in plan_event.outputs] == [c._id for c in page.plan]
    assert [c._id for c in render_event.outputs] == [c._id for c in page.render]


def test_a_record_fills_the_components_of_its_field_names(built):
    _, page = built
    rendered = studio.empty_render("20261207-abc", "the render failed: out of memory")
    filled = ui.fill(page.render, rendered)
    assert filled[page.render.notes] == rendered.notes and filled[page.render.run_id] == "20261207-abc"
    assert set(filled) == set(page.render)
    plan = studio.PlanOutput("A title", "a cover", "a video prompt", pd.DataFrame(), "why not", pd.DataFrame(),
                             "20261207-abc", "")
    filled = ui.fill(page.plan, plan)
    assert filled[page.plan.title] == "A title" and filled[page.plan.reasoning] == "why not"
    # only the names the panel has: a record with other fields fills nothing else
    assert ui.fill(page.plan, rendered) == {page.plan.run_id: "20261207-abc"}


def test_opening_a_run_from_history_fills_every_studio_panel_and_shows_the_studio(built):
    demo, page = built
    opened = [d for d in demo.fns.values() if getattr(d.fn, "__name__", "") == "on_open_run"]
    assert len(opened) == 1
    outputs = {c._id for c in opened[0].outputs}
    wanted = {page.query._id, *(c._id for c in page.plan), *(c._id for c in page.render), ui.shared["tabs"]._id}
    assert outputs == wanted and len(opened[0].outputs) == len(wanted)  # each component once


def test_a_page_that_cannot_be_imported_stops_the_build(monkeypatch):
    with pytest.raises(ImportError, match="popcorn.ui.no_such_page cannot be imported"):
        ui.load_page("popcorn.ui.no_such_page")
    monkeypatch.setattr(app, "PAGES", [*app.PAGES, "popcorn.ui.no_such_page"])
    with pytest.raises(ImportError, match="no_such_page"):
        app.build()
