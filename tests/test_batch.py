"""Batch experiments: prompt files, the grid's keys, resume and skip, retries up to a limit, failed plans kept with
their raw answer, an interrupted batch (a killed process), and crash leftovers replaced."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popcorn.experiments import grid, prompts_file, runner
from popcorn.experiments.shard import Shard
from popcorn.store import Store
from popcorn.types import StageError

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a cat learns to skateboard in the park", "street food night market tour",
           "a grandmother reacts to modern music", "morning routine of a busy nurse"]


def test_prompt_file_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("# comment\n\na cat on a skateboard\nconcrete\tPets\ta dog surfing\nabstract\t\tthe feeling of "
                    "home\na cat on a skateboard\n", encoding="utf-8")
    found = prompts_file.read_prompts_file(path)
    assert [(p.type, p.category, p.query) for p in found] == [
        ("", "", "a cat on a skateboard"), ("concrete", "Pets", "a dog surfing"), ("abstract", "", "the feeling of home")]
    path.write_text("weird\tPets\ta dog\n", encoding="utf-8")
    with pytest.raises(StageError, match="neither abstract nor concrete") as err:
        prompts_file.read_prompts_file(path)
    assert err.value.stage == "input" and "p.txt:1" in err.value.message
    path.write_text("concrete\ta dog\n", encoding="utf-8")
    with pytest.raises(StageError, match="3 fields"):
        prompts_file.read_prompts_file(path)
    path.write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(StageError, match="holds no prompt"):
        prompts_file.read_prompts_file(path)
    with pytest.raises(StageError, match="cannot read"):
        prompts_file.read_prompts_file(tmp_path / "missing.txt")


def test_hub_prompts_offline_says_so(monkeypatch):
    monkeypatch.setenv("POPCORN_OFFLINE", "1")
    with pytest.raises(StageError, match="offline") as err:
        prompts_file.load_prompts("hub")
    assert "--prompts FILE" in err.value.hint


def test_grid_keys_are_stable():
    prompts = [prompts_file.Prompt(q) for q in PROMPTS[:2]]
    specs = grid.build_grid(prompts, ["basic", "pe"], ["a", "b"], ["x", "y"], [0, 1])
    assert len(specs) == 2 * 2 * 2 * 2 * 2 and len({s.key for s in specs}) == len(specs)
    again = grid.build_grid(prompts, ["basic", "pe"], ["a", "b"], ["x", "y"], [0, 1])
    assert [s.key for s in specs] == [s.key for s in again]  # the same grid names the same runs, in the same order
    assert all(s.key.startswith("b") and s.key.isalnum() for s in specs)  # a valid run id for the store
    pe = [s for s in specs if s.mode == "pe"][0]
    assert pe.key != grid.build_grid(prompts, ["pe"], ["a"], ["x"], [0], k=50)[0].key  # k matters in PE
    assert specs[0].key == grid.build_grid(prompts, ["basic"], ["a"], ["x"], [0], k=50)[0].key  # not in Basic
    with pytest.raises(StageError, match="unknown mode"):
        grid.build_grid(prompts, ["fancy"], ["a"], ["x"], [0])
    assert grid.split_names("a, b,a,,", "llms") == ["a", "b"]


def _batch(specs, out, **kw):
    return runner.run_batch(specs, out, shard=Shard(0, 1), show_bar=False, **kw)


def _meta(store, run_id):
    return store.get_run(run_id)["settings"]["batch"]


def test_unknown_models_fail_at_their_stage_and_are_retried_up_to_the_limit(tmp_path):
    prompts = [prompts_file.Prompt(PROMPTS[0])]
    specs = grid.build_grid(prompts, ["basic"], ["no-such-llm"], ["storyboard"], [0])
    result = _batch(specs, tmp_path, max_attempts=2)
    store = Store(home=tmp_path)
    row = store.get_run(specs[0].key)
    assert (result.failed, result.done, row["status"]) == (1, 0, "failed")
    assert _meta(store, specs[0].key)["failure"]["stage"] == "plan" and "no-such-llm" in row["error"]
    assert _batch(specs, tmp_path, max_attempts=2).failed == 1  # retried: attempt 2
    third = _batch(specs, tmp_path, max_attempts=2)
    assert (third.failed, third.given_up, _meta(store, specs[0].key)["attempts"]) == (0, 1, 2)  # not tried again


class _BadAnswers:
    """An LLM that answers with prose instead of a plan (a real failure mode of small models), counting calls."""

    name, description, calls = "bad-answers", "prose only", 0

    def available(self):
        return True, ""

    def complete(self, messages, **kwargs):
        from popcorn.llm import Completion

        type(self).calls += 1
        return Completion(text="Sure! Here is a great idea for your video about cats.")


def test_failed_plan_keeps_the_raw_answer_and_is_asked_again_on_retry(tmp_path):
    from popcorn.llm import register

    register("bad-answers", _BadAnswers)
    specs = grid.build_grid([prompts_file.Prompt(PROMPTS[0])], ["basic"], ["bad-answers"], ["storyboard"], [0])
    result = _batch(specs, tmp_path)
    store = Store(home=tmp_path)
    first_calls = _BadAnswers.calls
    assert result.failed == 1 and first_calls >= 1
    failure = _meta(store, specs[0].key)["failure"]
    assert failure["stage"] == "plan" and failure["raw"].startswith("Sure! Here is")
    assert store.get_run(specs[0].key)["plan"] is None and store.get_run(specs[0].key)["status"] == "failed"
    assert _batch(specs, tmp_path).failed == 1 and _BadAnswers.calls == 2 * first_calls  # retried: asked again
    assert _meta(store, specs[0].key)["attempts"] == 2


class _ModeRecorder(_BadAnswers):
    """Records which mode's prompt each call got (a PE prompt carries the references), then answers with prose."""

    name, modes = "mode-recorder", []

    def complete(self, messages, **kwargs):
        type(self).modes.append("pe" if "Popular videos" in messages[-1]["content"] else "basic")
        return super().complete(messages, **kwargs)


