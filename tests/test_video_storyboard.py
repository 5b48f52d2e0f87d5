"""The storyboard preview generator, the registry, and bad input on the CPU path."""

from __future__ import annotations

import numpy as np
import pytest

from popcorn.types import StageError
from popcorn.video import RenderRequest, get_generator, list_generators, register, registered
from popcorn.video.base import clean_prompt
from popcorn.video.storyboard import PREVIEW_BANNER, StoryboardGenerator, split_beats

PROMPT = ("A golden retriever leaps into a pile of autumn leaves in slow motion. The camera circles as leaves fly. "
          "The dog pops out with a leaf on its nose, looking proud.")


@pytest.fixture(scope="module")
def clip():
    return StoryboardGenerator().render(RenderRequest(prompt=PROMPT, seed=1))


def test_storyboard_is_a_portrait_preview_clip(clip):
    assert clip.frames.shape == (72, 854, 480, 3) and clip.frames.dtype == np.uint8  # 3 s at 24 fps: the default length
    assert (clip.width, clip.height, clip.fps) == (480, 854, 24)
    assert clip.is_preview is True and clip.generator == "storyboard"
    assert any(PREVIEW_BANNER in note for note in clip.notes)
    assert clip.settings["beats"] == split_beats(PROMPT) and len(clip.settings["beats"]) == 3


def test_every_frame_carries_the_red_preview_banner(clip):
    # the banner is a red panel near the bottom: strongly red pixels in the bottom 15% of every frame
    bottom = clip.frames[:, int(854 * 0.85):, :, :].astype(int)
    red = (bottom[..., 0] > 150) & (bottom[..., 1] < 60) & (bottom[..., 2] < 60)
    assert red.reshape(red.shape[0], -1).sum(axis=1).min() > 500


def test_it_moves_and_changes_beats(clip):
    diffs = np.abs(np.diff(clip.frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
    assert (diffs > 0.05).mean() > 0.9  # nearly every frame moves (zoom/pan)
    first, last = clip.frames[5].astype(int), clip.frames[-1].astype(int)
    assert np.abs(first - last).mean() > 20  # another card, another colour


def test_same_seed_same_frames_other_seed_other_colours():
    gen = StoryboardGenerator()
    req = RenderRequest(prompt="A cat on a piano.", num_frames=24, seed=5)
    a, b = gen.render(req), gen.render(req)
    c = gen.render(RenderRequest(prompt="A cat on a piano.", num_frames=24, seed=6))
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)


def test_odd_sizes_are_snapped_to_even_and_noted():
    clip = StoryboardGenerator().render(RenderRequest(prompt="Rain on a window.", width=333, height=591,
                                                      num_frames=3, fps=100))
    assert (clip.width, clip.height) == (332, 592) and clip.frames.shape[1:3] == (592, 332)
    assert clip.fps == 60 and clip.frames.shape[0] == 60  # at least one second
    assert len([n for n in clip.notes if "->" in n]) == 3


def test_empty_prompt_is_a_clear_stage_error():
    for prompt in ("", "   ", "\n\t"):
        with pytest.raises(StageError) as err:
            StoryboardGenerator().render(RenderRequest(prompt=prompt))
        assert err.value.stage == "render" and "empty" in err.value.message and err.value.hint


def test_five_thousand_character_prompt_works_and_is_cut_at_a_sentence():
    long_prompt = " ".join(f"Scene {i}: a drone flies over neon rooftops at night." for i in range(200))[:5000]
    text, notes = clean_prompt(long_prompt)
    assert len(text) <= 2000 and text.endswith(".") and notes
    clip = StoryboardGenerator().render(RenderRequest(prompt=long_prompt, num_frames=24))
    assert clip.frames.shape[0] == 24
    assert 1 <= len(clip.settings["beats"]) <= 4
    assert all(len(beat) <= 110 for beat in clip.settings["beats"])
    assert any("prompt cut" in n for n in clip.notes)


def test_unknown_memory_mode_is_refused():
    with pytest.raises(StageError):
        StoryboardGenerator().render(RenderRequest(prompt="x", memory_mode="turbo"))


def test_split_beats_handles_cjk_and_one_long_sentence():
    assert split_beats("猫在钢琴上跳舞。镜头慢慢推近！最后猫鞠躬。") == ["猫在钢琴上跳舞。", "镜头慢慢推近！", "最后猫鞠躬。"]
    one = "a slow dolly shot along a misty forest path, sunbeams through tall pines, a deer looks up, then runs"
    assert len(split_beats(one)) > 1


def test_registry_lists_everything_with_reasons():
    rows = {row["name"]: row for row in list_generators()}
    for name in ("storyboard", "ltx", "cogvideox-5b", "cogvideox-2b", "hunyuan", "hunyuan-1.5", "wan-1.3b",
                 "wan-14b", "sora"):
        assert name in rows and rows[name]["description"]
    assert rows["storyboard"]["available"] is True
    assert rows["ltx"]["available"] is False and rows["ltx"]["reason"]  # no GPU (or offline, no weights) here
    assert get_generator("storyboard") is get_generator("storyboard")  # built once


def test_unknown_generator_names_the_choices():
    with pytest.raises(StageError) as err:
        get_generator("veo-9")
    assert err.value.stage == "render" and "storyboard" in err.value.hint


def test_register_adds_a_generator_in_one_line():
    class Solid:
        name = "solid"
        description = "one colour"

        def available(self):
            return True, "always"

        def snap(self, req):
            return req, []

        def render(self, req, progress=None):
            return StoryboardGenerator().render(req, progress)

    register("solid-test", Solid, "test generator")
    try:
        assert "solid-test" in registered()
        assert get_generator("solid-test").name == "solid-test"
    finally:
        from popcorn.video import base

        base.GENERATORS.unregister("solid-test")
