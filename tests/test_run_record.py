"""One run path: the studio and the command line make the same run record through pipeline.make_plans and
pipeline.render_run, keep it in the same store, and read old records. Real tiny LLM (SmolLM2-135M), real retrieval,
the storyboard video, real SQLite, the CLI as a subprocess."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from popcorn import pipeline, studio
from popcorn.store import Store
from popcorn.study import owner
from popcorn.types import (FORMER_NAMES, OUTSIDE_RUNS, STAGES, STEPS, CategoryScore, Plan, Reference, Retrieval, Run,
                           Settings, StageError)

ROOT = Path(__file__).resolve().parent.parent
SMALL_LLM = "smollm2"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    for name in ("POPCORN_PUBLIC", "SPACE_ID", "POPCORN_BIND_HOST"):  # a studio for this machine only
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "popcorn", *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _same_shape(a: dict, b: dict, where: str = "run") -> None:
    """The same keys, recursively through the record's dicts (values may differ: ids, seconds, the LLM's words)."""
    assert set(a) == set(b), f"{where}: {sorted(set(a) ^ set(b))}"
    for key in a:
        if isinstance(a[key], dict) and isinstance(b[key], dict) and key not in ("usage",):
            _same_shape(a[key], b[key], f"{where}.{key}")


def test_one_set_of_stage_names():
    assert STAGES == ("input",) + STEPS and pipeline.STAGES is STAGES
    assert StageError("llm", "x").stage == "plan" and StageError("corpus", "x").stage == "retrieve"
    named = set()  # every stage the code names when it raises: StageError("<stage>", ... and its subclasses' super()
    for path in (ROOT / "popcorn").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"""(?:StageError|Cancelled|__init__)\(\s*["']([a-z_]+)["']""", text)
        named |= {(stage, path.name) for stage in found}
    assert named, "the pattern found no StageError in the code"
    stray = {(stage, where) for stage, where in named if stage not in (*STAGES, *FORMER_NAMES, *OUTSIDE_RUNS)}
    assert not stray, f"stage names outside types.STAGES: {sorted(stray)}"
    settings = Settings(query="q", mode="pe", candidates=3)
    assert set(pipeline.plan_steps(settings)) <= set(STEPS) and set(pipeline.render_steps()) <= set(STEPS)
    assert pipeline.plan_steps(Settings(query="q", mode="basic")) == ("plan",)


def test_run_from_dict_round_trips_and_reads_old_records():
    retrieval = Retrieval(query="street food", matched_categories=["Delicacy"],
                          category_scores=[CategoryScore("Delicacy", 1.1)],
                          references=[Reference(1, "noodles", "Delicacy", 900, "popular", 0.8)], index="full")
    plan = Plan(title="Noodles at night", cover_prompt="a wok", video_prompt="A wok flames.", mode="pe", llm="smollm2",
                query="street food", matched_categories=["Delicacy"], references=list(retrieval.references))
    run = Run(Settings(query="street food", video="wan-1.3b", seed=4), retrieval=retrieval, plan=plan,
              plan_info={"budget": {"tokens": 512}, "title_whole": True, "attempts": [{"seed": 4}],
                         "usage": {"attempts": 1}},
              candidates=[{"plan": plan.to_dict(), "score": {"predicted_comments": 3}}],
              video={"video": "/x/video.mp4"}, score={"predicted_comments": 3}, baseline={"videos": []},
              timings={"plan": 1.5}, notes=["n"])
    again = Run.from_dict(json.loads(json.dumps(run.to_dict())))
    assert again.to_dict() == run.to_dict()
    assert again.plan_info == run.plan_info and again.settings == run.settings

    old = {"id": "20240101-000000-abcdef", "settings": {"query": "a cat", "mode": "basic", "llm": "local",
                                                        "batch": {"stage": "planned"}},
           "plan": {"title": "Cat", "cover_prompt": "c", "video_prompt": "v"}, "candidates": [], "notes": []}
    read = Run.from_dict(old)
    assert read.id == old["id"] and read.settings.attempts == 3 and read.plan_info == {} and read.retrieval is None
    assert read.to_dict()["plan"]["title"] == "Cat"


def test_a_studio_plan_is_written_for_the_video_model_picked(home):
    out = studio.plan_action("a paper boat race in the rain", "basic", 10, SMALL_LLM, 1, 1, "wan-1.3b",
                             visitor="me")
    record = Store(home / "popcorn.db").get_run(out.run_id)
    assert record["settings"]["video"] == "wan-1.3b" and record["settings"]["attempts"] == 3
    budget = record["plan"]["budget"]
    assert budget["video"] == "wan-1.3b" and budget["tokens"] == 512  # not the storyboard's 128
    assert budget["estimated_tokens"] <= 512
    assert record["plan"]["attempts"] and record["plan"]["usage"]["attempts"] == len(record["plan"]["attempts"])
    assert set(record["timings"]) == {"plan"}


def test_studio_and_cli_runs_are_the_same_record_in_the_same_store(home, tmp_path):
    query, seed = "a hamster runs a tiny marathon", "2"
    planned = studio.plan_action(query, "basic", 10, SMALL_LLM, int(seed), 1, "storyboard", visitor="me")
    rendered = studio.render_action(planned.run_id, planned.title, planned.cover_prompt, planned.video_prompt,
                                    "storyboard", int(seed), visitor="me")
    store = Store(home / "popcorn.db")
    from_studio = json.loads((home / "runs" / rendered.run_id / "run.json").read_text(encoding="utf-8"))

    # the README's lines: plan --json to a file, render it (the same stored run), and run without --out
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(_cli("plan", query, "--mode", "basic", "--llm", SMALL_LLM, "--seed", seed, "--json").stdout)
    plan_json = json.loads(plan_file.read_text())
    assert {"budget", "attempts", "usage", "run_id"} <= set(plan_json)
    assert store.get_run(plan_json["run_id"])["status"] == "planned"
    done = json.loads(_cli("render", "--plan", str(plan_file), "--video", "storyboard", "--seed", seed,
                           "--out", str(tmp_path / "copy")).stdout)
    assert done["run_id"] == plan_json["run_id"]  # the render continued the stored plan
    from_cli = json.loads((home / "runs" / done["run_id"] / "run.json").read_text(encoding="utf-8"))
    assert (tmp_path / "copy" / "video.mp4").is_file() and (tmp_path / "copy" / "run.json").is_file()

    _same_shape(from_studio, from_cli)
    assert from_studio["settings"] == from_cli["settings"]  # the same settings, whichever door they came through
    assert {"budget", "attempts", "usage"} <= set(from_studio["plan"])
    assert set(from_studio["timings"]) == set(from_cli["timings"]) == {"plan", "render", "compose", "score"}
    for record in (from_studio, from_cli):
        assert store.get_run(record["id"])["status"] == "done"

    pe = json.loads(_cli("run", query, "--mode", "pe", "--llm", SMALL_LLM, "--video", "storyboard",
                         "--seed", seed).stdout)
    from_run = store.get_run(pe["run_id"])
    assert from_run["status"] == "done" and from_run["visitor"] == studio.runs.TERMINAL
    pe_only = ("retrieval", "timings")  # PE adds the references and the retrieve step's time
    _same_shape({k: from_studio[k] for k in from_studio if k not in pe_only},
                {k: from_run[k] for k in from_studio if k not in pe_only})
    assert from_run["retrieval"]["references"] and set(from_run["timings"]) == set(STEPS)

    # the studio's History on this machine shows the command line's runs, and opens them
    history = studio.history("me")
    assert {pe["run_id"], done["run_id"], rendered.run_id} <= set(history["run"])
    assert studio.load_run(pe["run_id"], "me").render is not None
    # and a study can pair them: the same query, PE (command line) vs Basic
    pairs = owner.collect_pairs("runs", factor="mode", a="pe", b="basic")
    assert pe["run_id"] in {p["a"]["run_id"] for p in pairs}


def test_a_public_studio_shows_command_line_runs_to_its_owner_only(home, monkeypatch):
    store = studio.get_store()
    store.save_run({"id": "cli-run", "settings": {"query": "q"}, "plan": {"title": "T", "cover_prompt": "c",
                                                                          "video_prompt": "v"}},
                   status="planned", visitor=studio.runs.TERMINAL)
    assert "cli-run" in set(studio.history("me")["run"])
    monkeypatch.setenv("POPCORN_PUBLIC", "1")
    assert studio.history("me").empty
    with pytest.raises(studio.StudioError, match="in your history"):
        studio.load_run("cli-run", "me")


def test_old_run_records_still_open_and_render(home):
    """A run stored before plans recorded their budget, attempts and usage (and settings their attempts)."""
    store = studio.get_store()
    store.save_run({"id": "old-run", "settings": {"query": "a fox in the snow", "mode": "basic", "llm": "local",
                                                  "video": "storyboard", "k": 10, "seed": 0},
                    "plan": {"title": "Fox in the snow", "cover_prompt": "a fox", "mode": "basic",
                             "video_prompt": "A red fox leaps into deep snow and comes up with snow on its nose."},
                    "timings": {"plan": 12.0}}, status="planned", visitor="me")
    assert studio.history("me").iloc[0]["run"] == "old-run"
    loaded = studio.load_run("old-run", "me")
    assert loaded.plan.title == "Fox in the snow" and loaded.render is None
    out = studio.render_action("old-run", loaded.plan.title, loaded.plan.cover_prompt, loaded.plan.video_prompt,
                               "storyboard", 0, visitor="me")
    record = store.get_run("old-run")
    assert out.run_id == "old-run" and record["status"] == "done", record["error"]
    assert set(record["timings"]) == {"plan", "render", "compose", "score"}
    assert record["settings"]["attempts"] == 3  # the default filled in
