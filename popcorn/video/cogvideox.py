"""CogVideoX (THUDM / zai-org) 5B and 2B through diffusers' CogVideoXPipeline.

Version 1.0 of both renders 720x480 landscape only (no portrait) and was trained on 49-frame clips (6 s at 8 fps, its
model card), so every request renders 49 frames. The 2B model was trained in float16, the 5B in bfloat16. Steps (50)
and guidance (6.0) are the pipeline's own defaults.
"""

from dataclasses import replace

from popcorn.video.diffusers_spec import DiffusersSpec, FrameRule

_FRAMES = FrameRule(multiple=4, default=49, minimum=49, maximum=49)

COGVIDEOX_5B = DiffusersSpec(
    name="cogvideox-5b",
    label="CogVideoX-5B",
    hub_id="THUDM/CogVideoX-5b",
    pipeline_class="CogVideoXPipeline",
    sizes=((720, 480),),
    size_note="not portrait",
    frames=_FRAMES,
    fps=8,
    dtype="bfloat16",
    gpu_gib=39,  # H200, bench/RESULTS.md: 27.8 GiB peak at 720x480x49 + 8.9 GiB T5-XXL, +5%
    offload_gib=15,  # measured on an H100: 13.1 GiB peak with model offload + VAE tiling
    decode_gib=14.7,  # measured: what the untiled decode adds at 720x480x49
)

COGVIDEOX_2B = replace(
    COGVIDEOX_5B,
    name="cogvideox-2b",
    label="CogVideoX-2B",
    hub_id="THUDM/CogVideoX-2b",
    dtype="float16",
    gpu_gib=30,  # H200, bench/RESULTS.md: 19.3 GiB peak at 720x480x49 (fp16) + 8.9 GiB T5-XXL, +5%
    offload_gib=11,  # T5-XXL (9.5 GB in fp16) alone is on the GPU while the prompt is encoded
)
