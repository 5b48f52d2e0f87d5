"""What a visitor may download: copies of one run's video, cover and run.json, in a folder of their own.

The studio never hands the web server a path inside POPCORN_HOME (where the SQLite store, its WAL and every visitor's
runs live) or the cache (GGUF, indexes). `publish(record)` copies the run's visitor-facing files into
<serve root>/<128 random bits>/, remembers who they were handed to (`holder_of`), and returns those paths; the web
layer serves only those, to that holder. The public run.json names files, not the server's folders. The same holder
asking for the same version of a run again (a History click, over and over) gets the same folder, not a new copy.
Folders older than a day are removed as new ones are made.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path


KEEP_SECONDS = 24 * 3600
FILES = {"video": "video.mp4", "cover": "cover.png"}


_ROOT: list[Path] = []
_HOLDERS: dict[str, str] = {}  # folder token -> who may fetch it (this process's hand-outs)
_FOLDERS: dict[tuple, str] = {}  # (holder, run id, the record's last update) -> folder token
_LOCK = threading.Lock()


def set_root(path: str | Path) -> None:
    """Where copies are made (the web layer puts it inside the folder its file route serves from)."""
    _ROOT[:] = [Path(path)]


def serve_root() -> Path:
    root = _ROOT[0] if _ROOT else Path(tempfile.gettempdir()) / "popcorn-serve"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    return root


def holder_of(path: str | Path) -> str | None:
    """Who may fetch `path`: the holder its folder was handed to; None when it is no hand-out of this process."""
    try:
        relative = Path(path).resolve().relative_to(serve_root().resolve())
    except ValueError:
        return None
    if len(relative.parts) != 2:
        return None
    with _LOCK:
        return _HOLDERS.get(relative.parts[0])


def _sweep(root: Path, now: float) -> None:
    for folder in root.iterdir():
        try:
            if now - folder.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)
                with _LOCK:
                    _HOLDERS.pop(folder.name, None)
                    for key in [k for k, token in _FOLDERS.items() if token == folder.name]:
                        del _FOLDERS[key]
        except OSError:
            pass


def public_record(value):
    """run.json for the visitor: paths of files on this server become file names; who made it is left out."""
    if isinstance(value, dict):
        return {k: public_record(v) for k, v in value.items() if k not in ("visitor", "artifacts")}
    if isinstance(value, list):
        return [public_record(v) for v in value]
    if isinstance(value, str) and value.startswith("/") and len(value) < 4096 and "\n" not in value:
        try:
            if Path(value).exists():
                return Path(value).name
        except (OSError, ValueError):
            pass
    return value


def publish(record: dict, holder: str) -> dict[str, str]:
    """Copies of the run's video, cover and a public run.json in a fresh folder that only `holder` may fetch:
    {"video", "cover", "run_json"} (a kind is missing when the run has no such file)."""
    root = serve_root()
    now = time.time()
    _sweep(root, now)
    key = (str(holder or ""), str(record.get("id", "")), record.get("updated"))
    with _LOCK:
        token = _FOLDERS.get(key) if key[1] and key[2] is not None else None
    if token and (root / token / "run.json").is_file():  # handed to this holder already: the same copies
        os.utime(root / token)  # kept a day from the last hand-out
        names = {"run_json": "run.json", **FILES}
        return {kind: str(root / token / name) for kind, name in names.items() if (root / token / name).is_file()}
    token = secrets.token_hex(16)
    folder = root / token
    folder.mkdir(mode=0o700)
    with _LOCK:
        _HOLDERS[token] = key[0]
    out = {}
    video = record.get("video") or {}
    for kind, name in FILES.items():
        source = video.get(kind)
        if source and Path(source).is_file():
            out[kind] = str(shutil.copyfile(source, folder / name))
    (folder / "run.json").write_text(json.dumps(public_record(record), indent=2, ensure_ascii=False), encoding="utf-8")
    out["run_json"] = str(folder / "run.json")
    with _LOCK:
        _FOLDERS[key] = token
    return out
