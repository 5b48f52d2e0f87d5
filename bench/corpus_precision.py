"""Bench of the corpus encoder's precision: every MicroLens title embedded in float32 (ONNX Runtime, the reference)
and in bfloat16 (PyTorch autocast, which this CPU multiplies with AMX), in the same process, nothing cached. Reports
the seconds of each and their ratio, how far the vectors moved, and what that changes downstream:

  vectors     cosine of each title's two vectors (min, median)
  neighbours  each of 2,000 sampled titles' 10 nearest titles: overlap, and the same nearest one
  routing     the `ours` router built on each matrix, over the queries of a prompt file: same categories
  references  PE references (K=10) for those queries: the same list, and the mean overlap of the two lists

    POPCORN_DATA_DIR=../shared/data/microlens python bench/corpus_precision.py [--prompts FILE]

Last line: corpus_precision fp32_s=<float> bf16_s=<float> ratio=<float> same_route=<float> same_refs=<float>
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

from plans import DEFAULT_PROMPTS, read_prompts  # noqa: E402
from predictor import machine  # noqa: E402

from popcorn.retrieval import embed  # noqa: E402
from popcorn.retrieval.corpus import load_corpus  # noqa: E402
from popcorn.retrieval.index import ReferenceIndex  # noqa: E402
from popcorn.retrieval.routing import BlendRouter  # noqa: E402


def embed_all(embedder, titles: list[str], precision: str) -> tuple[np.ndarray, float]:
    os.environ["POPCORN_CORPUS_PRECISION"] = precision
    if precision == "fp32":
        embedder.fast_encoder()  # exported and checked before the clock starts: the encoder, not its export, is timed
    started = time.perf_counter()
    vectors = embedder.encode_many(titles)
    return vectors, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    ap.add_argument("--sample", type=int, default=2000)
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)
    corpus = load_corpus()
    titles = corpus.table["title"].tolist()
    embedder = embed.get_embedder()
    embedder.encode(["warm-up"])
    full, fp32_s = embed_all(embedder, titles, "fp32")
    print(f"fp32 (ONNX Runtime): {len(titles)} titles in {fp32_s:.1f} s", flush=True)
    half, bf16_s = embed_all(embedder, titles, "bf16")
    print(f"bf16 (PyTorch autocast): {len(titles)} titles in {bf16_s:.1f} s ({fp32_s / bf16_s:.2f}x)", flush=True)

    cosine = np.sum(full * half, axis=1)
    print(f"vectors: cosine min {cosine.min():.5f}, median {np.median(cosine):.6f}")
    rows = np.random.default_rng(0).choice(len(titles), min(args.sample, len(titles)), replace=False)
    near_full = np.argsort(-(full[rows] @ full.T), axis=1)[:, 1:11]
    near_half = np.argsort(-(half[rows] @ half.T), axis=1)[:, 1:11]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(near_full, near_half)])
    first = np.mean(near_full[:, 0] == near_half[:, 0])
    print(f"neighbours of {len(rows)} titles: top-10 overlap {overlap:.4f}, same nearest {first:.4f}")

    queries = [q for _, _, q in read_prompts(args.prompts)]
    q_vectors = np.stack([embedder.encode_one(q) for q in queries])
    worlds = [(BlendRouter(corpus, embedder, vectors), ReferenceIndex.build(corpus, embedder, vectors=vectors))
              for vectors in (full, half)]
    same_route = same_refs = 0
    overlaps = []
    for q, text in zip(q_vectors, queries):
        (router_a, index_a), (router_b, index_b) = worlds
        route_a, route_b = router_a.route(q, text=text), router_b.route(q, text=text)
        same_route += route_a.categories == route_b.categories
        refs_a = [r.video_id for r in index_a.search(q, route_a.categories, 10)]
        refs_b = [r.video_id for r in index_b.search(q, route_b.categories, 10)]
        same_refs += refs_a == refs_b
        overlaps.append(len(set(refs_a) & set(refs_b)) / max(len(refs_a), 1))
    n = len(queries)
    print(f"{n} queries of {args.prompts.name}: same route {same_route / n:.3f}, same references {same_refs / n:.3f}, "
          f"reference overlap {np.mean(overlaps):.3f}")
    print(f"corpus_precision fp32_s={fp32_s:.2f} bf16_s={bf16_s:.2f} ratio={fp32_s / bf16_s:.2f} "
          f"same_route={same_route / n:.3f} same_refs={same_refs / n:.3f}")


if __name__ == "__main__":
    main()
