"""Settings, read from the environment (POPCORN_*) with plain defaults.

| variable               | meaning                                                          | default                |
|------------------------|------------------------------------------------------------------|------------------------|
| POPCORN_DATA_DIR       | a folder in the MicroLens raw layout (offline corpus)            | ./data/microlens, then ../shared/data/microlens |
| POPCORN_DATASET        | hub dataset used when no local folder exists                     | junchenfu/microlens_rag |
| POPCORN_CACHE_DIR      | embeddings, FAISS indexes, assembled GGUF, predictor checkpoints | ./data/cache           |
| POPCORN_HOME           | runs, artifacts and the SQLite store                             | ./data/studio          |
| POPCORN_EMBED_MODEL    | sentence-transformers model name or path                         | auto (hub L12 online, packaged L6 offline) |
| POPCORN_OFFLINE / HF_HUB_OFFLINE | never touch the hub                                    | unset                  |
| POPCORN_PREBUILT_REPO  | hub dataset (or local folder) with prebuilt caches by corpus fingerprint (popcorn/serve/prebuilt.py) | unset (build locally) |
| POPCORN_WARM           | the studio warms every cache and model in the background after serving the page (0 = off) | 1 |
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# package data: in a checkout these link to prompts/ and assets/ at the top; an installed wheel holds the files
PROMPTS_DIR = Path(__file__).resolve().parent / "prompt_templates"
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

HUB_DATASET = "junchenfu/microlens_rag"


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else default


def data_dir() -> Path | None:
    """The local MicroLens folder, or None when there is none (then the hub dataset is tried)."""
    explicit = os.environ.get("POPCORN_DATA_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    for candidate in (PROJECT_ROOT / "data" / "microlens", PROJECT_ROOT.parent / "shared" / "data" / "microlens"):
        if candidate.is_dir():
            return candidate
    return None


def hub_dataset() -> str:
    return os.environ.get("POPCORN_DATASET", HUB_DATASET)


def cache_dir() -> Path:
    path = _env_path("POPCORN_CACHE_DIR", PROJECT_ROOT / "data" / "cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def home_dir() -> Path:
    path = _env_path("POPCORN_HOME", PROJECT_ROOT / "data" / "studio")
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when the hub must not be contacted."""
    for name in ("POPCORN_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def embed_model() -> str:
    return os.environ.get("POPCORN_EMBED_MODEL", "auto").strip() or "auto"


def prebuilt_repo() -> str:
    """Where prebuilt caches are pulled from (popcorn/serve/prebuilt.py): a hub dataset id or a local folder; "" = none."""
    return os.environ.get("POPCORN_PREBUILT_REPO", "").strip()


FIRST_PLANS = ("quick", "full")


def first_plan() -> str:
    """How a PE plan retrieves while the whole index is not built yet (popcorn.retrieval.index.QuickRetriever): 'quick'
    (default) routes on a sample and embeds only the routed categories; 'full' waits for every title."""
    value = os.environ.get("POPCORN_FIRST_PLAN", "").strip().lower() or "quick"
    if value not in FIRST_PLANS:
        from popcorn.types import StageError

        raise StageError("retrieve", f"POPCORN_FIRST_PLAN={value!r} is not one of {', '.join(FIRST_PLANS)}",
                         "unset it, or set quick or full")
    return value


def warm_enabled() -> bool:
    return os.environ.get("POPCORN_WARM", "1").strip().lower() not in ("0", "off", "false", "no")
