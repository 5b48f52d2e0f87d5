"""One video split across processes (issue 15's code path, on the CPU): diffusers' context parallelism through
accelerate's processes, joined over gloo, against the same render in one process; and the refusals of --gpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from popcorn.types import StageError  # noqa: E402
from popcorn.video import DiffusersGenerator, RenderRequest, parallel  # noqa: E402
from popcorn.video.wan import WAN_1_3B  # noqa: E402

from test_video_diffusers import tiny_spec, tiny_wan  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes_render_the_same_video_as_one(tmp_path, monkeypatch):
    folder = tmp_path / "tiny-wan"
    tiny_wan().save_pretrained(folder)
    monkeypatch.setenv(WAN_1_3B.env_var, str(folder))
    monkeypatch.delenv(parallel.ENV_GPUS, raising=False)
    one = DiffusersGenerator(tiny_spec(WAN_1_3B)).render(RenderRequest(prompt="a red cat runs over the city", seed=5))
    assert not any("context parallel" in n for n in one.notes)

    env = dict(os.environ, **{WAN_1_3B.env_var: str(folder), parallel.ENV_CPU: "1", parallel.ENV_GPUS: "2",
                              "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    command = parallel.launch_command([str(tmp_path / "two")], 2, port=29671,
                                      script=str(ROOT / "tests" / "parallel_render_worker.py"))
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = np.load(tmp_path / "two.npy")
    info = json.loads((tmp_path / "two.json").read_text())

    assert "context parallel: Ulysses attention across 2 processes (cpu)" in info["notes"]
    # the split happened: each process' blocks saw half of the latent sequence, and Ulysses exchanged heads for it
    split = info["split"]
    assert split["tokens"] > 0 and split["block_tokens"] * 2 == split["tokens"], split
    assert split["all_to_all"] > 0, split
    assert info["settings"]["speed"] == "plain"
    assert two.shape == one.frames.shape
    # the same seed and weights: the split attention gives the one-process video (uint8 frames, exact here on the CPU)
    assert int(np.abs(two.astype(int) - one.frames.astype(int)).max()) <= 1


def test_models_without_a_working_split_are_refused_with_why():
    with pytest.raises(StageError) as err:
        parallel.check("ltx", 2, available_gpus=8)
    assert err.value.stage == "render" and "cannot be split" in err.value.message and "wan-1.3b" in err.value.hint
    with pytest.raises(StageError) as err:
        parallel.check("cogvideox-5b", 2, available_gpus=8)
    assert "no context-parallel plan" in err.value.message
    parallel.check("wan-14b", 2, available_gpus=2)  # can
    parallel.check("ltx", 1, available_gpus=0)  # one device: nothing to split


def test_more_gpus_than_the_machine_has_is_refused(monkeypatch):
    monkeypatch.delenv(parallel.ENV_CPU, raising=False)
    with pytest.raises(StageError) as err:
        parallel.check("wan-1.3b", 4, available_gpus=2)
    assert "asks for 4 GPUs, but this machine has 2" in err.value.message and err.value.hint == "use --gpus 2"


def test_cli_refuses_gpus_on_this_machine_before_any_work(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"title": "t", "cover_prompt": "c", "video_prompt": "a cat", "query": "a cat"}))
    env = dict(os.environ)
    env.pop(parallel.ENV_CPU, None)
    done = subprocess.run([sys.executable, "-m", "popcorn", "render", "--plan", str(plan), "--video", "wan-1.3b",
                           "--gpus", "2", "--out", str(tmp_path / "out")], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0
    assert "asks for 2 GPUs, but this machine has 0" in done.stderr
    assert not (tmp_path / "out").exists()


def test_each_split_render_gets_its_own_port(monkeypatch):
    """Two split renders at once must not meet on accelerate's default port (29500): each launch binds a free one."""
    import subprocess as sp

    seen = []
    monkeypatch.setattr(sp, "call", lambda command, env: seen.append((command, env)) or 0)
    assert parallel.relaunch(["render", "--gpus", "2"], 2) == 0
    assert parallel.relaunch(["render", "--gpus", "2"], 2) == 0
    ports = [c[c.index("--main_process_port") + 1] for c, _ in seen]
    assert len(ports) == 2 and all(1024 < int(p) < 65536 and int(p) != 29500 for p in ports)
    assert all(env[parallel.ENV_GPUS] == "2" and c[-2:] == ["--gpus", "2"] for c, env in seen)
