"""Vectors of the routers' fixed texts, shipped with the package for the packaged MiniLM.

The `ours` router embeds texts that come with Popcorn, not with the corpus: every category's name, description and
example phrases (assets/categories.json) and the labelled idea bank (assets/routing/*.tsv, ~2,600 ideas). Embedding
them costs a first use ~5 s on two cores, on the path to the first plan and the first score. They are the same for
every user of one model, so their vectors for the packaged model (all-MiniLM-L6-v2, the offline default) are computed
once here, in fp32 through sentence-transformers (the reference every faster path is checked against), and kept in
assets/vectors/<model>.npz by a 64-bit digest of each text (embed.title_keys). `embed.title_vectors` takes a text's
vector from there before it embeds anything; a text that is not there (an edited bank, another model) is embedded as
before, so a stale file costs time, never a wrong vector (tests/test_shipped_vectors.py keeps it current).

    python -m popcorn.retrieval.shipped          # write the file again after editing categories.json or the bank
    python -m popcorn.retrieval.shipped --check  # exit 1 if a fixed text has no shipped vector
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from popcorn import config

SHIPPED_DIR = config.ASSETS_DIR / "vectors"


def path_for(cache_key: str) -> Path:
    return SHIPPED_DIR / f"{cache_key}.npz"


@functools.lru_cache(maxsize=4)
def _load(path: Path, name: str, dim: int, stamp: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    """(keys, vectors) of one shipped file, when it is this model's and this width; read once per process (`stamp`,
    the file's size and mtime, reads it again after it is replaced)."""
    try:
        with np.load(path) as stored:
            if str(stored["model"]) != name:
                return None
            keys, vectors = stored["keys"], stored["vectors"]
    except (OSError, ValueError, KeyError):
        return None
    if vectors.shape != (len(keys), dim) or vectors.dtype != np.float32:
        return None
    return keys, vectors


def shipped(embedder) -> tuple[np.ndarray, np.ndarray] | None:
    path = path_for(embedder.cache_key)
    if not path.is_file():
        return None
    st = path.stat()
    return _load(path, embedder.name, embedder.dim, (st.st_size, st.st_mtime_ns))


def fill(embedder, keys: np.ndarray, vectors: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Put the shipped vector of every `missing` row whose text has one into `vectors` (embed.copy_known, as the
    cache's other files are read); returns the rows still missing."""
    found = shipped(embedder) if len(missing) else None
    if found is None:
        return missing
    from popcorn.retrieval.embed import copy_known

    todo = np.zeros(len(keys), dtype=bool)
    todo[missing] = True
    copy_known(*found, keys, vectors, todo)
    return np.flatnonzero(todo)


def fixed_texts() -> list[str]:
    """Every text the routers embed that does not come from the corpus, once each, in a stable order."""
    from popcorn.retrieval.routing import category_info, describe, idea_bank

    texts = []
    for name, info in category_info().items():
        texts += [name, describe(name, info), *info.examples]
    texts += [idea for _, idea in idea_bank()]
    return list(dict.fromkeys(texts))


def write(embedder=None) -> Path:
    """Embed fixed_texts() with the packaged model in fp32 (sentence-transformers) and save them."""
    from popcorn.retrieval.embed import PACKAGED, get_embedder, title_keys

    embedder = embedder or get_embedder(PACKAGED)
    texts = fixed_texts()
    vectors = np.ascontiguousarray(embedder.encode(texts), dtype=np.float32)
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    path = path_for(embedder.cache_key)
    np.savez_compressed(path, keys=title_keys(texts), vectors=vectors, model=np.array(embedder.name))
    return path


def unshipped(embedder=None) -> list[str]:
    """The fixed texts the shipped file of the packaged model lacks (all of them when it is missing)."""
    from popcorn.retrieval.embed import PACKAGED, get_embedder, title_keys

    embedder = embedder or get_embedder(PACKAGED)
    texts = fixed_texts()
    keys = title_keys(texts)
    left = fill(embedder, keys, np.zeros((len(texts), embedder.dim), dtype=np.float32), np.arange(len(texts)))
    return [texts[i] for i in left]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--check" in argv:
        left = unshipped()
        print(f"{len(left)} fixed texts without a shipped vector" + (f", e.g. {left[:3]}" if left else ""))
        return 1 if left else 0
    path = write()
    print(f"wrote {path} ({len(fixed_texts())} texts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
