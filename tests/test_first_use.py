"""First use: the GGUF joined by one streaming pass that hashes as it copies, and the prebuilt cache (verified against
its sha256 manifest before use; anything wrong -> the local build). The hub download is the only thing replaced, by a
local folder, at its boundary (huggingface_hub.snapshot_download)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from popcorn import config
from popcorn.serve import prebuilt
from popcorn.retrieval.corpus import load_corpus, load_raw_dir  # load_corpus: the retrieval part the studio packs
from popcorn.llm import gguf
from popcorn.popularity import evaluate, predictor as predictor_module, write_raw_dir


# ------------------------------------------------------------------------------------------------ GGUF streaming


def test_copy_hashing_writes_the_concatenation_and_its_sha256_in_one_pass(tmp_path):
    rng = np.random.default_rng(0)
    parts = []
    for i, size in enumerate((10_000, 1, 25_003, 0, 4_096)):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        parts.append(path)
    whole = b"".join(p.read_bytes() for p in parts)
    seen = []
    with open(tmp_path / "out.gguf", "wb", buffering=0) as out:  # chunks far smaller than the parts: buffers reused
        done, digest = gguf.copy_hashing(parts, out, total=len(whole), progress=seen.append, chunk=1_000)
    assert done == len(whole)
    assert (tmp_path / "out.gguf").read_bytes() == whole
    assert digest == hashlib.sha256(whole).hexdigest()
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_copy_hashing_reads_each_byte_once(tmp_path, monkeypatch):
    path = tmp_path / "part.bin"
    path.write_bytes(os.urandom(50_000))
    opened = []
    real_open = open

    def counting_open(file, mode="r", *args, **kwargs):
        if Path(file) == path:
            opened.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    with real_open(tmp_path / "out", "wb") as out:
        gguf.copy_hashing([path], out, chunk=4096)
    assert opened == ["rb"]  # read once: no second pass to hash


# ------------------------------------------------------------------------------------------------ prebuilt cache


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory, data_dir) -> Path:
    """200 real MicroLens videos as a raw folder: a corpus of its own (its own fingerprint)."""
    table = load_raw_dir(data_dir).table.iloc[:200]
    return write_raw_dir(table, tmp_path_factory.mktemp("first_use_corpus"))


@pytest.fixture(autouse=True)
def _fresh_process_state():
    prebuilt._TRIED.clear()
    predictor_module._PREDICTORS.clear()
    yield
    prebuilt._TRIED.clear()
    predictor_module._PREDICTORS.clear()


@pytest.fixture(scope="module")
def bundle(small_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A cache built locally for the small corpus, packed as a hub repository would hold it: (repo folder, cache)."""
    cache = tmp_path_factory.mktemp("built_cache")
    repo = tmp_path_factory.mktemp("hub_repo")
    previous = os.environ.get("POPCORN_CACHE_DIR")
    os.environ["POPCORN_CACHE_DIR"] = str(cache)
    try:
        from popcorn.retrieval.embed import get_embedder, title_vectors

        corpus = load_corpus(small_dir)
        predictor_module.train(small_dir)
        title_vectors(corpus.table["title"].tolist(), corpus.fingerprint, get_embedder("packaged:all-MiniLM-L6-v2"))
        prebuilt.pack(corpus, repo)
    finally:
        os.environ.pop("POPCORN_CACHE_DIR") if previous is None else os.environ.__setitem__("POPCORN_CACHE_DIR",
                                                                                            previous)
        predictor_module._PREDICTORS.clear()
    return repo, cache


