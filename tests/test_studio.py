"""The studio's functions, without a browser: real retrieval, real (tiny or embedded) LLMs, storyboard, real store."""

import json
import re
from pathlib import Path

import pytest

from popcorn import studio
from popcorn.store import Store
from popcorn.studio.views import plain_markdown
from popcorn.types import StageError


def plain_text_of(markdown: str) -> str:
    """What a backslash-escaped Markdown line reads as."""
    return re.sub(r"\\(.)", r"\1", markdown)

try:
    from tests.llm_server import chat_reply, scripted_server  # noqa: F401
except ImportError:
    from llm_server import chat_reply, scripted_server  # noqa: F401

SMALL_LLM = "smollm2"  # SmolLM2-135M: a real model, fast enough for every-commit tests


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Recorder:
    """A gr.Progress stand-in: records every (fraction, desc)."""

    def __init__(self):
        self.calls = []

    def __call__(self, fraction, desc=None):
        self.calls.append((fraction, desc))


# ------------------------------------------------------------------------------------------------ messages, progress


def test_user_message_names_stage_message_and_hint():
    exc = StageError("render", "video model 'ltx' cannot run here: no CUDA GPU.", "pick another video model")
    assert studio.user_message(exc) == ("Stage render failed: video model 'ltx' cannot run here: no CUDA GPU. "
                                        "Pick another video model.")
    assert studio.user_message(StageError("plan", "bad")) == "Stage plan failed: bad."


def test_stage_progress_spreads_stages_and_names_them():
    sink = Recorder()
    p = studio.StageProgress(sink, ("retrieve", "plan"), first_use={"plan": "first use: loading the LLM local"})
    p("retrieve", 0.0, "retrieve...")
    p("retrieve", 1.0, "retrieve done")
    p("plan", 0.5, "plan 2 of 4")
    p("plan", 7.0, "plan done")  # clamped
    assert [f for f, _ in sink.calls] == [0.0, 0.5, 0.75, 1.0]
    assert sink.calls[0][1] == "retrieve: retrieve..."
    assert sink.calls[2][1] == "plan: plan 2 of 4 (first use: loading the LLM local)"
    assert sink.calls[3][1] == "plan: plan done"  # the first-use note goes once the stage is done


def test_cancel_stops_at_the_next_report():
    import threading

    event = threading.Event()
    p = studio.StageProgress(None, ("render",), event)
    p("render", 0.1, "step 1")
    event.set()
    with pytest.raises(studio.Cancelled) as info:
        p("render", 0.2, "step 2")
    assert info.value.stage == "render"
    assert studio.cancel("no-such-session") == "Nothing to cancel."


def test_cancel_reaches_every_running_action_of_the_session_and_forgets_finished_ones():
    with studio.cancellable("tab") as planning, studio.cancellable("tab") as rendering:
        assert studio.cancel("tab").startswith("Cancelling")
        assert planning.is_set() and rendering.is_set()
    assert studio.cancel("tab") == "Nothing to cancel."  # both ended: nothing left to cancel


# ------------------------------------------------------------------------------------------------ backends, tables


