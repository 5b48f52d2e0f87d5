"""One run of F(x): plan (an unreadable answer drawn again with a fresh seed), render, compose, score, run.json;
and the CLI around it."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from popcorn import pipeline
from popcorn.llm import prompts
from popcorn.types import Plan, StageError

try:
    from tests.llm_server import chat_reply, scripted_server  # noqa: F401
except ImportError:  # pragma: no cover - when tests/ is on sys.path directly
    from llm_server import chat_reply, scripted_server  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
GOOD = json.dumps({"reasoning": "hook first", "title": "Midnight noodles in Bangkok",
                   "cover_prompt": "a steaming wok under neon light",
                   "video_prompt": "A vendor tosses noodles in a flaming wok at night; steam curls past red lanterns "
                                   "as the camera pushes in slowly, neon light flickering on wet pavement."})


@pytest.fixture
def scripted_llm(monkeypatch, scripted_server):
    monkeypatch.setenv("POPCORN_OPENAI_BASE_URL", scripted_server.base_url)
    monkeypatch.setenv("POPCORN_OPENAI_MODEL", "scripted-model")
    monkeypatch.setenv("POPCORN_LLM_MAX_TRIES", "1")
    return scripted_server


def test_unreadable_answer_is_drawn_again_with_a_fresh_seed_then_parsed(scripted_llm):
    scripted_llm.play(chat_reply("Sure! Here is a great idea for your video about noodles."), chat_reply(GOOD))
    plan, _ = pipeline.write_plan("street noodles at night", "basic", "openai-compatible", seed=0)
    assert plan.title == "Midnight noodles in Bangkok"
    assert plan.reasoning == "hook first"
    assert len(scripted_llm.requests) == 2
    first, second = (r["json"] for r in scripted_llm.requests)
    assert second["messages"] == first["messages"]  # asked again, not asked to repair its own answer
    assert second["seed"] != first["seed"]


def test_plan_reports_the_answer_growing_and_an_exception_stops_it():
    """The embedded LLM streams: progress hears the answer grow, and raising from progress ends the LLM's answer."""

    class Stop(Exception):
        pass

    heard = []

    def progress(fraction, message):
        heard.append((fraction, message))
        if len(heard) == 2:
            raise Stop()

    with pytest.raises(Stop):
        pipeline.write_plan("street noodles at night", "basic", "smollm2", progress=progress, seed=3)
    assert len(heard) == 2 and all("writing the plan" in m for _, m in heard)
    assert 0 < heard[0][0] <= heard[1][0] <= 0.95
    from popcorn.llm import get_llm

    again = get_llm("smollm2").complete([{"role": "user", "content": "Say hi."}], max_tokens=4)  # free again
    assert again.usage["completion_tokens"] > 0


def test_unreadable_answers_fail_naming_the_plan_stage_and_keep_the_raw_text(scripted_llm):
    scripted_llm.play(chat_reply("no plan here"), chat_reply("nothing either"), chat_reply("still nothing useful"))
    with pytest.raises(StageError) as err:
        pipeline.write_plan("street noodles at night", "basic", "openai-compatible")
    assert err.value.stage == "plan" and "3 attempt(s)" in err.value.message
    assert err.value.raw == "still nothing useful"
    assert len(scripted_llm.requests) == 3


def test_pe_prompt_carries_the_references_and_the_papers_steps(retriever):
    retrieval = retriever.retrieve("Create a video showcasing street food in Bangkok", k=10)
    messages = prompts.pe_messages("Create a video showcasing street food in Bangkok", retrieval)
    user = messages[1]["content"]
    for ref in retrieval.references:
        assert f"| {ref.comments}" in user
    assert "Delicacy" in user
    for step in ("Popular", "Unpopular", "Brainstorm", "Check against the idea", "Check against the trends", "Finalise"):
        assert step in user
    assert "JSON" in messages[0]["content"]  # JSON mode of OpenAI/DeepSeek needs the word


def test_bad_settings_are_refused_before_any_work():
    for settings, fragment in ((pipeline.Settings(query="  "), "empty"),
                               (pipeline.Settings(query="x", mode="fancy"), "mode"),
                               (pipeline.Settings(query="x", candidates=0), "candidates")):
        with pytest.raises(StageError, match=fragment) as err:
            pipeline.make_plans(settings)
        assert err.value.stage == "input"


def test_huge_hostile_query_is_cut_not_rejected():
    text = "<script>alert('x')</script> $query ${title} " * 400
    cleaned = prompts.clean_query(text)
    assert len(cleaned) == prompts.MAX_QUERY_CHARS
    message = prompts.basic_messages(text)[1]["content"]
    assert "<script>" in message and "${title}" in message  # kept as text, never interpreted


def test_render_compose_and_run_json_from_a_plan(tmp_path):
    plan = Plan(title="街头美食 🍜 Bangkok nights", cover_prompt="a wok", mode="basic", llm="test", query="street food",
                video_prompt="A vendor flips noodles in a wok. Steam rises under neon. The camera pushes in slowly.")
    run = pipeline.Run(pipeline.Settings(query="street food", video="storyboard"), plan=plan)
    pipeline.render_run(run, tmp_path, with_score=False)
    data = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert data["plan"]["title"] == plan.title
    assert set(data["timings"]) == {"render", "compose"}
    assert data["video"]["is_preview"] is True
    frames = iio.imread(tmp_path / "video.mp4")
    assert frames.shape[1] > frames.shape[2]  # portrait 9:16
    assert (tmp_path / "cover.png").stat().st_size > 0


