"""popcorn's own render path on a GPU, end to end, with tiny random pipelines of the real diffusers classes.

bench/video_speed.py times the fast path on full-size models; this checks the path users run: DiffusersGenerator
loads a diffusers folder (POPCORN_VIDEO_<NAME>_PATH), picks the memory mode from free GPU memory, takes the fast path
for speed="auto" (fused QKV, GEMM+GELU epilogue, FlashAttention-4 if installed, compiled blocks) and renders; the same
request with speed="plain" is the reference. Prints, per model: what the fast path did, the notes, and how far its
frames are from the plain ones (uint8 levels).

    python bench/gpu_smoke.py --models ltx,wan-1.3b,cogvideox-5b --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from popcorn.video import RenderRequest  # noqa: E402
from popcorn.video.cogvideox import COGVIDEOX_5B  # noqa: E402
from popcorn.video.diffusers_base import DiffusersGenerator  # noqa: E402
from popcorn.video.ltx import LTX  # noqa: E402
from popcorn.video.wan import WAN_1_3B  # noqa: E402
from test_video_diffusers import tiny_cogvideox, tiny_ltx, tiny_spec, tiny_wan  # noqa: E402

CASES = {"ltx": (LTX, tiny_ltx), "wan-1.3b": (WAN_1_3B, tiny_wan), "cogvideox-5b": (COGVIDEOX_5B, tiny_cogvideox)}


def check(name: str, folder: Path) -> dict:
    spec, build = CASES[name]
    build().save_pretrained(folder)
    os.environ[spec.env_var] = str(folder)
    request = RenderRequest(prompt="a lantern-lit night market, slow push-in", seed=4)
    started = time.perf_counter()
    plain = DiffusersGenerator(tiny_spec(spec, steps=4)).render(RenderRequest(**{**request.to_dict(), "speed": "plain"}))
    plain_s = time.perf_counter() - started
    fast_gen = DiffusersGenerator(tiny_spec(spec, steps=4))
    started = time.perf_counter()
    fast = fast_gen.render(request)  # speed="auto"
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = fast_gen.render(request)
    again_s = time.perf_counter() - started
    diff = np.abs(fast.frames.astype(int) - plain.frames.astype(int))
    return {
        "model": name,
        "memory_mode": fast.settings["memory_mode"],
        "speed": fast.settings["speed"],
        "notes": fast.notes,
        "frames": list(fast.frames.shape),
        "mean_abs_diff_vs_plain": round(float(diff.mean()), 3),
        "max_abs_diff_vs_plain": int(diff.max()),
        "repeat_identical": bool(np.array_equal(fast.frames, again.frames)),
        "seconds": {"plain (incl. load)": round(plain_s, 2), "fast first (load + compile)": round(first_s, 2),
                    "fast again": round(again_s, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    results = {"torch": torch.__version__,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "models": []}
    for name in args.models.split(","):
        try:
            results["models"].append(check(name.strip(), Path("/tmp") / f"popcorn_tiny_{name.strip()}"))
        except Exception as exc:  # report and go on with the next model
            results["models"].append({"model": name, "error": f"{type(exc).__name__}: {str(exc)[:400]}"})
        print(json.dumps(results["models"][-1], indent=1), flush=True)
    (Path(args.out) / "gpu_smoke.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
