"""Bench of the corpus encoder's precision: every MicroLens title embedded in float32 (ONNX Runtime, the reference),
in bfloat16 (PyTorch autocast, which a CPU with AMX multiplies in hardware) and in int8 (ONNX Runtime, the model's
weight matrices quantized: what `auto` takes on a CPU without AMX), in the same process, nothing cached. Reports the
seconds of each and their ratio to fp32, how far the vectors moved, and what that changes downstream:

  vectors     cosine of each title's two vectors (min, median)
  neighbours  each of 2,000 sampled titles' 10 nearest titles: overlap, and the same nearest one
  routing     the `ours` router built on each matrix, over the queries of a prompt file: same categories (1.0 by
              construction since session 12: the router's title signals weigh 0, so no route reads the matrix)
  references  PE references (K=10) for those queries: the same list, and the mean overlap of the two lists

    POPCORN_DATA_DIR=../shared/data/microlens python bench/corpus_precision.py [--prompts FILE] [--precisions bf16,int8]

To emulate a plain CPU (AVX2, no AVX-512 / AMX) on a bigger one: ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
(PyTorch and oneDNN obey them; ONNX Runtime has no such switch: its kernels follow the CPU's own flags).

Last line: corpus_precision fp32_s=<float> <p>_s=<float> <p>_ratio=<float> <p>_same_route=<float>
<p>_same_refs=<float> <p>_ref_overlap=<float> ... for each precision <p> (bf16 also as ratio=, same_route=, same_refs=)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu import cpu_line  # noqa: E402
from plans import DEFAULT_PROMPTS, read_prompts  # noqa: E402
from predictor import machine  # noqa: E402

from popcorn.retrieval import embed  # noqa: E402
from popcorn.retrieval.corpus import load_corpus  # noqa: E402
from popcorn.retrieval.index import ReferenceIndex  # noqa: E402
from popcorn.retrieval.routing import BlendRouter  # noqa: E402


def embed_all(embedder, titles: list[str], precision: str) -> tuple[np.ndarray, float]:
    os.environ["POPCORN_CORPUS_PRECISION"] = precision
    if precision in ("fp32", "int8"):
        embedder.fast_encoder()  # exported and checked before the clock starts: the encoder, not its export, is timed
    if precision == "int8" and embedder.fast_encoder().int8_session() is None:  # quantized before the clock too
        raise SystemExit("int8: the quantized model could not be built or failed its check (fp32 would serve)")
    started = time.perf_counter()
    vectors = embedder.encode_many(titles)
    return vectors, time.perf_counter() - started


def compare(name: str, full: np.ndarray, other: np.ndarray, worlds_full, embedder, corpus, queries, q_vectors,
            sample: int) -> dict:
    """What `other` (a matrix in another precision) changes against fp32's `full`: vectors, neighbours, routes,
    references."""
    cosine = np.sum(full * other, axis=1)
    print(f"{name} vectors: cosine min {cosine.min():.5f}, median {np.median(cosine):.6f}")
    rows = np.random.default_rng(0).choice(len(full), min(sample, len(full)), replace=False)
    near_full = np.argsort(-(full[rows] @ full.T), axis=1)[:, 1:11]
    near_other = np.argsort(-(other[rows] @ other.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near_full, near_other)])
    first = np.mean(near_full[:, 0] == near_other[:, 0])
    print(f"{name} neighbours of {len(rows)} titles: top-10 overlap {overlap:.4f}, same nearest {first:.4f}")
    router_b, index_b = BlendRouter(corpus, embedder, other), ReferenceIndex.build(corpus, embedder, vectors=other)
    router_a, index_a = worlds_full
    same_route = same_refs = 0
    overlaps = []
    for q, text in zip(q_vectors, queries):
        route_a, route_b = router_a.route(q, text=text), router_b.route(q, text=text)
        same_route += route_a.categories == route_b.categories
        refs_a = [r.video_id for r in index_a.search(q, route_a.categories, 10)]
        refs_b = [r.video_id for r in index_b.search(q, route_b.categories, 10)]
        same_refs += refs_a == refs_b
        overlaps.append(len(set(refs_a) & set(refs_b)) / max(len(refs_a), 1))
    n = len(queries)
    print(f"{name}, {n} queries: same route {same_route / n:.3f}, same references {same_refs / n:.3f}, "
          f"reference overlap {np.mean(overlaps):.3f}", flush=True)
    return {"same_route": same_route / n, "same_refs": same_refs / n, "ref_overlap": float(np.mean(overlaps)),
            "cosine_min": float(cosine.min()), "neighbour_overlap": float(overlap)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--precisions", default="bf16,int8", help="compared with fp32 (bf16 without AMX is slow)")
    args = ap.parse_args()
    print(f"machine: {machine()}\ncpu: {cpu_line()}", flush=True)
    corpus = load_corpus()
    titles = corpus.table["title"].tolist()
    embedder = embed.get_embedder()
    embedder.encode(["warm-up"])
    full, fp32_s = embed_all(embedder, titles, "fp32")
    print(f"fp32 (ONNX Runtime): {len(titles)} titles in {fp32_s:.1f} s", flush=True)
    queries = [q for _, _, q in read_prompts(args.prompts)]
    q_vectors = np.stack([embedder.encode_one(q) for q in queries])
    worlds_full = (BlendRouter(corpus, embedder, full), ReferenceIndex.build(corpus, embedder, vectors=full))
    last = [f"fp32_s={fp32_s:.2f}"]
    for name in [p.strip() for p in args.precisions.split(",") if p.strip()]:
        other, seconds = embed_all(embedder, titles, name)
        print(f"{name}: {len(titles)} titles in {seconds:.1f} s ({fp32_s / seconds:.2f}x fp32)", flush=True)
        found = compare(name, full, other, worlds_full, embedder, corpus, queries, q_vectors, args.sample)
        last.append(f"{name}_s={seconds:.2f} {name}_ratio={fp32_s / seconds:.2f} {name}_same_route="
                    f"{found['same_route']:.3f} {name}_same_refs={found['same_refs']:.3f} {name}_ref_overlap="
                    f"{found['ref_overlap']:.3f}")
        if name == "bf16":  # the keys of the earlier last line
            last.append(f"ratio={fp32_s / seconds:.2f} same_route={found['same_route']:.3f} "
                        f"same_refs={found['same_refs']:.3f}")
    print("corpus_precision " + " ".join(last))


if __name__ == "__main__":
    main()
