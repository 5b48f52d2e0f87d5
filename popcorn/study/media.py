"""Anonymised copies of the study's videos: opaque ids, no metadata, checked.

    media_id, path = anonymise("/runs/2026.../video.mp4", folder)   # folder/<media_id>.mp4
    problems = check_clean(path, forbidden=["pe", "qwen", run_id])  # [] when nothing names its origin

The copy is a re-mux, not a re-encode (the pixels are the video: a run's title burnt into its frames stays, by
design): `-map_metadata -1 -map_chapters -1` drops the container's tags (title, comment, anything a generator or
editor wrote), `-fflags +bitexact` keeps ffmpeg from writing its own name and version, and a bitstream filter drops
the codec's SEI messages, where x264 writes its name and settings. What ffmpeg's MP4 muxer still writes (an empty
`udta` tag list, the 'VideoHandler' handler name) is then blanked in place by `scrub`, byte for byte, so no sample
offset moves.

`check_clean` reads the result back with our own MP4 box walker (no ffprobe ships with imageio-ffmpeg): it lists every
text-bearing box (udta, meta/ilst, ©too, ©nam, ©cmt, hdlr names, ...) and scans the raw bytes for the encoder marks
and for any string the caller forbids (system names, model ids, run ids, the source file name).
"""

from __future__ import annotations

import re
import secrets
import struct
import subprocess
from pathlib import Path

from popcorn.study import StudyError

# boxes whose children are boxes (so the walker descends into them)
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf", b"ilst", b"mvex", b"moof",
               b"traf", b"meta"}
_TAG_BOXES = {b"udta", b"meta", b"ilst", b"\xa9too", b"\xa9nam", b"\xa9cmt", b"\xa9des", b"desc", b"ldes", b"\xa9ART",
              b"\xa9day", b"\xa9enc", b"\xa9swr", b"keys", b"XMP_", b"uuid", b"titl", b"auth", b"cprt", b"name"}
# what encoders leave behind: libavformat / libavcodec versions, x264 / x265 SEI text, a typical handler string
ENCODER_MARKS = (b"Lavf", b"Lavc", b"x264", b"x265", b"libx26", b"encoder", b"VideoHandler", b"SoundHandler",
                 b"ISO Media file produced", b"Google", b"imageio", b"moviepy")
MIN_SCAN = 4  # a 4-byte string turns up by chance in ~1e5 bytes of compressed video with p ~ 2e-5

# SEI NAL unit types per codec (H.264: 6; HEVC: prefix 39, suffix 40)
_SEI = {"h264": "6", "hevc": "39|40"}


def ffmpeg_exe() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as exc:
        raise StudyError("imageio-ffmpeg is not installed; pip install imageio-ffmpeg") from exc
    return imageio_ffmpeg.get_ffmpeg_exe()


def new_media_id() -> str:
    """An opaque id: 128 random bits, URL-safe, carrying nothing about the video."""
    return secrets.token_urlsafe(16)


def _probe(src: str | Path) -> str:
    """What ffmpeg says of the file's streams (no ffprobe ships with imageio-ffmpeg)."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(src)], capture_output=True, text=True,
                          timeout=60).stderr


def video_codec(src: str | Path) -> str:
    match = re.search(r"Video: (\w+)", _probe(src))
    if not match:
        raise StudyError(f"{src} has no video stream ffmpeg can read")
    return match.group(1)


def duration(src: str | Path) -> float:
    """The video's length in seconds, as ffmpeg reads it from the container (0.0 when it says none)."""
    match = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", _probe(src))
    return 0.0 if not match else int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3))


def frozen(src: str | Path, folder: str | Path) -> tuple[str, Path]:
    """A gold attention check's broken side: the first frame of `src` held still for the whole length (sound
    dropped), anonymised like any copy under a fresh id. Beside the intact video, one that never moves is plain to
    anyone who watches both."""
    src, folder = Path(src), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    length = duration(src) or 1.0
    tmp = folder / f".{new_media_id()}.frozen.mp4"
    try:
        _ffmpeg(["-i", str(src), "-map", "0:v:0", "-vf", "trim=end_frame=1,loop=loop=-1:size=1:start=0,"
                 "setpts=N/FRAME_RATE/TB", "-t", f"{length:.3f}", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                 str(tmp)], src, tmp)
        return anonymise(tmp, folder)
    finally:
        tmp.unlink(missing_ok=True)


