"""A prebuilt cache: the predictor checkpoint, title embeddings, FAISS indexes and ONNX encoder of one corpus, pulled
from a hub repository instead of being built on this machine.

    POPCORN_PREBUILT_REPO=owner/name        a Hugging Face dataset repository (or a local folder: a mirror)

A bundle is the folder `<corpus fingerprint>/` of that repository:

    <fingerprint>/manifest.json     {"version": 1, "fingerprint": ..., "files": {"<path in the cache>": {"size", "sha256"}}}
    <fingerprint>/<path in the cache> ...   e.g. popularity/<fp>-<settings>.joblib, embeddings/<fp>-<model>.npy

`install(corpus)` downloads the bundle of this corpus' fingerprint (nothing else), checks every file's size and
sha256 against the manifest, and only then copies the files into POPCORN_CACHE_DIR (each through a temporary name and
a rename). A missing repository, no network, a bundle for another corpus, an unsafe path or a single wrong byte leaves
the cache untouched and the caller builds locally, as it would without this module. Offline (POPCORN_OFFLINE) or with
no repository set it does nothing. `pack(corpus, folder)` writes a bundle from the local cache (to upload).

The manifest guards against corrupt or partial downloads, not against a hostile repository: a checkpoint is a pickle,
so name only a repository you trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Callable

from popcorn import config

log = logging.getLogger("popcorn.serve.prebuilt")

MANIFEST = "manifest.json"
VERSION = 1
CACHE_PARTS = ("popularity", "embeddings", "retrieval", "onnx")  # the cache folders a bundle may fill

Say = Callable[[str], None]


class BundleError(Exception):
    """A bundle that must not be used (the message says why); the caller falls back to the local build."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- pulling


def download(repo: str, fingerprint: str) -> Path | None:
    """The folder holding `<fingerprint>/` of `repo`: the folder itself when `repo` is a local directory, else the
    hub snapshot of just that bundle (huggingface_hub's cache). None when there is no such bundle or no network."""
    local = Path(repo).expanduser()
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id=repo, repo_type="dataset", allow_patterns=[f"{fingerprint}/*"])
    except Exception as exc:  # no network, no such repository, rate limit...: the local build serves
        log.info("prebuilt cache: %s unavailable (%s)", repo, type(exc).__name__)
        return None
    return Path(folder)


def verified_files(bundle: Path, fingerprint: str) -> dict[str, Path]:
    """{path in the cache: file in the bundle} once the manifest and every file check out; BundleError otherwise."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"no readable {MANIFEST} in {bundle} ({type(exc).__name__})") from exc
    if not isinstance(manifest, dict):
        raise BundleError(f"{MANIFEST} in {bundle} is not a JSON object")
    if manifest.get("version") != VERSION:
        raise BundleError(f"manifest version {manifest.get('version')!r}, expected {VERSION}")
    if manifest.get("fingerprint") != fingerprint:
        raise BundleError(f"the bundle is for corpus {manifest.get('fingerprint')!r}, not {fingerprint!r}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError("the manifest lists no files")
    out = {}
    for name, entry in files.items():
        parts = PurePosixPath(name).parts
        if (PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name or not parts
                or parts[0] not in CACHE_PARTS):  # a backslash is a separator on Windows: "onnx/..\\x" climbs
            raise BundleError(f"unsafe or unknown path in the manifest: {name!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or not isinstance(
                entry.get("sha256"), str):
            raise BundleError(f"{name}: the manifest entry is not {{\"size\": int, \"sha256\": str}}")
        path = bundle / Path(*parts)
        if not path.is_file():
            raise BundleError(f"{name} is listed but missing")
        if path.stat().st_size != entry["size"]:
            raise BundleError(f"{name} has {path.stat().st_size} bytes, the manifest says {entry['size']}")
        if sha256_of(path) != entry["sha256"]:
            raise BundleError(f"{name}: sha256 does not match the manifest")
        out[name] = path
    return out


def install(corpus, say: Say | None = None) -> bool:
    """Fill the cache from the prebuilt bundle of this corpus, if one is configured, reachable and intact.

    True when files were installed (or were for this corpus earlier in this process); False otherwise, with the
    reason logged. Never raises: the local build is always the fall-back.
    """
    repo = config.prebuilt_repo()
    if not repo:
        return False
    if config.offline() and not Path(repo).expanduser().is_dir():
        return False
    fingerprint = corpus.fingerprint
    with _LOCK:
        if fingerprint in _TRIED:
            return _TRIED[fingerprint]
        _TRIED[fingerprint] = ok = _install(repo, fingerprint, say or (lambda message: None))
        return ok


def _install(repo: str, fingerprint: str, say: Say) -> bool:
    folder = download(repo, fingerprint)
    if folder is None:
        return False
    try:
        files = verified_files(folder / fingerprint, fingerprint)
    except BundleError as exc:
        log.warning("prebuilt cache from %s not used: %s", repo, exc)
        say(f"prebuilt cache not used ({exc}): building locally")
        return False
    cache = config.cache_dir()
    try:
        for name, source in files.items():
            _copy_in(source, cache / Path(*PurePosixPath(name).parts))
    except OSError as exc:  # a full disk, a read-only cache...: every file already in place is whole (renamed)
        log.warning("prebuilt cache from %s not installed: %s", repo, exc)
        say(f"prebuilt cache not installed ({type(exc).__name__}: {exc}): building locally")
        return False
    say(f"prebuilt cache for corpus {fingerprint} installed from {repo} ({len(files)} files, sha256 verified)")
    return True


def _copy_in(source: Path, target: Path) -> None:
    """Copy a verified bundle file into the cache through a temporary name and a rename. A file already there is
    kept only if it is the same bytes (a same-sized file from an interrupted or other build is replaced)."""
    if target.is_file() and target.stat().st_size == source.stat().st_size and sha256_of(target) == sha256_of(source):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as f:
            shutil.copyfileobj(f, out, 16 << 20)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


_LOCK = threading.Lock()
_TRIED: dict[str, bool] = {}


# ------------------------------------------------------------------------------------------------------- packing


def bundle_files(corpus) -> list[str]:
    """The cache files (relative, POSIX) that belong to this corpus: everything named by its fingerprint, and the
    ONNX encoders."""
    cache = config.cache_dir()
    fingerprint = corpus.fingerprint
    names = []
    for part in CACHE_PARTS:
        root = cache / part
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(cache)
            if not path.is_file() or ".tmp" in path.name or path.name.startswith("."):
                continue
            if part == "onnx" or fingerprint in relative.parts[1]:
                names.append(relative.as_posix())
    return names


def pack(corpus, folder: str | Path) -> Path:
    """Write the bundle of this corpus from the local cache into `folder/<fingerprint>/` (upload `folder` to the
    repository). Returns the bundle folder."""
    cache = config.cache_dir()
    bundle = Path(folder) / corpus.fingerprint
    files = {}
    for name in bundle_files(corpus):
        source = cache / name
        target = bundle / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        files[name] = {"size": target.stat().st_size, "sha256": sha256_of(target)}
    if not files:
        raise BundleError(f"nothing in {cache} for corpus {corpus.fingerprint}: build the cache first")
    manifest = {"version": VERSION, "fingerprint": corpus.fingerprint, "source": corpus.source, "files": files}
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return bundle
