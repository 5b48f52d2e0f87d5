"""Test settings: the real MicroLens data beside the checkout, and no hub access (this machine has no network)."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("POPCORN_DATA_DIR", str(ROOT.parent / "shared" / "data" / "microlens"))
os.environ.setdefault("POPCORN_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA_DIR = Path(os.environ["POPCORN_DATA_DIR"])


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "video_label.csv").exists():
        pytest.fail(f"MicroLens data not found at {DATA_DIR}: set POPCORN_DATA_DIR (see README)")
    return DATA_DIR


@pytest.fixture(scope="session")
def corpus(data_dir):
    from popcorn.retrieval.corpus import load_corpus

    return load_corpus(data_dir)


@pytest.fixture(scope="session")
def retriever(corpus):
    from popcorn.retrieval.index import get_retriever

    return get_retriever()