def test_the_batch_plans_mode_by_mode_so_each_modes_instructions_stay_cached(tmp_path):
    from popcorn.llm import register

    register("mode-recorder", _ModeRecorder)
    prompts = [prompts_file.Prompt(q) for q in PROMPTS[:2]]
    specs = grid.build_grid(prompts, ["pe", "basic"], ["mode-recorder"], ["storyboard"], [0])
    assert [s.mode for s in specs] == ["pe", "basic", "pe", "basic"]  # the grid goes prompt by prompt
    _ModeRecorder.modes = []
    assert _batch(specs, tmp_path).failed == 4
    seen = _ModeRecorder.modes
    assert set(seen) == {"pe", "basic"} and seen == sorted(seen, key=["pe", "basic"].index), seen


def test_a_planned_run_resumes_at_render_and_crash_leftovers_are_replaced(tmp_path):
    """A run killed after its plan was stored (and after an earlier render was renamed into place, before its row)."""
    from popcorn import pipeline
    from popcorn.types import Plan

    spec = grid.build_grid([prompts_file.Prompt(PROMPTS[0])], ["basic"], ["local"], ["storyboard"], [0])[0]
    store = Store(home=tmp_path)
    plan = Plan(title="Skateboarding cat goes viral", cover_prompt="a cat on a skateboard",
                video_prompt="A tabby cat rides a skateboard through a sunny park. Kids cheer.", mode="basic",
                llm="local", query=spec.prompt.query)
    record = pipeline.Run(spec.settings(), id=spec.key, plan=plan).to_dict()
    record["settings"]["batch"] = {**spec.meta(), "stage": "planned", "attempts": 0}
    store.save_run(record, status="planned")
    stray = tmp_path / "runs" / spec.key
    stray.mkdir(parents=True)
    (stray / "junk.txt").write_text("half-written")
    stale = tmp_path / "runs" / ".tmp" / f"{spec.key}-99999"
    stale.mkdir(parents=True)
    result = _batch([spec], tmp_path)
    assert (result.done, result.plans, result.failed) == (1, 0, 0)  # no LLM asked: the stored plan was used
    row = store.get_run(spec.key)
    assert row["status"] == "done" and row["plan"]["title"] == plan.title
    assert not (stray / "junk.txt").exists() and not stale.exists()
    assert Path(row["video"]["video"]).parent == stray and Path(row["video"]["video"]).is_file()
    saved = json.loads((stray / "run.json").read_text())
    assert saved["score"]["label"] == row["score"]["label"] and saved["video"]["video"] == row["video"]["video"]
    assert set(row["artifacts"]) >= {"video", "cover", "run"}