def test_backend_choices_offer_every_backend_and_say_why_not(monkeypatch):
    from popcorn.llm import list_backends
    from popcorn.video import list_generators

    choices = studio.backend_choices()
    assert [v for _, v in choices["llm"]] == [r["name"] for r in list_backends()]
    assert [v for _, v in choices["video"]] == [r["name"] for r in list_generators()]
    labels = dict((v, label) for label, v in choices["llm"])
    assert labels["local"] == "local"
    assert labels["openai"].startswith("openai (unavailable: ") and "OPENAI_API_KEY" in labels["openai"]
    assert choices["llm_default"] == "local" and choices["video_default"] == "storyboard"
    assert "cannot run on this studio" in studio.backend_info("video", "ltx")
    # the video model's prompt budget is shown where it is picked, in words; its encoder's tokens behind the fold
    ltx = plain_text_of(studio.backend_info("video", "ltx"))
    assert "video prompt of 25 to ~45 words for ltx" in ltx.split("<details>")[0]
    assert "ltx: its text encoder reads 128 tokens" in ltx.split("<details>")[1]
    assert "reads 512 tokens" in studio.backend_info("video", "wan-1.3b")
    assert studio.backend_info("llm", "local").startswith("✅")
    typed = studio.backend_info("llm", "local:/nowhere/model.gguf")  # a name typed into the box: off by default
    assert plain_text_of(typed).startswith("⚠️ custom LLM backends like 'local:/nowhere/model.gguf' are switched "
                                           "off")
    monkeypatch.setenv("POPCORN_ALLOW_CUSTOM_BACKENDS", "1")  # the owner allows typed names
    typed = studio.backend_info("llm", "local:/nowhere/model.gguf")
    assert "cannot run on this studio" in typed and "/nowhere/model.gguf" in plain_text_of(typed)
    unknown = studio.backend_info("video", "no-such-model")
    assert plain_text_of(unknown).startswith("⚠️ unknown backend no-such-model")
    assert not re.search(r"(?<!\\)<", studio.backend_info("llm", "<img src=//evil.example/x>"))  # stays text


def test_references_table_and_why_from_a_retrieval(retriever):
    retrieval = retriever.retrieve("a golden retriever puppy sees the sea for the first time", 10).to_dict()
    table = studio.references_table(retrieval)
    assert list(table.columns) == studio.REFERENCE_COLUMNS
    assert len(table) == 10
    assert table["label"].tolist().count("popular") == 9 and table["label"].tolist().count("unpopular") == 1
    assert table["comments"].dtype.kind == "i"
    why = studio.why_markdown(retrieval, ["the query was cut to 2000 characters"])
    assert "**Category:** " + plain_markdown(retrieval["matched_categories"][0]) in why
    assert "9 popular, 1 unpopular" in why and "the query was cut" in why


def test_card_escapes_html_and_shows_both_sides():
    score = {"predicted_comments": 1234.4, "percentile_overall": 87.4, "percentile_category": 91.0, "neighbours": []}
    baseline = {"query": "my dog", "videos": [{"title": "<script>alert(1)</script> my dog", "category": "Animal",
                                               "comments": 56, "predicted_comments": 40.2}]}
    card = studio.popularity_card(score, baseline, "Animal")
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert "1,234" in card and "87th percentile of MicroLens" in card and "91st percentile in Animal" in card
    assert "<b>56</b> actual" in card and "<b>40</b> predicted" in card
    chart = studio.chart_frame(score, baseline)
    assert chart.values.tolist() == [["Your video", 1234, "predicted"], ["Human baseline", 40, "predicted"],
                                     ["Human baseline", 56, "actual"]]
    assert card.count("class='pc-bar-row'") == 3
    widths = [int(w) for w in re.findall(r"width:(\d+)%", card)]
    assert widths[0] == 100 and widths[0] > widths[2] > widths[1]  # log scale: 1234 > 56 > 40
    assert "Render a plan" in studio.popularity_card(None, None)


# ------------------------------------------------------------------------------------------------ input errors


@pytest.mark.parametrize("query", ["", "   \n\t  "])
def test_plan_refuses_an_empty_query(home, query):
    with pytest.raises(studio.StudioError) as info:
        studio.plan_action(query, "basic", 10, SMALL_LLM)
    assert str(info.value).startswith("Stage input failed: the query is empty.")


def test_plan_with_an_unusable_llm_says_why_and_keeps_the_run(home):
    with pytest.raises(studio.StudioError) as info:
        studio.plan_action("a cat on a skateboard", "basic", 10, "openai", 0, 1)
    message = str(info.value)
    assert message.startswith("Stage plan failed: LLM 'openai' cannot run here: ") and "OPENAI_API_KEY" in message
    assert "Traceback" not in message
    runs = Store(home / "popcorn.db").list_runs()
    assert runs[0]["status"] == "failed" and runs[0]["error"] == message
    assert runs[0]["query"] == "a cat on a skateboard"


