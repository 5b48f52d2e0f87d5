"""HunyuanVideo (Tencent, 13B) through diffusers' HunyuanVideoPipeline.

Native buckets at 544p and 720p in both orientations (9:16 portrait included), 4k+1 frames up to 129, 24 fps.
Guidance is embedded (guidance-distilled): the pipeline's default guidance_scale 6.0 goes into the model, no second
pass. Steps (50) are the pipeline's own default.
"""

from popcorn.video.diffusers_spec import DiffusersSpec, FrameRule

HUNYUAN = DiffusersSpec(
    name="hunyuan",
    label="HunyuanVideo (13B)",
    hub_id="hunyuanvideo-community/HunyuanVideo",
    pipeline_class="HunyuanVideoPipeline",
    sizes=((544, 960), (960, 544), (720, 1280), (1280, 720), (624, 832), (832, 624), (720, 720)),
    frames=FrameRule(multiple=4, default=129, minimum=5, maximum=129),
    fps=24,
    gpu_gib=71,  # H200, bench/RESULTS.md: 52.8 GiB peak at 544x960x73 + 14.2 GiB Llama-3-8B + CLIP-L, +5%
    offload_gib=30,  # H200, bench/RESULTS.md: 28.0 GiB peak with model offload + tiled decode, +5%
    decode_gib=28.3,  # measured: what the untiled decode adds at 544x960x73
)