def _write_prompts(path, n):
    path.write_text("\n".join(PROMPTS[:n]) + "\n", encoding="utf-8")
    return path


def _statuses(db):
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT id, status FROM runs").fetchall())


def _stages(db) -> dict[str, tuple[str, str, bool]]:
    """run id -> (status, batch stage, has a plan), read as another process would while the batch writes."""
    with sqlite3.connect(db) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return {}  # the batch has created the file, not yet its tables
        rows = conn.execute("SELECT id, status, settings, plan FROM runs").fetchall()
    return {i: (status, json.loads(settings)["batch"].get("stage"), plan is not None and plan != "null")
            for i, status, settings, plan in rows}


@pytest.mark.llm
@pytest.mark.slow
def test_resume_skips_finished_runs(tmp_path):
    specs = grid.build_grid([prompts_file.Prompt(q) for q in PROMPTS[:2]], ["basic", "pe"], ["smollm2"],
                            ["storyboard"], [0])
    first = _batch(specs, tmp_path)
    store = Store(home=tmp_path)
    rows = {s.key: store.get_run(s.key) for s in specs}
    assert first.done + first.failed == 4 and first.plans == sum(r["plan"] is not None for r in rows.values())
    for row in rows.values():
        assert row["status"] in ("done", "failed")
        if row["status"] == "done":
            assert Path(row["video"]["video"]).is_file() and row["score"]["label"] is not None
            assert row["plan"]["title"] and row["baseline"]["videos"]
    second = _batch(specs, tmp_path)
    assert second.already_done == first.done
    assert second.plans == len([r for r in rows.values() if r["status"] == "failed"])  # only failed plans re-asked
    for key, row in rows.items():
        if row["status"] == "done":
            assert store.get_run(key)["updated"] == row["updated"]  # finished runs untouched


@pytest.mark.llm
@pytest.mark.slow
def test_interrupted_batch_counts_right(tmp_path):
    """The batch process is killed (SIGKILL) in its render stage, once every plan is stored and one run is rendered;
    a second batch plans nothing again, renders only what was not rendered and counts every run once."""
    prompts, out = _write_prompts(tmp_path / "p.txt", 2), tmp_path / "batch"
    cmd = [sys.executable, "-m", "popcorn", "batch", "--prompts", str(prompts), "--modes", "basic,pe", "--llms",
           "smollm2", "--videos", "storyboard", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 900
    before: dict = {}
    while time.time() < deadline:  # kill it once a run is rendered: the others are rendering or waiting for it
        before = _stages(out / "popcorn.db") if (out / "popcorn.db").exists() else {}
        if any(stage == "rendered" for _, stage, _ in before.values()):
            break
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _stages(out / "popcorn.db")  # what the killed process had committed
    assert len(before) == 4 and list(s for s, _, _ in before.values()).count("done") < 4, before
    rendered = {run_id: (out / "runs" / run_id / "video.mp4").stat().st_mtime_ns
                for run_id, (status, stage, _) in before.items() if stage == "rendered" or status == "done"}
    assert rendered, before
    for run_id in rendered:  # nothing counted rendered or done without its files
        assert (out / "runs" / run_id / "video.mp4").is_file() and (out / "runs" / run_id / "run.json").is_file()
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = json.loads(again.stdout)
    after = _statuses(out / "popcorn.db")
    assert len(after) == 4 == summary["grid"]
    assert summary["already_done"] == [s for s, _, _ in before.values()].count("done")
    assert summary["already_done"] + summary["done"] + summary["failed"] == 4
    failed_plans = sum(f["stage"] in ("plan", "retrieve") for f in summary["failures"])
    assert summary["plans"] + failed_plans == sum(not has_plan for _, _, has_plan in before.values())  # no re-plan
    for run_id, mtime in rendered.items():  # a rendered run is scored, not rendered again
        assert (out / "runs" / run_id / "video.mp4").stat().st_mtime_ns == mtime
    for run_id, status in after.items():
        if status == "done":
            assert (out / "runs" / run_id / "video.mp4").is_file()
    assert not [p for p in (out / "runs" / ".tmp").glob("*") if p.name.split("-")[0] in after
                and after[p.name.split("-")[0]] == "done"]