def test_plan_with_an_unknown_llm_names_the_stage(home):
    with pytest.raises(studio.StudioError) as info:
        studio.plan_action("a cat", "basic", 10, "no-such-model")
    assert str(info.value).startswith("Stage plan failed: unknown LLM backend 'no-such-model'")


def test_bad_numbers_are_an_input_error(home):
    with pytest.raises(studio.StudioError) as info:
        studio.plan_action("a cat", "basic", "ten", SMALL_LLM)
    assert str(info.value).startswith("Stage input failed:")


def test_cancel_during_retrieve_marks_the_run_cancelled(home, retriever):
    key = "session-under-test"

    def sink(fraction, desc=None):
        studio.cancel(key)  # the user presses Cancel as soon as the first stage starts

    with pytest.raises(studio.StudioError) as info:
        studio.plan_action("a cat on a skateboard", "pe", 10, SMALL_LLM, progress=sink, cancel_key=key)
    assert str(info.value).startswith("Cancelled during stage retrieve.")
    assert Store(home / "popcorn.db").list_runs()[0]["status"] == "cancelled"


def test_cancel_while_the_llm_writes_stops_the_answer(home, retriever):
    """Cancel reaches into the LLM: the answer stops growing at the next report (twice a second), no plan is made."""
    key = "session-writing"
    writing = []

    def sink(fraction, desc=None):
        if desc and "writing the plan" in desc:
            writing.append(desc)
            studio.cancel(key)

    with pytest.raises(studio.StudioError) as info:
        studio.plan_action("a cat on a skateboard", "basic", 10, SMALL_LLM, progress=sink, cancel_key=key)
    assert str(info.value).startswith("Cancelled during stage plan.")
    # the answer stopped: the report after the Cancel raised inside the LLM's stream (the relay polls every 0.25 s and
    # the LLM reports every 0.5 s, so at most the one report already written may still be shown)
    assert 1 <= len(writing) <= 2
    record = Store(home / "popcorn.db").list_runs()[0]
    assert record["status"] == "cancelled"


# ------------------------------------------------------------------------------------------------ plan (tiny LLM)


def test_plan_basic_is_stored_and_reloads(home):
    sink = Recorder()
    out = studio.plan_action("street basketball trick shot at sunset", "basic", 10, SMALL_LLM, 3, 1, progress=sink,
                             visitor="tester")
    assert out.title and len(out.title) <= 50
    assert out.video_prompt
    assert out.references.empty and list(out.references.columns) == studio.REFERENCE_COLUMNS
    assert "Basic mode" in out.why
    assert sink.calls[-1] == (1.0, "plan: plan done")
    assert all(desc.startswith("plan: ") for _, desc in sink.calls)

    record = Store(home / "popcorn.db").get_run(out.run_id)
    assert record["status"] == "planned"
    assert record["settings"]["seed"] == 3 and record["settings"]["llm"] == SMALL_LLM
    assert record["plan"]["title"] == out.title
    assert json.loads((home / "runs" / out.run_id / "run.json").read_text())["plan"]["title"] == out.title

    assert studio.history("someone").empty
    hist = studio.history("tester")
    assert hist.iloc[0]["run"] == out.run_id and hist.iloc[0]["status"] == "planned"
    loaded = studio.load_run(out.run_id, "tester")
    assert loaded.plan.title == out.title and loaded.render is None
    assert loaded.query == "street basketball trick shot at sunset"


def test_plan_with_hostile_non_english_text(home):
    query = "猫咪第一次看到雪 🐱❄️ \"quotes\" '; DROP TABLE runs;-- <b>bold</b>"
    out = studio.plan_action(query, "basic", 10, SMALL_LLM, 0, 1, visitor="tester")
    assert out.title and out.video_prompt
    record = Store(home / "popcorn.db").get_run(out.run_id)
    assert record["query"] == query and record["status"] == "planned"
    assert studio.history("tester").iloc[0]["query"] == query


