"""Embedding model choice: 'auto' decides once per process, not on every call (it may probe the network)."""

from popcorn.retrieval import embed


def test_auto_resolution_probes_the_hub_once(monkeypatch):
    calls = []
    monkeypatch.setattr(embed, "_hub_reachable", lambda: calls.append(1) or False)
    monkeypatch.setenv("POPCORN_EMBED_MODEL", "auto")
    for name in ("POPCORN_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    embed._resolve_auto.cache_clear()
    try:
        assert embed.resolve_model_name() == embed.PACKAGED  # packaged model installed, hub unreachable
        assert embed.resolve_model_name() == embed.PACKAGED
        assert len(calls) == 1
        monkeypatch.setenv("POPCORN_OFFLINE", "1")
        assert embed.resolve_model_name() == embed.PACKAGED and len(calls) == 1  # offline never probes
        assert embed.resolve_model_name("some/model") == "some/model"
    finally:
        embed._resolve_auto.cache_clear()


def test_corpus_batches_through_onnx_match_pytorch_and_keep_the_order(corpus, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp32")
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    titles = corpus.table["title"].tolist()[:300]  # >= ONNX_MIN_TEXTS: the batched ONNX path; lengths vary
    fast = embedder.encode_many(titles)
    assert embedder.fast_encoder(), "onnxruntime is a requirement: the ONNX encoder should serve"
    reference = embedder.encode(titles)
    assert fast.shape == reference.shape == (300, embedder.dim)
    assert float(np.min(np.sum(fast * reference, axis=1))) > 0.9999  # the same vectors, row for row
    assert np.allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)


def test_title_vectors_reuse_rows_already_embedded_under_another_fingerprint(corpus, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    titles = corpus.table["title"].tolist()[:120]
    whole = embed.title_vectors(titles, "whole", embedder)
    asked = []
    real = embedder.encode_many
    monkeypatch.setattr(embedder, "encode_many", lambda texts: asked.append(list(texts)) or real(texts))
    subset = [titles[i] for i in (7, 3, 99)] + ["a title never embedded before"]
    part = embed.title_vectors(subset, "part", embedder)
    assert asked == [["a title never embedded before"]]  # only the new text was encoded
    assert np.array_equal(part[:3], whole[[7, 3, 99]])
    assert (tmp_path / "embeddings" / f"part-{embedder.cache_key}.keys.npz").exists()


def test_title_vectors_never_reuse_rows_of_another_model_whose_file_name_looks_alike(corpus, tmp_path, monkeypatch):
    """A fine-tune's cache key can end in "-" + this model's (org "my-sentence-transformers" vs
    "sentence-transformers"): its files match this model's pattern and have the same width, but other vectors."""
    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    titles = corpus.table["title"].tolist()[:40]
    folder = tmp_path / "embeddings"
    folder.mkdir()
    lookalike = folder / f"fp-my-{embedder.cache_key}.npy"
    np.save(lookalike, np.ones((len(titles), embedder.dim), dtype=np.float32))
    np.savez(embed._keys_path(lookalike), keys=embed.title_keys(titles), model=np.array(f"my-{embedder.name}"))
    asked = []
    real = embedder.encode_many
    monkeypatch.setattr(embedder, "encode_many", lambda texts: asked.append(len(texts)) or real(texts))
    vectors = embed.title_vectors(titles, "part", embedder)
    assert asked == [len(titles)]  # all embedded here: none taken from the look-alike
    assert np.allclose(vectors, embedder.encode(titles), atol=1e-5)


def test_corpus_precision_takes_bf16_only_where_the_cpu_multiplies_it_and_names_a_bad_setting(monkeypatch):
    import pytest

    from popcorn.types import StageError

    monkeypatch.delenv("POPCORN_CORPUS_PRECISION", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(embed, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "amx_tile", "amx_bf16"}))
    assert embed.corpus_precision() == "bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN told to stay below AMX (a plain CPU emulated)
    assert embed.corpus_precision() == "fp32"  # int8 is asked for, never picked: it moves routes and references
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert embed.corpus_precision() == "bf16"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(embed, "_cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert embed.corpus_precision() == "fp32"  # bf16 instructions without AMX tiles: no faster than ONNX fp32
    monkeypatch.setattr(embed, "_cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert embed.corpus_precision() == "fp32"
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "int8")
    assert embed.corpus_precision() == "int8"
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "BF16")
    assert embed.corpus_precision() == "bf16"
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp32")
    assert embed.corpus_precision() == "fp32"
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp16")
    with pytest.raises(StageError) as err:
        embed.corpus_precision()
    assert err.value.stage == "retrieve" and "fp16" in str(err.value) and "int8" in err.value.hint


def test_a_corpus_in_int8_keeps_the_order_and_most_neighbours_of_fp32(corpus, tmp_path, monkeypatch):
    """int8 (POPCORN_CORPUS_PRECISION=int8: faster on a CPU without AMX) moves a vector by ~1e-2: the order of the texts is kept,
    vectors stay unit length and close to fp32's, and most of each title's nearest titles stay (the price is stated
    by bench/corpus_precision.py); fp32 stays the exact path beside it."""
    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))  # the quantized model is built here, from the export
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "int8")
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    embedder._fast = None  # this cache folder's ONNX encoder (the export and its quantized copy are made here)
    try:
        titles = corpus.table["title"].tolist()[1000:1600]  # lengths vary, so batches are reordered
        quantized = embedder.encode_many(titles)
        assert embedder.fast_encoder() and embedder._fast.int8_session() is not None
        assert list((tmp_path / "onnx").glob("*.int8.onnx")), "the quantized model is kept on disk"
        full = embedder.encode(titles)  # PyTorch float32, in the given order
        assert quantized.shape == full.shape == (600, embedder.dim) and quantized.dtype == np.float32
        assert np.allclose(np.linalg.norm(quantized, axis=1), 1.0, atol=1e-5)
        cosine = np.sum(quantized * full, axis=1)
        assert cosine.min() > 0.97 and np.median(cosine) > 0.99
        assert np.abs(quantized - full).max() > 1e-3  # really quantized: bf16 moves a vector by ~1e-4, fp32 ~1e-6
        near_full = np.argsort(-(full @ full.T), axis=1)[:, 1:11]
        near_int8 = np.argsort(-(quantized @ quantized.T), axis=1)[:, 1:11]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near_full, near_int8)])
        assert overlap > 0.8 and np.mean(near_full[:, 0] == near_int8[:, 0]) > 0.8
        monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp32")
        assert np.sum(embedder.encode_many(titles) * full, axis=1).min() > 0.9999
    finally:
        embedder._fast = None  # the next test's cache folder builds its own