def anonymise(src: str | Path, folder: str | Path, media_id: str | None = None) -> tuple[str, Path]:
    """Copy `src` to folder/<media_id>.mp4 without metadata; returns (media_id, path)."""
    src, folder = Path(src), Path(folder)
    if not src.is_file():
        raise StudyError(f"the video {src} is missing; re-render the run or drop the pair")
    folder.mkdir(parents=True, exist_ok=True)
    media_id = media_id or new_media_id()
    dst = folder / f"{media_id}.mp4"
    codec = video_codec(src)
    tmp = None
    if codec not in _SEI:  # anything else is first re-encoded to H.264, then re-muxed like the rest
        tmp = folder / f".{media_id}.h264.mp4"
        _ffmpeg(["-i", str(src), "-map", "0:v:0", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", "-an",
                 str(tmp)], src, tmp)
        src, codec = tmp, "h264"
    try:
        _ffmpeg(["-i", str(src), "-map", "0:v:0", "-map", "0:a:0?", "-c:v", "copy", "-bsf:v",
                 f"filter_units=remove_types={_SEI[codec]}", "-c:a", "aac", "-map_metadata", "-1", "-map_chapters",
                 "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags",
                 "+faststart", str(dst)], src, dst)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    scrub(dst)
    return media_id, dst


def _walk(data: bytes) -> list[tuple[str, bytes, int, int, int]]:
    """Every box as (path like 'moov/trak/mdia/hdlr', type, start offset, header size, total size)."""
    found: list[tuple[str, bytes, int, int, int]] = []

    def walk(start: int, end: int, parent: str, depth: int) -> None:
        pos = start
        while pos + 8 <= end and depth < 12:
            size, kind = struct.unpack(">I4s", data[pos:pos + 8])
            header = 8
            if size == 1 and pos + 16 <= end:
                size, header = struct.unpack(">Q", data[pos + 8:pos + 16])[0], 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                break
            name = f"{parent}/{kind.decode('latin-1')}" if parent else kind.decode("latin-1")
            found.append((name, kind, pos, header, size))
            body = pos + header
            if kind == b"meta":
                body += 4  # a full box: version and flags come first
            if kind in _CONTAINERS:
                walk(body, pos + size, name, depth + 1)
            pos += size

    walk(0, len(data), "", 0)
    return found


def _ffmpeg(args: list[str], src: Path, dst: Path) -> None:
    done = subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not dst.is_file():
        dst.unlink(missing_ok=True)
        raise StudyError(f"could not make an anonymous copy of {src.name}: {done.stderr.strip()[-400:]}")


def mp4_boxes(path: str | Path) -> list[tuple[str, bytes, int]]:
    """Every box of an MP4 as (path like 'moov/trak/mdia/hdlr', type, payload size), walked from the file's bytes."""
    return [(name, kind, size - header) for name, kind, _, header, size in _walk(Path(path).read_bytes())]


def scrub(path: str | Path) -> None:
    """What ffmpeg writes even when told not to, blanked in place without moving a byte (the sample offsets stay
    right): a `udta` box (an empty tag list) becomes a zero-filled `free` box, handler names become empty."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    for _, kind, start, header, size in _walk(bytes(data)):
        if kind == b"udta":
            data[start + 4:start + 8] = b"free"
            data[start + header:start + size] = bytes(size - header)
        elif kind == b"hdlr" and size - header > 24:  # version/flags, pre_defined, type, 3 x reserved, then the name
            data[start + header + 24:start + size] = bytes(size - header - 24)
    path.write_bytes(bytes(data))


def handler_names(path: str | Path) -> list[str]:
    """The names in the hdlr boxes (ffmpeg writes e.g. 'VideoHandler' unless told otherwise)."""
    data = Path(path).read_bytes()
    names = []
    for match in re.finditer(rb"hdlr", data):
        body = data[match.end():match.end() + 200]
        # version/flags (4), pre_defined (4), handler_type (4), reserved (12), then a name up to NUL
        name = body[24:].split(b"\x00", 1)[0]
        names.append(name.decode("utf-8", "replace"))
    return names


def check_clean(path: str | Path, forbidden: list[str] = ()) -> list[str]:
    """What in the file could tell where it came from ([] when nothing): tag boxes, handler names, encoder marks,
    and any of `forbidden` of MIN_SCAN characters or more (case-insensitive, as UTF-8 or UTF-16 text)."""
    path = Path(path)
    problems = [f"box {name}" for name, kind, size in mp4_boxes(path) if kind in _TAG_BOXES]
    problems += [f"handler name {name!r}" for name in handler_names(path) if name.strip()]
    data = path.read_bytes()
    lower = data.lower()
    for mark in ENCODER_MARKS:
        if mark.lower() in lower:
            problems.append(f"encoder mark {mark.decode()!r}")
    for text in forbidden:
        text = str(text).strip()
        if len(text) < MIN_SCAN:  # shorter strings occur by chance in compressed pixels; no text box is left anyway
            continue
        for encoded in (text.lower().encode(codec) for codec in ("utf-8", "utf-16-le", "utf-16-be")):
            if encoded in lower:
                problems.append(f"the text {text!r}")
                break
    return problems