def test_plan_pe_with_a_huge_query_through_a_paid_api_stand_in(home, monkeypatch, scripted_server):
    """DeepSeek cannot be reached here: a scripted HTTP server answers in its place (reasoning channel included)."""
    monkeypatch.setenv("DEEPSEEK_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-SECRET-0123456789")
    plan_json = ('{"title": "First snow, first zoomies", "cover_prompt": "a kitten in fresh snow", '
                 '"video_prompt": "A kitten steps into fresh snow for the first time, sniffs it, then leaps and rolls as the camera follows low at its eye level in soft morning light."}')
    scripted_server.play(chat_reply('{"english": "a kitten sees snow for the first time"}', model="deepseek-reasoner"),
                         chat_reply(plan_json, reasoning="Popular cat clips show a <first> reaction.",
                                    model="deepseek-reasoner"))  # the idea's English gloss first (PE, Chinese)
    query = "猫咪第一次看到雪 " + "雪" * 3000
    out = studio.plan_action(query, "pe", 10, "deepseek-reasoner", 0, 1)
    assert (out.title, out.cover_prompt) == ("First snow, first zoomies", "a kitten in fresh snow")
    assert len(out.references) == 10
    assert "the query was cut to 2000 characters" in out.why
    assert "Popular cat clips show a \\<first\\> reaction\\." in out.reasoning  # model text stays text
    assert "a kitten sees snow for the first time" in out.why  # routed and retrieved on the gloss
    sent = scripted_server.requests[1]["json"]["messages"][-1]["content"]
    assert query[:2000] in sent and query[:2001] not in sent
    from popcorn.llm.prompts import MAX_REFERENCE_TITLE_CHARS
    from popcorn.llm.trim import shorten_title

    shown = shorten_title(out.references["title"].iloc[0], MAX_REFERENCE_TITLE_CHARS)  # as the prompt lists it
    assert shown and shown in sent  # the references shown are the ones the LLM saw
    record = Store(home / "popcorn.db").get_run(out.run_id)
    assert record["query"] == query  # the history keeps the idea as typed
    assert "SECRET" not in json.dumps(record)


# ------------------------------------------------------------------------------------------------ render (storyboard)


def test_render_a_plan_of_your_own_then_score(home):
    sink = Recorder()
    out = studio.render_action("", "Puppy meets the sea 🐶🌊", "a golden retriever puppy on a beach at dawn",
                               "A golden retriever puppy runs to the water. A small wave touches its paws. It jumps "
                               "back and barks, tail wagging.", "storyboard", 1, progress=sink)
    assert Path(out.video).name == "video.mp4" and Path(out.video).stat().st_size > 10_000
    assert Path(out.cover).name == "cover.png" and Path(out.cover).exists()
    assert [Path(f).name for f in out.files] == ["run.json", "video.mp4"]
    assert not Path(out.video).is_relative_to(home)  # the visitor gets copies, never a path into POPCORN_HOME
    assert "Storyboard preview" in out.notes
    stages = [desc.split(":")[0] for _, desc in sink.calls]
    assert stages[0] == "render" and "compose" in stages and stages[-1] == "score"

    record = Store(home / "popcorn.db").get_run(out.run_id)
    assert record["status"] == "done", record["error"]
    assert record["score"]["predicted_comments"] >= 0
    assert set(record["artifacts"]) >= {"video", "cover", "run_json"}
    assert f"<b>{record['baseline']['videos'][0]['comments']:,}</b> actual" in out.card  # the matched video's count
    assert out.details["score"] == record["score"] and out.details["baseline"]["videos"]
    assert "Your video · predicted" in out.card and "Comments (log scale)" in out.card
    assert list(out.neighbours.columns) == studio.NEIGHBOUR_COLUMNS and len(out.neighbours) > 0


