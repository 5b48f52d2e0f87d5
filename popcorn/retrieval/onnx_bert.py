"""The embedding model's ONNX graph written from its weights, without PyTorch.

A first plan or score on a CPU without bf16 matrix units embeds titles through ONNX Runtime in fp32, but the ONNX file
was made by `torch.onnx.export` from the sentence-transformers model: importing sentence-transformers, transformers and
PyTorch and exporting cost ~8 CPU-seconds of a ~45 s first plan on a 2-core machine (bench/RESULTS.md, First use).
For the usual stack of a sentence-transformers folder (a BERT encoder, mean pooling, L2 normalisation: the packaged
MiniLM-L6, the hub's all-MiniLM-L12-v2 once downloaded) this module lays the same computation out node by node with
`onnx.helper`, reading the weights with `safetensors` (NumPy): no PyTorch import.

Checked, never trusted: `forward` computes the same model in plain NumPy, and popcorn.retrieval.embed keeps the graph
only if its vector for a probe sentence matches (tests also compare it with sentence-transformers on many texts).
Anything else (another architecture, pooling or position embedding) returns None and the PyTorch export serves.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path

import numpy as np

OPSET = 17  # LayerNormalization is an ONNX op from 17; the PyTorch export uses 17 too
_NEG = float(np.finfo(np.float32).min)  # what transformers adds to the scores of padding positions


def layout(folder: Path | str) -> dict | None:
    """What the graph needs from a sentence-transformers folder, or None unless it is Transformer (BERT, absolute
    positions, exact GELU) -> mean Pooling -> Normalize with model.safetensors and tokenizer.json."""
    folder = Path(folder)
    try:
        modules = sorted(json.loads((folder / "modules.json").read_text(encoding="utf-8")), key=lambda m: m["idx"])
        if [m["type"].rsplit(".", 1)[-1] for m in modules] != ["Transformer", "Pooling", "Normalize"]:
            return None
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        others = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")
        if not pooling.get("pooling_mode_mean_tokens") or any(pooling.get(k) for k in others):
            return None
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if (cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu"
                or cfg.get("position_embedding_type", "absolute") != "absolute"):
            return None
        st = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
            return None
        max_positions = int(cfg.get("max_position_embeddings", 512))
        return {"layers": int(cfg["num_hidden_layers"]), "heads": int(cfg["num_attention_heads"]),
                "hidden": int(cfg["hidden_size"]), "eps": float(cfg.get("layer_norm_eps", 1e-12)),
                "max_length": min(int(st.get("max_seq_length") or max_positions), max_positions),
                "pad_token_id": int(cfg.get("pad_token_id") or 0)}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def weights(folder: Path | str) -> dict[str, np.ndarray]:
    """The BERT weights by their names inside the encoder ("embeddings.word_embeddings.weight", ...), float32."""
    from safetensors.numpy import load_file  # light (no PyTorch); installed with transformers

    raw = load_file(str(Path(folder) / "model.safetensors"))
    return {name.removeprefix("bert."): np.asarray(value, dtype=np.float32) for name, value in raw.items()
            if not name.endswith("position_ids")}


def write(folder: Path | str, path: Path, loaded: dict[str, np.ndarray] | None = None) -> None:
    """The ONNX file of the folder's model at `path` (inputs input_ids, attention_mask [batch, tokens] int64; output
    embedding [batch, hidden], L2-normalised), as the PyTorch export names them. `loaded`: weights() already read."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape, w = layout(folder), loaded if loaded is not None else weights(folder)
    heads, hidden = shape["heads"], shape["hidden"]
    head = hidden // heads
    inits, nodes = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def linear(x: str, prefix: str, out: str) -> str:  # x @ W.T + b, as torch.nn.Linear
        weight = const(f"{prefix}.weight_t", np.ascontiguousarray(w[f"{prefix}.weight"].T))
        # named as the PyTorch export names it ("/encoder/layer.0/output/dense/MatMul"): int8 quantization picks
        # the products it leaves in fp32 by these names (popcorn.retrieval.embed._quantized_model)
        product = node("MatMul", [x, weight], "/" + prefix.replace(".", "/").replace("layer/", "layer.") + "/MatMul")
        return node("Add", [product, const(f"{prefix}.bias", w[f"{prefix}.bias"])], out)

    def norm(x: str, prefix: str, out: str) -> str:
        return node("LayerNormalization", [x, const(f"{prefix}.weight", w[f"{prefix}.weight"]),
                                           const(f"{prefix}.bias", w[f"{prefix}.bias"])], out, axis=-1,
                    epsilon=shape["eps"])

    # embeddings: word + position (0..tokens-1) + token type 0, then LayerNorm
    tokens = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), const("one_index", np.array(1, np.int64))],
                  "tokens")
    positions = node("Range", [const("zero", np.array(0, np.int64)), tokens, const("one", np.array(1, np.int64))],
                     "positions")
    x = node("Add", [node("Gather", [const("word", w["embeddings.word_embeddings.weight"]), "input_ids"], "words"),
                     node("Gather", [const("pos", w["embeddings.position_embeddings.weight"]), positions], "pos_e")],
             "emb_sum")
    x = node("Add", [x, const("type0", w["embeddings.token_type_embeddings.weight"][0])], "emb_all")
    x = norm(x, "embeddings.LayerNorm", "emb")
    mask = node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    bias = node("Mul", [node("Sub", [const("one_f", np.array(1.0, np.float32)), mask], "unmasked"),
                        const("neg", np.array(_NEG, np.float32))], "mask_bias0")
    bias = node("Unsqueeze", [bias, const("axes_1_2", np.array([1, 2], np.int64))], "mask_bias")
    split = const("split_heads", np.array([0, 0, heads, head], np.int64))
    merge = const("merge_heads", np.array([0, 0, hidden], np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(head), np.float32))
    for i in range(shape["layers"]):
        p = f"encoder.layer.{i}"

        def heads_of(name: str, perm: list[int]) -> str:
            flat = linear(x, f"{p}.attention.self.{name}", f"l{i}.{name}")
            return node("Transpose", [node("Reshape", [flat, split], f"l{i}.{name}.split")], f"l{i}.{name}.t",
                        perm=perm)

        q, k, v = heads_of("query", [0, 2, 1, 3]), heads_of("key", [0, 2, 3, 1]), heads_of("value", [0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"l{i}.qk"), scale], f"l{i}.scaled"), bias],
                      f"l{i}.scores")
        context = node("MatMul", [node("Softmax", [scores], f"l{i}.probs", axis=-1), v], f"l{i}.context")
        context = node("Reshape", [node("Transpose", [context], f"l{i}.context.t", perm=[0, 2, 1, 3]), merge],
                       f"l{i}.context.merged")
        attended = linear(context, f"{p}.attention.output.dense", f"l{i}.attn_out")
        x = norm(node("Add", [attended, x], f"l{i}.attn_res"), f"{p}.attention.output.LayerNorm", f"l{i}.attn")
        inner = linear(x, f"{p}.intermediate.dense", f"l{i}.inner")
        erf = node("Erf", [node("Mul", [inner, const(f"l{i}.rsqrt2", np.array(1 / math.sqrt(2), np.float32))],
                                f"l{i}.inner_s")], f"l{i}.erf")
        gelu = node("Mul", [node("Mul", [inner, const(f"l{i}.half", np.array(0.5, np.float32))], f"l{i}.half_x"),
                            node("Add", [erf, const(f"l{i}.one_g", np.array(1.0, np.float32))], f"l{i}.erf1")],
                    f"l{i}.gelu")
        out = linear(gelu, f"{p}.output.dense", f"l{i}.ffn_out")
        x = norm(node("Add", [out, x], f"l{i}.ffn_res"), f"{p}.output.LayerNorm", f"l{i}.out")
    # mean over the real tokens, then L2-normalised (sentence-transformers' Pooling and Normalize)
    token_mask = node("Unsqueeze", [mask, const("axis_2", np.array([2], np.int64))], "mask_3d")
    axis_1 = const("axis_1", np.array([1], np.int64))
    summed = node("ReduceSum", [node("Mul", [x, token_mask], "masked"), axis_1], "summed", keepdims=0)
    count = node("Max", [node("ReduceSum", [token_mask, axis_1], "count0", keepdims=0),
                         const("min_count", np.array(1e-9, np.float32))], "count")
    pooled = node("Div", [summed, count], "pooled")
    length = node("Max", [node("ReduceL2", [pooled], "l2", axes=[-1], keepdims=1),  # axes an attribute until opset 18
                          const("min_norm", np.array(1e-12, np.float32))], "norm")
    node("Div", [pooled, length], "embedding")
    graph = helper.make_graph(
        nodes, "sentence_embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="popcorn")
    model.ir_version = 8  # read by every ONNX Runtime this project supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # writers never share one
    onnx.save(model, str(tmp))
    tmp.replace(path)


def forward(folder: Path | str, ids: list[int], loaded: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The sentence embedding of one tokenised text, computed in plain NumPy (float64) from the same weights
    (`loaded`: weights() already read): the independent reference the written graph is checked against."""
    shape, w32 = layout(folder), loaded if loaded is not None else weights(folder)
    w = {k: v.astype(np.float64) for k, v in w32.items() if not k.startswith("embeddings.word_embeddings")}
    heads, hidden = shape["heads"], shape["hidden"]
    head = hidden // heads

    def layer_norm(x, prefix):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + shape["eps"]) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def linear(x, prefix):
        return x @ w[f"{prefix}.weight"].T + w[f"{prefix}.bias"]

    n = len(ids)
    words = w32["embeddings.word_embeddings.weight"][ids].astype(np.float64)
    x = words + w["embeddings.position_embeddings.weight"][:n] + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, "embeddings.LayerNorm")
    erf = np.vectorize(math.erf)
    for i in range(shape["layers"]):
        p = f"encoder.layer.{i}.attention"
        q, k, v = (linear(x, f"{p}.self.{name}").reshape(n, heads, head).transpose(1, 0, 2)
                   for name in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = layer_norm(linear(context, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        inner = linear(x, f"encoder.layer.{i}.intermediate.dense")
        gelu = 0.5 * inner * (1.0 + erf(inner / math.sqrt(2)))
        x = layer_norm(linear(gelu, f"encoder.layer.{i}.output.dense") + x, f"encoder.layer.{i}.output.LayerNorm")
    pooled = x.mean(0)
    return (pooled / max(np.linalg.norm(pooled), 1e-12)).astype(np.float32)
