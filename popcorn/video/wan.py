"""Wan 2.1 text-to-video (Alibaba) 1.3B and 14B through diffusers' WanPipeline.

832x480 and 480x832 (portrait) for both; the 14B model also renders 1280x720 / 720x1280. 4k+1 frames up to 81
at 16 fps. Steps (50) and guidance (5.0) are the pipeline's own defaults; the scheduler is the checkpoint's
(UniPC, flow shift 3.0), except the 14B model at 720p (flow shift 5.0).
"""

from popcorn.video.diffusers_spec import DiffusersSpec, FrameRule

_FRAMES = FrameRule(multiple=4, default=81, minimum=5, maximum=81)
_NEGATIVE = "blurry, low quality, static, distorted, watermark, subtitles, overexposed, deformed, extra fingers"
_VAE_FP32 = {"vae": ("float32", "diffusers' Wan recipe (WanPipeline docs): the VAE in float32 for better decoding")}

WAN_1_3B = DiffusersSpec(
    name="wan-1.3b",
    label="Wan2.1-T2V-1.3B",
    hub_id="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
    pipeline_class="WanPipeline",
    sizes=((480, 832), (832, 480)),
    frames=_FRAMES,
    fps=16,
    component_dtypes=_VAE_FP32,
    default_negative_prompt=_NEGATIVE,
    gpu_gib=25,  # H200, bench/RESULTS.md: 12.5 GiB peak at 480x832x49 (fp32 VAE) + 10.6 GiB UMT5-XXL, +5%
    offload_gib=12,  # UMT5-XXL alone on the GPU while encoding (H100: 4.3 GiB peak while denoising)
    decode_gib=8.6,  # measured: what the untiled fp32 decode adds at 480x832x49
)

WAN_14B = DiffusersSpec(
    name="wan-14b",
    label="Wan2.1-T2V-14B",
    hub_id="Wan-AI/Wan2.1-T2V-14B-Diffusers",
    pipeline_class="WanPipeline",
    sizes=((720, 1280), (1280, 720), (480, 832), (832, 480)),
    frames=_FRAMES,
    fps=16,
    component_dtypes=_VAE_FP32,
    scheduler_by_size=(
        (0, {"flow_shift": 3.0}, "Wan2.1's flow shift at 480p (diffusers' WanPipeline docs)"),
        (720 * 1280, {"flow_shift": 5.0}, "Wan2.1's flow shift at 720p (diffusers' WanPipeline docs)"),
    ),
    default_negative_prompt=_NEGATIVE,
    gpu_gib=71,  # H200, bench/RESULTS.md: 57.0 GiB peak at 720x1280x49 (fast path; 47.2 plain) + 10.6 GiB UMT5, +5%
    offload_gib=34,  # H200, bench/RESULTS.md: 31.8 GiB peak with model offload + tiled decode at 720p, +5%
    decode_gib=19.9,  # measured: what the untiled fp32 decode adds at 720x1280x49
)
