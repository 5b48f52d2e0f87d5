"""Anonymised copies: the container's tags, ffmpeg's and x264's names are gone; the pixels are the same."""

from __future__ import annotations

import struct
import subprocess

import pytest

from popcorn.study import StudyError, media

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def composed(tmp_path_factory):
    """A real run's video.mp4: the storyboard render composed with its title (compose writes title + prompt tags)."""
    from popcorn import pipeline
    from popcorn.types import Plan

    out = tmp_path_factory.mktemp("run")
    plan = Plan(title="Zebra picnic under neon rain", cover_prompt="a zebra", mode="pe", llm="local",
                video_prompt="a zebra eats a sandwich in neon rain, cinematic", query="zebra picnic")
    run = pipeline.Run(pipeline.Settings(query="zebra picnic", mode="pe", video="storyboard"), plan=plan)
    pipeline.render_run(run, out, with_score=False)
    return out / "video.mp4", plan


def frames(path) -> bytes:
    return subprocess.run([media.ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                           "-"], capture_output=True, check=True, timeout=120).stdout


def test_the_original_carries_metadata_the_copy_does_not(composed, tmp_path):
    src, plan = composed
    words = [plan.video_prompt, "zebra eats a sandwich", "storyboard", "local", src.parent.name, "video.mp4"]
    before = media.check_clean(src, words)
    assert before, "the composed video should carry tags (else this test checks nothing)"
    media_id, copy = media.anonymise(src, tmp_path)
    assert copy.name == f"{media_id}.mp4" and len(media_id) == 22
    assert media.check_clean(copy, words) == []
    assert all(not name.strip() for name in media.handler_names(copy))
    assert not [b for b in media.mp4_boxes(copy) if b[1] in (b"udta", b"meta", b"ilst")]
    assert frames(copy) == frames(src)  # a re-mux: every pixel the same (the burnt-in title stays, by design)


def test_ids_are_random_and_a_missing_video_is_a_clear_error(composed, tmp_path):
    assert len({media.new_media_id() for _ in range(1000)}) == 1000
    with pytest.raises(StudyError, match="missing"):
        media.anonymise(tmp_path / "nope.mp4", tmp_path)


def test_other_codecs_are_reencoded_and_cleaned(tmp_path):
    src = tmp_path / "in.mp4"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1",
                    "-c:v", "mpeg4", "-metadata", "title=secret-system-name", "-metadata", "comment=made by qwen-x",
                    str(src)], check=True, timeout=60)
    assert media.check_clean(src, ["secret-system-name", "qwen-x"])
    _, copy = media.anonymise(src, tmp_path / "out")
    assert media.video_codec(copy) == "h264"
    assert media.check_clean(copy, ["secret-system-name", "qwen-x"]) == []


def test_the_copy_carries_no_creation_or_modification_time(tmp_path):
    """mvhd / tkhd / mdhd hold creation and modification times: a source's time (or the copy's) would date the run
    and order the copies. They are zero in the copy even when the source carries them."""
    src = tmp_path / "dated.mp4"
    subprocess.run([media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8:duration=1",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-metadata", "creation_time=2026-12-01T10:11:12Z",
                    str(src)], check=True, timeout=60)

    def times(path):
        data = path.read_bytes()
        out = {}
        for name, kind, start, header, _ in media._walk(data):
            if kind in (b"mvhd", b"tkhd", b"mdhd"):
                body = data[start + header:]
                fmt, width = (">II", 8) if body[0] == 0 else (">QQ", 16)
                out[name] = struct.unpack(fmt, body[4:4 + width])
        return out

    assert any(t != (0, 0) for t in times(src).values())  # the source is dated (else this checks nothing)
    _, copy = media.anonymise(src, tmp_path / "out")
    found = times(copy)
    assert set(found) == {"moov/mvhd", "moov/trak/tkhd", "moov/trak/mdia/mdhd"}
    assert all(t == (0, 0) for t in found.values()), found
