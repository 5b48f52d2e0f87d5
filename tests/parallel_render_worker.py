"""Launched by tests/test_video_parallel.py under `accelerate launch --multi_gpu --num_processes N` on the CPU: one
tiny Wan render through DiffusersGenerator.render, its attention split across the processes (popcorn/video/parallel.py).
The main process saves the frames (npy) and the clip's notes, settings and what the split did (json) under the path
given: how many tokens the transformer's blocks saw against the whole latent sequence, and how many all-to-all
exchanges (Ulysses' collective) ran. Equal frames alone would not show a split: N unsplit renders match too."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch.distributed._functional_collectives as funcol  # noqa: E402

from popcorn.video import DiffusersGenerator, RenderRequest, parallel  # noqa: E402
from popcorn.video.wan import WAN_1_3B  # noqa: E402
from test_video_diffusers import tiny_spec  # noqa: E402  (the real spec with one tiny size)

SEEN = {"all_to_all": 0}


def _count_all_to_all(real):
    def all_to_all_single(*args, **kwargs):
        SEEN["all_to_all"] += 1
        return real(*args, **kwargs)

    return all_to_all_single


def _enable_and_watch(real):
    def enable(pipe, degree=None):
        note = real(pipe, degree)
        transformer = pipe.transformer
        patch = transformer.config.patch_size

        def whole(_module, _args, kwargs):  # the latents as the pipeline passes them, before any split
            _, _, f, h, w = kwargs["hidden_states"].shape
            SEEN.setdefault("tokens", int(f // patch[0] * (h // patch[1]) * (w // patch[2])))

        def local(_module, args, kwargs):  # what a later block gets: this process' share of the sequence
            hidden = args[0] if args else kwargs["hidden_states"]
            SEEN.setdefault("block_tokens", int(hidden.shape[1]))

        transformer.register_forward_pre_hook(whole, with_kwargs=True)
        transformer.blocks[-1].register_forward_pre_hook(local, with_kwargs=True)
        return note

    return enable


if __name__ == "__main__":
    out = Path(sys.argv[1])
    funcol.all_to_all_single = _count_all_to_all(funcol.all_to_all_single)
    parallel.enable = _enable_and_watch(parallel.enable)
    clip = DiffusersGenerator(tiny_spec(WAN_1_3B)).render(RenderRequest(prompt="a red cat runs over the city", seed=5))
    if parallel.is_main_process():
        np.save(out.with_suffix(".npy"), clip.frames)
        out.with_suffix(".json").write_text(json.dumps({"notes": clip.notes, "settings": clip.settings,
                                                        "split": SEEN}, default=str))
    parallel.barrier()