@pytest.mark.llm
def test_cli_plan_pe_json_with_the_local_model(tmp_path):
    """The issue's done-condition command, with the real embedded LLM and the real shared data."""
    out = subprocess.run(
        [sys.executable, "-m", "popcorn", "plan", "Create a video showcasing street food in Bangkok", "--mode", "pe",
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=1500,
        env={**os.environ, "POPCORN_HOME": str(tmp_path / "home")})  # the run is stored there
    assert out.returncode == 0, out.stderr[-2000:]
    plan = json.loads(out.stdout)
    assert plan["mode"] == "pe" and plan["llm"] == "local"
    assert 0 < len(plan["title"]) <= 50 and plan["cover_prompt"] and plan["video_prompt"]
    from popcorn.video.budget import budget

    # the default video (the storyboard preview) plans for the tightest text encoder, LTX-Video's 128 tokens
    assert budget("storyboard").tokens == 128 and budget("storyboard").fits(plan["video_prompt"])
    assert plan["matched_categories"][0] == "Delicacy"
    assert len(plan["references"]) == 10
    assert [r["label"] for r in plan["references"]].count("unpopular") == 1
    assert set(plan["references"][0]) == {"video_id", "title", "category", "comments", "label", "similarity"}


@pytest.mark.llm
def test_run_basic_end_to_end_with_the_local_model(tmp_path):
    settings = pipeline.Settings(query="a cat learning to play the piano", mode="basic", llm="local", max_tokens=400)
    stages = []
    run = pipeline.run(settings, tmp_path, progress=lambda stage, f, msg: stages.append(stage))
    assert stages[0] == "plan" and "render" in stages and "compose" in stages and stages[-1] == "score"
    data = json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))
    assert data["plan"]["title"] == run.plan.title and len(run.plan.title) <= 50
    assert set(data["timings"]) >= {"plan", "render", "compose", "score"}
    assert data["score"]["predicted_comments"] >= 0
    assert data["baseline"]  # the human-matched MicroLens video(s)
    assert (tmp_path / "video.mp4").exists()


def test_cli_lists_backends_with_reasons():
    out = subprocess.run([sys.executable, "-m", "popcorn", "llms", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    rows = json.loads(out.stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["local"]["available"] is True
    assert by_name["openai"]["available"] is False and "OPENAI_API_KEY" in by_name["openai"]["reason"]


def test_cli_errors_name_the_stage(tmp_path):
    out = subprocess.run([sys.executable, "-m", "popcorn", "render", "--plan", str(tmp_path / "missing.json"),
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "[input]" in out.stderr and "Traceback" not in out.stderr


def test_cli_score_json_has_the_score_and_the_human_baseline():
    out = subprocess.run([sys.executable, "-m", "popcorn", "score", "--title", "5 yuan Thai street food # food",
                          "--category", "Delicacy", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["category"] == "Delicacy" and data["predicted_comments"] >= 0
    assert abs(data["label"] - math.log2(1 + data["predicted_comments"])) < 0.01
    assert 0 <= data["percentile_category"] <= 100 and data["neighbours"]
    videos = data["human_baseline"]["videos"]
    assert videos and all(isinstance(v["comments"], int) and "predicted_comments" in v for v in videos)


def test_a_pe_plan_prepares_the_llm_while_retrieval_runs_and_a_failed_preparation_is_left_to_the_plan(monkeypatch):
    """The local model's preparation (GGUF assembled, verified, loaded) runs beside retrieval, not after it: on a new
    cache retrieval embeds the corpus, and the two together set how long a first plan takes."""
    import threading

    def stop(stage):  # ends make_plans right after the step under test (a StageError passes _Timer unchanged)
        raise StageError(stage, "stopped by the test")

    prepared = threading.Event()
    threads = []

    class Prepared:
        def __init__(self, fails: bool):
            self.fails = fails

        def warm(self):
            threads.append(threading.current_thread().name)
            prepared.set()
            if self.fails:
                raise StageError("llm", "the GGUF is incomplete")
            return "loaded"

    def retrieve(query, k, router, quick=False, gloss=""):
        assert prepared.wait(10), "the LLM was not being prepared while retrieval ran"
        stop("retrieve")

    monkeypatch.setattr(pipeline, "retrieve", retrieve)
    for fails in (False, True):
        prepared.clear()
        monkeypatch.setattr(pipeline, "get_llm", lambda name=None, fails=fails: Prepared(fails))
        with pytest.raises(StageError, match="stopped by the test"):  # a failed preparation does not stop retrieval
            pipeline.make_plans(pipeline.Settings(query="a cat afraid of cucumbers", mode="pe", llm="local"))
    assert threads == ["popcorn-llm-prepare"] * 2
    # Basic has no retrieval to overlap: nothing is started
    monkeypatch.setattr(pipeline, "write_plan", lambda *a, **k: stop("plan"))
    with pytest.raises(StageError, match="stopped by the test"):
        pipeline.make_plans(pipeline.Settings(query="a cat afraid of cucumbers", mode="basic", llm="local"))
    assert len(threads) == 2
