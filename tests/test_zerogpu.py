"""ZeroGPU as its documentation describes it, with a stand-in `spaces` module: each `spaces.GPU` function runs in a
separate process (multiprocessing spawn, so nothing of the main process leaks in), for at most its `duration`
seconds, which may be a callable of the function's arguments. The studio's own functions run end to end on top.

The GPU backends here are stand-ins that run on the CPU but say they need a GPU (`needs_gpu = True`): a scripted LLM
and the storyboard under another name. They record the process they ran in.
"""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import threading
import time

import pytest

STAND_IN_SPACES = '''
"""A stand-in for Hugging Face's `spaces` package on ZeroGPU (tests only)."""
import importlib, multiprocessing, os

class config:
    class Config:
        zero_gpu = True

CALLS = []  # one dict per GPU call: the function, the duration asked, the worker's pid, its exit code


def _worker(module, qualname, args, conn):
    for name in filter(None, os.environ.get("SPACES_STANDIN_IMPORTS", "").split(",")):
        importlib.import_module(name)  # a forked ZeroGPU worker inherits these registrations; a spawned one imports
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))


def GPU(fn=None, duration=60):
    def decorate(f):
        def wrapper(*args):
            seconds = duration(*args) if callable(duration) else duration
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_worker, args=(f.__module__, f.__qualname__, args, child))
            process.start()
            call = {"fn": f.__qualname__, "duration": seconds, "pid": process.pid}
            CALLS.append(call)
            if not parent.poll(seconds):  # ZeroGPU stops a call that outlives its duration
                process.kill()
                raise TimeoutError(f"GPU task {f.__qualname__} went over its {seconds} s")
            status, value = parent.recv()
            process.join()
            call["exit"] = process.exitcode
            if status == "error":
                raise RuntimeError(value)
            return value
        return wrapper
    return decorate(fn) if fn is not None else decorate
'''

STAND_IN_BACKENDS = '''
"""GPU backends for the ZeroGPU test: they run on the CPU, say they need a GPU, and log the process they ran in."""
import json, os, time

from popcorn.llm import register as register_llm
from popcorn.llm.base import Completion
from popcorn.video import register as register_video
from popcorn.video.storyboard import StoryboardGenerator

LOG = os.environ["STANDIN_LOG"]


def _log(what):
    with open(LOG, "a") as f:
        f.write(f"{what} {os.getpid()}\\n")


class SlotLLM:
    needs_gpu = True
    description = "a scripted LLM that needs a GPU"

    def available(self):
        _log("llm-available")
        return True, ""

    def complete(self, messages, *, json_schema=None, max_tokens=700, temperature=0.7, seed=None, on_text=None):
        _log("llm-complete")
        slow = "slowly" in messages[-1]["content"]
        plan = json.dumps({"title": f"Sea puppy, take {seed}", "cover_prompt": "a puppy on a beach",
                           "video_prompt": "A puppy runs into a small wave, jumps back, barks at the sea, then runs in again as the camera follows low along the wet sand at sunset."})
        text = ""
        for i in range(400 if slow else 1):
            text = plan[: max(1, len(plan) * (i + 1) // (400 if slow else 1))]
            if on_text is not None:
                on_text(text)
            if slow:
                time.sleep(0.05)
        return Completion(text=plan, model="slot-llm")


class SlotVideo(StoryboardGenerator):
    needs_gpu = True

    def available(self):
        _log("video-available")
        return True, ""

    def render(self, req, progress=None):
        _log("video-render")
        return super().render(req, progress)


register_llm("slot-llm", SlotLLM, SlotLLM.description)
register_video("slot-video", SlotVideo, "the storyboard, as if it needed a GPU")
'''


def _private_registries(monkeypatch) -> None:
    """Backends a test registers are forgotten after it (the registries are restored)."""
    import popcorn.llm.base as llm_base
    import popcorn.video.base as video_base

    monkeypatch.setattr(llm_base, "LLMS", llm_base.LLMS.copy())
    monkeypatch.setattr(video_base, "GENERATORS", video_base.GENERATORS.copy())


