"""Launched by tests/test_video_parallel.py under `accelerate launch --multi_gpu --num_processes N` on the CPU: one
tiny Wan render through DiffusersGenerator.render, its attention split across the processes (popcorn/video/parallel.py).
The main process saves the frames (npy) and the clip's notes (json) under the path given."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from popcorn.video import DiffusersGenerator, RenderRequest, parallel  # noqa: E402
from popcorn.video.wan import WAN_1_3B  # noqa: E402
from test_video_diffusers import tiny_spec  # noqa: E402  (the real spec with one tiny size)

if __name__ == "__main__":
    out = Path(sys.argv[1])
    clip = DiffusersGenerator(tiny_spec(WAN_1_3B)).render(RenderRequest(prompt="a red cat runs over the city", seed=5))
    if parallel.is_main_process():
        np.save(out.with_suffix(".npy"), clip.frames)
        out.with_suffix(".json").write_text(json.dumps({"notes": clip.notes, "settings": clip.settings}, default=str))
    parallel.barrier()
