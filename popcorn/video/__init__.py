"""g(x): text-to-video. One protocol (base.VideoGenerator), a registry, and the generators below.

    from popcorn.video import RenderRequest, get_generator, list_generators
    gen = get_generator("ltx")                   # or "storyboard", "sora", "kling", "wan-1.3b", ...
    ok, why = gen.available()
    clip = gen.render(RenderRequest(prompt=plan.video_prompt, seed=0), progress=lambda f, msg: print(f, msg))

Adding a diffusers model is one small spec file (see ltx.py) plus one `register(...)` line here; another kind of
generator is one class with available/snap/render.
"""

from popcorn.video.base import (
    Clip,
    RenderRequest,
    VideoGenerator,
    get_generator,
    list_generators,
    register,
    registered,
)
from popcorn.video.budget import budget as prompt_budget
from popcorn.video.budget import describe as describe_budget
from popcorn.video.cogvideox import COGVIDEOX_2B, COGVIDEOX_5B
from popcorn.video.diffusers_base import DiffusersGenerator, DiffusersSpec, FrameRule
from popcorn.video.hunyuan import HUNYUAN
from popcorn.video.hunyuan15 import HUNYUAN_15
from popcorn.video.kling import KlingGenerator
from popcorn.video.ltx import LTX
from popcorn.video.sora import SoraGenerator
from popcorn.video.storyboard import StoryboardGenerator
from popcorn.video.wan import WAN_1_3B, WAN_14B

DEFAULT_VIDEO = "storyboard"

register("storyboard", StoryboardGenerator, StoryboardGenerator.description)
register("ltx", lambda: DiffusersGenerator(LTX), "LTX-Video 0.9, 2B (Lightricks): fast, 9:16 capable")
register("cogvideox-5b", lambda: DiffusersGenerator(COGVIDEOX_5B), "CogVideoX-5B: 720x480 landscape only")
register("cogvideox-2b", lambda: DiffusersGenerator(COGVIDEOX_2B), "CogVideoX-2B: 720x480 landscape only")
register("hunyuan", lambda: DiffusersGenerator(HUNYUAN), "HunyuanVideo 13B (Tencent): 544p/720p, 9:16 capable")
register("hunyuan-1.5", lambda: DiffusersGenerator(HUNYUAN_15), "HunyuanVideo-1.5 8.3B, 480p, 9:16 capable")
register("wan-1.3b", lambda: DiffusersGenerator(WAN_1_3B), "Wan2.1 T2V 1.3B: 480p, 9:16 capable")
register("wan-14b", lambda: DiffusersGenerator(WAN_14B), "Wan2.1 T2V 14B: 480p/720p, 9:16 capable")
register("sora", SoraGenerator, SoraGenerator.description)
register("kling", KlingGenerator, KlingGenerator.description)


def first_available(preferred: tuple[str, ...] = ("ltx", "wan-1.3b", "cogvideox-2b")) -> str:
    """The first of `preferred` that can run here, else the storyboard preview."""
    for name in preferred:
        ok, _ = get_generator(name).available()
        if ok:
            return name
    return DEFAULT_VIDEO


__all__ = [
    "Clip",
    "DEFAULT_VIDEO",
    "DiffusersGenerator",
    "DiffusersSpec",
    "FrameRule",
    "RenderRequest",
    "VideoGenerator",
    "describe_budget",
    "first_available",
    "get_generator",
    "list_generators",
    "prompt_budget",
    "register",
    "registered",
]