@pytest.fixture
def zerogpu(tmp_path, monkeypatch):
    """The stand-in `spaces` importable here and in spawned workers; the studio's slots re-decorated with it."""
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "__init__.py").write_text(textwrap.dedent(STAND_IN_SPACES))
    (tmp_path / "popcorn_gpu_standins.py").write_text(textwrap.dedent(STAND_IN_BACKENDS))
    log = tmp_path / "processes.log"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("SPACES_STANDIN_IMPORTS", "popcorn_gpu_standins")
    monkeypatch.setenv("STANDIN_LOG", str(log))
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    _private_registries(monkeypatch)
    for name in ("spaces", "popcorn_gpu_standins"):
        sys.modules.pop(name, None)
    import spaces

    import popcorn_gpu_standins  # noqa: F401  registers slot-llm and slot-video here too
    from popcorn.studio import slots

    importlib.reload(slots)  # decorated again, now with the stand-in spaces.GPU
    yield spaces, log
    sys.modules.pop("spaces", None)
    importlib.reload(slots)


def _processes(log) -> list[tuple[str, int]]:
    return [(what, int(pid)) for what, pid in (line.split() for line in log.read_text().splitlines())]


def test_plan_and_render_run_in_gpu_workers_and_the_rest_in_the_main_process(zerogpu, retriever):
    spaces, log = zerogpu
    from popcorn import studio
    from popcorn.serve import zerogpu as zg
    from popcorn.store import Store

    assert zg.active()
    choices = studio.backend_choices()  # the pickers list the GPU backends without asking them here (no CUDA here)
    assert ("slot-llm", "slot-llm") in choices["llm"] and ("slot-video", "slot-video") in choices["video"]

    planned = studio.plan_action("a golden retriever puppy sees the sea", "pe", 10, "slot-llm", 0, 2, visitor="v")
    assert [c["fn"] for c in spaces.CALLS] == ["write_plans"]
    plan_call = spaces.CALLS[0]
    settings = studio.get_store().get_run(planned.run_id)["settings"]
    # 2 candidates x 3 draws x 700 tokens at 30 tokens/s, + 10 s
    assert plan_call["duration"] == zg.plan_seconds("slot-llm", 2, settings["max_tokens"], settings["attempts"]) == 150
    assert plan_call["exit"] == 0
    assert len(planned.references) == 10  # retrieval ran here, the LLM there
    assert len(planned.candidates) == 2  # ranked by h here, after the slot
    rendered = studio.render_action(planned.run_id, planned.title, planned.cover_prompt, planned.video_prompt,
                                    "slot-video", 0, visitor="v")
    assert [c["fn"] for c in spaces.CALLS] == ["write_plans", "render_video"]
    render_call = spaces.CALLS[1]
    assert render_call["duration"] == zg.render_seconds("slot-video") and render_call["exit"] == 0
    with open(rendered.video, "rb") as f:
        assert f.read(8)[4:8] == b"ftyp"
    record = Store(studio.get_store().path).get_run(planned.run_id)
    assert record["status"] == "done" and record["score"]["predicted_comments"] >= 0  # scored here
    assert record["settings"]["speed"] == "plain"  # compiled kernels would not outlive the worker

    main = os.getpid()
    seen = _processes(log)
    assert ("llm-complete", plan_call["pid"]) in seen and ("video-render", render_call["pid"]) in seen
    assert all(pid != main for _, pid in seen)  # not even available() ran in the main process
    if "torch" in sys.modules:
        import torch

        assert not torch.cuda.is_initialized()

    studio.render_action("", "A title of my own", "", "A cat jumps.", "storyboard", 0, visitor="v")
    assert len(spaces.CALLS) == 2  # the storyboard holds no GPU slot


def test_cancel_reaches_into_the_gpu_worker(zerogpu):
    spaces, log = zerogpu
    from popcorn import studio

    shown, errors = [], []

    def sink(fraction, desc=None):
        shown.append(desc)
        if desc and "writing the plan" in desc and not studio.cancel("tab-1").startswith("Nothing"):
            shown.append("CANCELLED")

    def plan():
        try:
            studio.plan_action("a puppy, slowly", "basic", 10, "slot-llm", 0, 1, progress=sink, cancel_key="tab-1",
                               visitor="v")
        except studio.StudioError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=plan)
    thread.start()
    thread.join(240)
    assert not thread.is_alive()
    assert "CANCELLED" in shown
    assert errors and errors[0].startswith("Cancelled during stage plan.")
    stopped_after = shown[shown.index("CANCELLED") + 1:]
    assert not any("writing the plan" in (d or "") for d in stopped_after[2:])  # the answer stopped growing
    assert spaces.CALLS[0]["exit"] == 0  # the worker returned (with the cancellation), not killed
    record = studio.get_store().list_runs(visitor="v")[0]
    assert record["status"] == "cancelled"