def test_render_after_plan_reuses_the_run_and_a_second_render_forks(home):
    planned = studio.plan_action("unboxing a tiny retro handheld game console", "basic", 10, SMALL_LLM, visitor="me")
    with pytest.raises(studio.StudioError, match=r"^Stage input failed: no run .* in your history"):
        studio.render_action(planned.run_id, planned.title, planned.cover_prompt, planned.video_prompt,
                             "storyboard", 0, visitor="someone else")
    first = studio.render_action(planned.run_id, planned.title, planned.cover_prompt, planned.video_prompt,
                                 "storyboard", 0, visitor="me")
    assert first.run_id == planned.run_id
    edited_title = "x" * 70
    second = studio.render_action(planned.run_id, edited_title, planned.cover_prompt, planned.video_prompt,
                                  "storyboard", 0, visitor="me")
    assert second.run_id != planned.run_id
    store = Store(home / "popcorn.db")
    assert store.get_run(second.run_id)["plan"]["title"] == "x" * 50
    assert "the title was cut to 50 characters" in second.notes
    assert store.get_run(planned.run_id)["plan"]["title"] == planned.title  # the first render is kept as it was
    assert {r["id"] for r in store.list_runs()} == {planned.run_id, second.run_id}


def test_render_input_errors(home):
    with pytest.raises(studio.StudioError, match=r"^Stage input failed: the title is empty"):
        studio.render_action("", "  ", "cover", "a scene", "storyboard")
    with pytest.raises(studio.StudioError, match=r"^Stage input failed: the video prompt is empty"):
        studio.render_action("", "A title", "cover", "", "storyboard")
    with pytest.raises(studio.StudioError, match=r"^Stage input failed: no run 'nope' in your history"):
        studio.render_action("nope", "A title", "cover", "a scene", "storyboard")
    with pytest.raises(studio.StudioError, match=r"^Stage render failed: video model 'ltx' cannot run here"):
        studio.render_action("", "A title", "cover", "a scene", "ltx")


def test_candidates_are_ranked_by_predicted_popularity(home):
    sink = Recorder()
    out = studio.plan_action("15-second garlic butter noodles for a late-night snack", "basic", 10, SMALL_LLM, 5, 2,
                             progress=sink, visitor="me")
    table = out.candidates
    assert len(table) == 2 and table["rank"].tolist() == [1, 2]
    assert table["predicted comments"].iloc[0] >= table["predicted comments"].iloc[1]
    assert out.title == table["title"].iloc[0]  # the best candidate fills the plan
    assert studio.pick_candidate(out.run_id, 1, "me")[0] == table["title"].iloc[1]
    assert sink.calls[-1] == (1.0, "score: score done")
    assert any(desc.startswith("plan: plan 2 of 2") for _, desc in sink.calls)


def test_pick_candidate_reads_the_stored_ranking(home):
    store = studio.get_store()
    plans = [{"title": f"plan {i}", "cover_prompt": f"cover {i}", "video_prompt": f"video {i}"} for i in range(3)]
    store.save_run({"id": "run-with-candidates", "settings": {"query": "q"}, "plan": plans[0],
                    "candidates": [{"plan": p, "score": {"predicted_comments": 10 - i}} for i, p in enumerate(plans)]},
                   visitor="me")
    assert studio.pick_candidate("run-with-candidates", 2, "me") == ("plan 2", "cover 2", "video 2")
    with pytest.raises(studio.StudioError, match="in your history"):
        studio.pick_candidate("run-with-candidates", 2, "someone else")
    assert studio.candidates_table(store.get_run("run-with-candidates")["candidates"])["rank"].tolist() == [1, 2, 3]
    with pytest.raises(studio.StudioError):
        studio.pick_candidate("run-with-candidates", 3, "me")


def test_space_defaults_use_persistent_storage(tmp_path):
    env = {"SPACE_ID": "someone/popcorn", "POPCORN_SPACE_STORAGE": str(tmp_path)}
    assert studio.apply_space_defaults(env) == {"POPCORN_HOME": str(tmp_path / "popcorn"),
                                                "POPCORN_CACHE_DIR": str(tmp_path / "popcorn-cache")}
    env = {"SPACE_ID": "x", "POPCORN_SPACE_STORAGE": str(tmp_path), "POPCORN_HOME": "/mine"}
    assert studio.apply_space_defaults(env) == {"POPCORN_CACHE_DIR": str(tmp_path / "popcorn-cache")}
    assert env["POPCORN_HOME"] == "/mine"
    assert studio.apply_space_defaults({"POPCORN_SPACE_STORAGE": str(tmp_path)}) == {}  # not on a Space
