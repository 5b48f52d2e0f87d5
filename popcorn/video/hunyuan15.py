"""HunyuanVideo-1.5 (Tencent, 8.3B), 480p text-to-video, through diffusers' HunyuanVideo15Pipeline.

480p buckets in both orientations (9:16 portrait included), 4k+1 frames up to 121, 24 fps. Classifier-free guidance
comes from the pipeline's own guider (guidance 6.0 in the released config), steps (50) from its signature. The
pipeline has no step callback: popcorn reports its steps (and Cancel stops it) through the scheduler's step.
"""

from popcorn.video.diffusers_spec import DiffusersSpec, FrameRule

HUNYUAN_15 = DiffusersSpec(
    name="hunyuan-1.5",
    label="HunyuanVideo-1.5 480p (8.3B)",
    hub_id="hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v",
    pipeline_class="HunyuanVideo15Pipeline",
    sizes=((480, 848), (848, 480), (640, 640)),
    frames=FrameRule(multiple=4, default=121, minimum=5, maximum=121),
    fps=24,
    gpu_gib=86,  # H200, bench/RESULTS.md: 68.0 GiB peak at 480x848x73 (the untiled decode) + 13.6 GiB Qwen + byT5, +5%
    offload_gib=22,  # H200, bench/RESULTS.md: 20.3 GiB peak with model offload + tiled decode, +5%
    decode_gib=50.1,  # measured: what the untiled decode adds at 480x848x73
)