def test_slot_durations_follow_the_model_and_the_settings():
    from popcorn.serve import zerogpu as zg

    assert zg.plan_seconds("llama-3.3-70b", 1) > zg.plan_seconds("transformers:x", 1)
    assert zg.plan_seconds("transformers:x", 4) > zg.plan_seconds("transformers:x", 1)
    assert zg.render_seconds("ltx", 50) < zg.render_seconds("wan-1.3b", 50) < zg.render_seconds("wan-14b", 50)
    assert zg.render_seconds("ltx", 10) < zg.render_seconds("ltx", 50)
    assert zg.render_seconds("ltx", 50, "model_offload") > zg.render_seconds("ltx", 50)
    assert zg.render_seconds("hunyuan", 50) == zg.MAX_SECONDS  # capped at what the Space may ask
    assert zg.MIN_SECONDS <= zg.plan_seconds("transformers:x", 1, 10)


def test_only_torch_backends_need_a_slot():
    from popcorn.serve import zerogpu as zg
    from popcorn.llm import get_llm
    from popcorn.video import get_generator

    assert zg.needs_gpu(get_llm("transformers:some/model")) and zg.needs_gpu(get_generator("ltx"))
    assert not zg.needs_gpu(get_llm("local")) and not zg.needs_gpu(get_generator("storyboard"))
    assert not zg.needs_gpu(get_llm("openai")) and not zg.needs_gpu(get_generator("sora"))


def test_a_channel_carries_cancel_and_progress_across_processes(tmp_path):
    import multiprocessing

    from popcorn.serve.zerogpu import Channel, call

    channel = Channel(tmp_path)
    seen = []
    ctx = multiprocessing.get_context("spawn")

    def in_worker():
        process = ctx.Process(target=_report_until_cancelled, args=(channel,))
        process.start()
        process.join(120)
        return process.exitcode

    def relay(stage, fraction, message):
        seen.append(message)
        if len(seen) == 3:
            channel.set()

    start = time.monotonic()
    assert call(in_worker, channel=channel, progress=relay) == 0
    assert seen[:3] == ["step 0", "step 1", "step 2"] and len(seen) < 10 and time.monotonic() - start < 120


def _report_until_cancelled(channel):
    for i in range(1000):
        if channel.is_set():
            return
        channel.report("render", i / 1000, f"step {i}")
        time.sleep(0.1)


def test_gpu_weights_load_at_start_up_and_nothing_else_does(monkeypatch):
    """On ZeroGPU, app start-up loads the enabled GPU backends (as ZeroGPU expects); CPU and API ones are left alone."""
    from popcorn.serve import zerogpu as zg
    from popcorn.llm import register as register_llm
    from popcorn.video import register as register_video

    _private_registries(monkeypatch)
    loaded = []

    class GpuLLM:
        needs_gpu, description = True, "gpu llm"

        def available(self):
            return True, ""

        def load(self):
            loaded.append("llm")

    class GpuVideo:
        needs_gpu, description = True, "gpu video"

        def available(self):
            return True, ""

        def pipeline(self, mode, progress=None, fast=False):
            loaded.append(("video", mode))

    register_llm("preload-llm", GpuLLM, "gpu llm")
    register_video("preload-video", GpuVideo, "gpu video")
    assert zg.preload(["preload-llm", "local", "openai"], ["preload-video", "storyboard", "sora"]) == [
        "preload-llm", "preload-video"]
    assert loaded == ["llm", ("video", "gpu")]
    from popcorn.serve import resident

    try:  # every preloaded model stays resident: ZeroGPU maps them all into each worker
        assert resident.limit() == 0
    finally:
        resident.set_limit(None)
