"""PE retrieval latency: Popcorn's persisted index vs the paper's per-request approach, measured in the same run.

  ours   the query is encoded, routed and searched against embeddings + FAISS indexes built once (ReferenceIndex)
  naive  what the paper's script does on every request: encode the matched category's titles, build a FAISS index,
         search it (the query encoding and routing are the same as ours)

Usage: POPCORN_DATA_DIR=../shared/data/microlens python bench/retrieval.py [--queries FILE] [--n 40] [--naive-n 5]
Last line: retrieval p50_ms=<float> naive_p50_ms=<float> speedup=<float>
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn.retrieval.index import ReferenceIndex, get_retriever, split_counts  # noqa: E402

DEFAULT_QUERIES = ROOT / "assets" / "routing" / "routing_queries.tsv"


def load_queries(path: Path) -> list[str]:
    lines = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    return [q.strip() for _, q in lines if q.strip()]


def naive_retrieve(retriever, query: str, k: int) -> list[int]:
    """The paper's per-request path: re-encode the matched categories' titles and rebuild the index."""
    embedder, table, ratio = retriever.embedder, retriever.corpus.table, retriever.index.ratio
    q = embedder.encode_one(query)
    route = retriever.routers["ours"].route(q)
    rows = np.flatnonzero(table["category"].isin(route.categories).to_numpy())
    comments = table["comments"].to_numpy()[rows]
    cut = np.quantile(comments, ratio)
    n_pop, n_unpop = split_counts(k, ratio)
    out = []
    for mask, n in ((comments > cut, n_pop), (comments <= cut, n_unpop)):
        chosen = rows[mask]
        vectors = embedder.encode(table["title"].to_numpy()[chosen].tolist())
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors)
        _, pos = index.search(q.reshape(1, -1), min(n, len(chosen)))
        out.extend(int(chosen[p]) for p in pos[0] if p >= 0)
    return out


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    ap.add_argument("--n", type=int, default=60, help="queries timed on our path")
    ap.add_argument("--naive-n", type=int, default=5, help="queries timed on the naive path (it is slow)")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    t0 = time.perf_counter()
    retriever = get_retriever()
    print(f"index ready in {time.perf_counter() - t0:.2f} s ({len(retriever.corpus)} videos, {retriever.embedder.name})")
    t0 = time.perf_counter()
    ReferenceIndex.load(retriever.corpus, retriever.embedder, retriever.index.ratio)
    print(f"index reload from cache: {time.perf_counter() - t0:.3f} s")

    queries = load_queries(args.queries)
    for q in queries[:5]:  # warm-up
        retriever.retrieve(q, args.k)
    ours = [timed(lambda q=q: retriever.retrieve(q, args.k)) for q in (queries * 4)[: args.n]]
    naive = [timed(lambda q=q: naive_retrieve(retriever, q, args.k)) for q in queries[: args.naive_n]]
    p50, naive_p50 = statistics.median(ours), statistics.median(naive)
    p90 = float(np.percentile(ours, 90))
    print(f"ours:  n={len(ours)} p50={p50:.2f} ms p90={p90:.2f} ms")
    print(f"naive: n={len(naive)} p50={naive_p50:.1f} ms")
    print(f"retrieval p50_ms={p50:.3f} naive_p50_ms={naive_p50:.3f} speedup={naive_p50 / p50:.1f}")


if __name__ == "__main__":
    main()