def _copy_repo(repo: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(repo, dest)
    return dest


def _no_training(*args, **kwargs):
    raise AssertionError("trained locally although a verified prebuilt checkpoint was there")


def test_pack_writes_a_manifest_of_sizes_and_sha256(bundle, small_dir):
    repo, cache = bundle
    fingerprint = load_corpus(small_dir).fingerprint
    manifest = json.loads((repo / fingerprint / prebuilt.MANIFEST).read_text())
    assert manifest["fingerprint"] == fingerprint
    names = set(manifest["files"])
    assert any(n.startswith("popularity/") and n.endswith(".joblib") for n in names)
    assert any(n.startswith("embeddings/") for n in names)
    for name, entry in manifest["files"].items():
        data = (cache / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_verified_bundle_fills_the_cache_and_the_predictor_loads_without_training(bundle, small_dir, tmp_path,
                                                                                  monkeypatch):
    repo, built = bundle
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", str(repo))
    monkeypatch.setattr(predictor_module, "train", _no_training)
    pulled = predictor_module.get_predictor(small_dir)
    name = next(p.name for p in (built / "popularity").glob("*.joblib"))
    assert (tmp_path / "cache" / "popularity" / name).read_bytes() == (built / "popularity" / name).read_bytes()
    reference = predictor_module.Predictor.load(built / "popularity" / name)
    titles = ["King of Glory pentakill # game", "a quiet afternoon tea", "cat sees snow for the first time"]
    assert np.allclose(pulled.predict_labels(titles), reference.predict_labels(titles))
    assert evaluate(small_dir, pulled)["n"] == 200


def test_a_single_wrong_byte_rejects_the_bundle_and_the_local_build_serves(bundle, small_dir, tmp_path, monkeypatch):
    repo = _copy_repo(bundle[0], tmp_path / "repo")
    fingerprint = load_corpus(small_dir).fingerprint
    checkpoint = next((repo / fingerprint / "popularity").glob("*.joblib"))
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0x01
    checkpoint.write_bytes(bytes(data))
    with pytest.raises(prebuilt.BundleError, match="sha256"):
        prebuilt.verified_files(repo / fingerprint, fingerprint)

    cache = tmp_path / "cache"
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(cache))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", str(repo))
    trained = []
    real_train = predictor_module.train
    monkeypatch.setattr(predictor_module, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    local = predictor_module.get_predictor(small_dir)
    assert trained == [1]  # the fall-back ran
    assert not (cache / "embeddings").exists()  # nothing of the refused bundle was copied
    saved = next((cache / "popularity").glob("*.joblib")).read_bytes()
    assert saved != bytes(data)
    assert local.predict_labels(["a quiet afternoon tea"]).shape == (1,)


def test_bundles_for_another_corpus_or_with_unsafe_paths_are_refused(bundle, small_dir, tmp_path):
    fingerprint = load_corpus(small_dir).fingerprint
    repo = _copy_repo(bundle[0], tmp_path / "repo")
    manifest_path = repo / fingerprint / prebuilt.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    with pytest.raises(prebuilt.BundleError, match="corpus"):
        prebuilt.verified_files(repo / fingerprint, "0123456789abcdef")
    name, entry = next(iter(manifest["files"].items()))
    for unsafe in ("../outside.joblib", "/etc/passwd", "models/x.gguf"):
        bad = dict(manifest, files={unsafe: entry})
        manifest_path.write_text(json.dumps(bad))
        with pytest.raises(prebuilt.BundleError, match="path"):
            prebuilt.verified_files(repo / fingerprint, fingerprint)
    manifest_path.write_text(json.dumps(dict(manifest, files={**manifest["files"], "popularity/gone.joblib": entry})))
    with pytest.raises(prebuilt.BundleError, match="missing"):
        prebuilt.verified_files(repo / fingerprint, fingerprint)


def test_online_the_hub_is_asked_for_this_corpus_bundle_only(bundle, small_dir, tmp_path, monkeypatch):
    import huggingface_hub

    repo, _ = bundle
    fingerprint = load_corpus(small_dir).fingerprint
    asked = []

    def snapshot_download(repo_id, repo_type=None, allow_patterns=None, **kwargs):
        asked.append((repo_id, repo_type, allow_patterns))
        return str(repo)

    for name in ("POPCORN_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", "popcorn-studio/prebuilt-cache")
    assert prebuilt.install(load_corpus(small_dir)) is True
    assert asked == [("popcorn-studio/prebuilt-cache", "dataset", [f"{fingerprint}/*"])]
    assert list((tmp_path / "cache" / "popularity").glob("*.joblib"))


def test_no_network_or_offline_means_the_local_build(small_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    def unreachable(**kwargs):
        calls.append(kwargs)
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", "popcorn-studio/prebuilt-cache")
    corpus = load_corpus(small_dir)
    monkeypatch.setenv("POPCORN_OFFLINE", "1")
    assert prebuilt.install(corpus) is False and calls == []  # offline: never asked
    prebuilt._TRIED.clear()
    monkeypatch.delenv("POPCORN_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert prebuilt.install(corpus) is False and len(calls) == 1  # asked once, failed: the local build serves
    assert prebuilt.install(corpus) is False and len(calls) == 1  # and not asked again in this process
    assert not (config.cache_dir() / "popularity").exists()


def test_malformed_manifest_entries_are_refused_not_raised_past_install(bundle, small_dir, tmp_path, monkeypatch):
    fingerprint = load_corpus(small_dir).fingerprint
    repo = _copy_repo(bundle[0], tmp_path / "repo")
    manifest_path = repo / fingerprint / prebuilt.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    name, entry = next(iter(manifest["files"].items()))
    for bad, why in (({name: "not an entry"}, "entry"), ({name: dict(entry, size=str(entry["size"]))}, "entry"),
                     ({name: {"size": entry["size"]}}, "entry"),
                     ({f"{name.split('/')[0]}/..\\..\\outside.joblib": entry}, "unsafe")):
        manifest_path.write_text(json.dumps(dict(manifest, files=bad)))
        with pytest.raises(prebuilt.BundleError, match=why):
            prebuilt.verified_files(repo / fingerprint, fingerprint)
    manifest_path.write_text(json.dumps([manifest]))
    with pytest.raises(prebuilt.BundleError, match="not a JSON object"):
        prebuilt.verified_files(repo / fingerprint, fingerprint)
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", str(repo))
    assert prebuilt.install(load_corpus(small_dir)) is False  # refused, and install itself does not raise
    assert not (tmp_path / "cache" / "popularity").exists()


def test_a_failed_copy_leaves_no_partial_file_and_falls_back(bundle, small_dir, tmp_path, monkeypatch):
    import shutil

    repo, _ = bundle
    cache = tmp_path / "cache"
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(cache))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", str(repo))

    def disk_full(source, out, length=0):
        out.write(source.read(100))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    said = []
    assert prebuilt.install(load_corpus(small_dir), say=said.append) is False
    assert said and "No space left" in said[-1]
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no temporary or truncated file left behind


def test_a_same_sized_but_different_cache_file_is_replaced_by_the_verified_one(bundle, small_dir, tmp_path,
                                                                              monkeypatch):
    repo, built = bundle
    cache = tmp_path / "cache"
    name = next(p.name for p in (built / "popularity").glob("*.joblib"))
    good = (built / "popularity" / name).read_bytes()
    stale = bytearray(good)
    stale[len(stale) // 2] ^= 0x01
    (cache / "popularity").mkdir(parents=True)
    (cache / "popularity" / name).write_bytes(bytes(stale))
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(cache))
    monkeypatch.setenv("POPCORN_PREBUILT_REPO", str(repo))
    assert prebuilt.install(load_corpus(small_dir)) is True
    assert (cache / "popularity" / name).read_bytes() == good


def test_copy_hashing_reports_a_failed_write_as_itself(tmp_path):
    """A write that fails midway raises its own error (the mapped source is released only once its hash is done)."""
    path = tmp_path / "part.bin"
    path.write_bytes(os.urandom(300_000))

    class Full:
        written = 0

        def write(self, data):
            if self.written > 100_000:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return len(data)

    with pytest.raises(OSError, match="No space left"):
        gguf.copy_hashing([path], Full(), chunk=50_000)


def test_copy_hashing_finishes_itself_where_the_kernel_copy_stops_midway(tmp_path, monkeypatch):
    """Where copy_file_range copies part of a source and then fails (another filesystem, an old kernel), the rest is
    written from the map: the output is still the exact concatenation, never a byte twice."""
    parts = []
    for i, size in enumerate((70_000, 33_333)):
        path = tmp_path / f"p{i}.bin"
        path.write_bytes(os.urandom(size))
        parts.append(path)
    real, calls = os.copy_file_range, []

    def flaky(src, dst, count, offset_src=None, *args):
        calls.append(count)
        if len(calls) == 2:
            raise OSError(18, "Invalid cross-device link")
        return real(src, dst, min(count, 12_345), offset_src, *args)

    monkeypatch.setattr(os, "copy_file_range", flaky)
    whole = b"".join(p.read_bytes() for p in parts)
    with open(tmp_path / "out.gguf", "wb", buffering=0) as out:
        done, digest = gguf.copy_hashing(parts, out, chunk=50_000)
    assert done == len(whole) and (tmp_path / "out.gguf").read_bytes() == whole
    assert digest == hashlib.sha256(whole).hexdigest() and len(calls) == 2
