"""LTX-Video (Lightricks, 2B DiT) through diffusers' LTXPipeline.

Any size divisible by 32 up to 720x1280 (so 9:16 portrait works), 8k+1 frames, conditioned on the frame rate.
Steps (50) and guidance (3.0) are the pipeline's own defaults.
"""

from popcorn.video.diffusers_spec import DiffusersSpec, FrameRule

_DECODE = ("Lightricks' recipe for LTX-Video (model card and diffusers' LTX docs): decode at timestep 0.03 with noise "
           "scale 0.025; read by VAEs with timestep conditioning (0.9.1 on), ignored by 0.9.0's")

LTX = DiffusersSpec(
    name="ltx",
    label="LTX-Video 0.9 (2B)",
    hub_id="Lightricks/LTX-Video",
    pipeline_class="LTXPipeline",
    sizes=((480, 832), (832, 480), (704, 480), (512, 512)),
    free_sizes=True,
    size_multiple=32,
    max_pixels=720 * 1280,
    frames=FrameRule(multiple=8, default=121, minimum=9, maximum=257),
    fps=24,
    frame_rate_arg="frame_rate",
    overrides={"decode_timestep": (0.03, _DECODE), "decode_noise_scale": (0.025, _DECODE)},
    default_negative_prompt="worst quality, inconsistent motion, blurry, jittery, distorted",
    gpu_gib=19,  # H200, bench/RESULTS.md: 8.5 GiB peak at 480x832x73 + 8.9 GiB T5-XXL, +5%
    offload_gib=11,  # T5-XXL alone on the GPU while encoding (H100: 4.4 GiB peak while denoising)
    decode_gib=2.8,  # measured: what the untiled decode adds at 480x832x73
)