def test_a_corpus_in_bf16_keeps_the_order_and_the_neighbours_of_fp32(corpus, monkeypatch):
    """bf16 moves a vector by ~1e-4: the order of the texts is kept, and each title's nearest titles (what the
    references and the router's vote are) stay the same but for near-ties."""
    import numpy as np

    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "bf16")
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    titles = corpus.table["title"].tolist()[1000:1600]  # lengths vary, so batches are reordered
    half = embedder.encode_many(titles)
    full = embedder.encode(titles)  # PyTorch float32, in the given order
    assert half.shape == full.shape == (600, embedder.dim) and half.dtype == np.float32
    assert np.allclose(np.linalg.norm(half, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(half * full, axis=1)
    assert cosine.min() > 0.9995 and np.median(cosine) > 0.9999
    assert np.abs(half - full).max() > 1e-5  # really bfloat16: an fp32 path gives the same vectors to ~1e-6
    near_full = np.argsort(-(full @ full.T), axis=1)[:, 1:11]
    near_half = np.argsort(-(half @ half.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near_full, near_half)])
    assert overlap > 0.97 and np.mean(near_full[:, 0] == near_half[:, 0]) > 0.95
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp32")  # and fp32 stays the exact path
    assert np.sum(embedder.encode_many(titles) * full, axis=1).min() > 0.9999


SAVED_QUERY = """
import json, sys
import numpy as np
from popcorn.retrieval import embed
embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
texts = json.loads(sys.argv[1])
vectors = np.stack([embedder.encode_one(t) for t in texts])
print(json.dumps({"vectors": vectors.tolist(), "dim": embedder.dim, "loaded": embedder.loaded is not None,
                  "heavy": [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]}))
"""


def test_a_query_in_a_fresh_process_is_encoded_from_the_saved_onnx_encoder_without_pytorch(corpus, tmp_path,
                                                                                          monkeypatch):
    """Once an ONNX encoder was exported and checked against PyTorch, its tokenizer and probe vector are kept beside
    it; a new process encodes queries from them alone (no torch, transformers or sentence-transformers import) and
    gets PyTorch's vectors; the saved tokenizer gives the transformers tokenizer's ids (CJK, emoji, a text past the
    model's 256 tokens); a replaced ONNX file is not trusted (the encoder is built and checked again)."""
    import json
    import subprocess
    import sys

    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    embedder = embed.Embedder("packaged:all-MiniLM-L6-v2")  # a fresh one: this cache folder's export
    assert embedder.fast_encoder()
    onnx = embed.onnx_path(embedder)
    assert embed._meta_path(onnx).exists() and embed._tokenizer_path(onnx).exists()
    texts = ["Create a video showcasing street food in Bangkok", "曼谷街头美食 🍜", "food " * 600, ""] + \
        corpus.table["title"].tolist()[:200]
    saved = embed._OnnxQueryEncoder.saved(embedder)
    transformer = embed._mean_pooled_transformer(embedder.model)
    hf = transformer.tokenizer(texts, truncation=True, max_length=saved.max_length)["input_ids"]
    assert saved.tokenizer(texts)["input_ids"] == hf
    env = {**__import__("os").environ, "POPCORN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SAVED_QUERY, json.dumps(texts[:4])], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["loaded"] is False and out["dim"] == embedder.dim
    reference = embedder.encode(texts[:4])
    assert float((np.asarray(out["vectors"], dtype=np.float32) * reference).sum(axis=1).min()) > 0.9999
    onnx.write_bytes(onnx.read_bytes())  # the same bytes, but another file than the one checked
    assert embed._OnnxQueryEncoder.saved(embedder) is None


def test_the_query_encoder_is_prepared_in_a_helper_process_beside_other_work(tmp_path, monkeypatch):
    """A first score starts the ONNX query encoder's build in a helper process while the predictor trains; this
    process then finds it saved and checked, and encodes queries without loading sentence-transformers. Where one is
    saved already, no helper starts."""
    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embed, "_LOADED", {})
    assert embed.prepare_query_encoder("packaged:all-MiniLM-L6-v2") is True
    assert embed.prepare_query_encoder("packaged:all-MiniLM-L6-v2") is False  # one helper at a time
    embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
    vector = embedder.encode_one("street food at night in Bangkok")  # waits for the helper
    assert embedder.loaded is None, "the saved encoder serves: the model was not loaded in this process"
    assert embedder._fast and embedder._fast.dim == vector.shape[0] == embedder.dim
    assert not embed._PREPARING
    monkeypatch.setattr(embed, "_LOADED", {})
    assert embed.prepare_query_encoder("packaged:all-MiniLM-L6-v2") is False  # saved: nothing to prepare


COLD_FIRST_USE = """
import json, sys
import numpy as np
from popcorn.retrieval import embed
from popcorn.retrieval.corpus import load_corpus
embedder = embed.get_embedder("packaged:all-MiniLM-L6-v2")
titles = load_corpus().table["title"].tolist()[:300]
dim = embedder.dim
many = embedder.encode_many(titles)  # a corpus' worth (fp32 ONNX on a CPU without bf16 matrix units)
few = embedder.encode_cached(["Game", "Delicacy"])  # a handful
one = embedder.encode_one("street food at night in Bangkok")
print(json.dumps({"dim": dim, "loaded": embedder.loaded is not None, "few": few.tolist(), "one": one.tolist(),
                  "many": many[:5].tolist(), "onnx": embed.onnx_path(embedder).exists(),
                  "heavy": [m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules]}))
"""


def test_a_first_use_on_an_empty_cache_embeds_without_importing_pytorch(corpus, tmp_path, monkeypatch):
    """On an empty cache, a process's first titles, a handful of texts and a query are embedded through the ONNX
    graph written from the packaged model's weights (popcorn/retrieval/onnx_bert.py): no torch, transformers or
    sentence-transformers import (~8 CPU-s on 2 cores), and sentence-transformers' vectors."""
    import json
    import subprocess
    import sys

    import numpy as np

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("POPCORN_CORPUS_PRECISION", "fp32")  # the path of every CPU without AMX-BF16
    env = {**__import__("os").environ, "POPCORN_CACHE_DIR": str(tmp_path), "POPCORN_CORPUS_PRECISION": "fp32"}
    done = subprocess.run([sys.executable, "-c", COLD_FIRST_USE], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["loaded"] is False and out["onnx"] and out["dim"] == 384
    embedder = embed.Embedder("packaged:all-MiniLM-L6-v2")  # here PyTorch is the reference
    titles = corpus.table["title"].tolist()[:5]
    for got, texts in ((out["many"], titles), (out["few"], ["Game", "Delicacy"]),
                       ([out["one"]], ["street food at night in Bangkok"])):
        assert np.abs(np.asarray(got, dtype=np.float32) - embedder.encode(texts)).max() < 1e-5


def test_the_graph_written_from_the_weights_gives_sentence_transformers_vectors(corpus, tmp_path, monkeypatch):
    """Texts of every kind (CJK, emoji, a 600-word text cut at the model's 256 tokens, one word, an empty one, 200
    corpus titles): the written graph's vectors equal sentence-transformers' to 1e-5; it is saved as the PyTorch
    export is (a later process loads it: `saved`), and its products carry the PyTorch export's names, by which int8
    quantization leaves each layer's FFN output in fp32."""
    import numpy as np
    import onnx

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    embedder = embed.Embedder("packaged:all-MiniLM-L6-v2")
    written = embed._OnnxQueryEncoder.written(embedder)
    assert written is not None and written.dim == 384 and embedder.loaded is None
    texts = ["Create a video showcasing street food in Bangkok", "曼谷街头美食 🍜", "food " * 600, "hi", ""] + \
        corpus.table["title"].tolist()[:200]
    assert np.abs(written.encode_many(texts) - embedder.encode(texts)).max() < 1e-5
    assert np.abs(written.encode(texts[1]) - embedder.encode(texts[1:2])[0]).max() < 1e-5
    assert embed._OnnxQueryEncoder.saved(embed.Embedder(embedder.name)) is not None
    names = [n.name for n in onnx.load(str(embed.onnx_path(embedder))).graph.node if n.op_type == "MatMul"]
    ffn_out = [n for n in names if "/output/dense/" in n and "attention" not in n]
    assert len(ffn_out) == 6 and len([n for n in names if "/attention/output/dense/" in n]) == 6


def test_a_written_graph_that_fails_its_probe_is_removed_and_pytorch_exports(tmp_path, monkeypatch):
    import numpy as np

    from popcorn.retrieval import onnx_bert

    monkeypatch.setenv("POPCORN_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(onnx_bert, "forward", lambda folder, ids, loaded=None: np.full(384, 384 ** -0.5, np.float32))
    embedder = embed.Embedder("packaged:all-MiniLM-L6-v2")
    assert embed._OnnxQueryEncoder.written(embedder) is None
    assert not embed.onnx_path(embedder).exists()  # nothing left for the PyTorch path to trust
    assert embedder.fast_encoder() and embedder.loaded is not None  # exported from PyTorch and checked instead
    reference = embedder.encode(["street food at night in Bangkok"])[0]
    assert float(embedder.encode_one("street food at night in Bangkok") @ reference) > 0.9999


def test_only_the_stack_the_graph_writer_knows_is_written(tmp_path):
    import json
    import shutil

    from popcorn.retrieval import onnx_bert

    source = embed.packaged_model_dir()
    folder = tmp_path / "model"
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors"))
    (folder / "model.safetensors").symlink_to(source / "model.safetensors")
    assert onnx_bert.layout(folder)["max_length"] == 256
    pooling = folder / "1_Pooling" / "config.json"
    cls = {**json.loads(pooling.read_text()), "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    pooling.write_text(json.dumps(cls))
    assert onnx_bert.layout(folder) is None  # CLS pooling: the PyTorch export serves
    shutil.copy(source / "1_Pooling" / "config.json", pooling)
    config = folder / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "position_embedding_type": "relative_key"}))
    assert onnx_bert.layout(folder) is None
    assert onnx_bert.layout(tmp_path / "nothing") is None
