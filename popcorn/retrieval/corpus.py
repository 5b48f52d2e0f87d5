"""MicroLens -> one normalised table: video_id, title, category, likes, views, comments.

Two sources, tried in this order by `load_corpus()`:
  (a) a folder in the MicroLens raw layout (POPCORN_DATA_DIR), the files of the official release or its re-uploads:
        MicroLens-50k_titles.csv       item,title (full titles; preferred)
        MicroLens-100k_title_en.csv    video_id, title (no header; fallback titles)
        tags_to_summary.csv            video_id, tag (the category)
        video_label.csv                video_id,comment_count  -- or MicroLens-100k_comment_en.txt (user video comment)
        MicroLens-100k_likes_and_views.txt   video_id \t likes \t views
  (b) the hub dataset `junchenfu/microlens_rag` (video_id, title_en, cover_desc, caption_en, partition, likes, views,
      comment_count) when a network is there.

Malformed rows are counted in `Corpus.skipped` and left out; they never raise.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import huggingface_hub
import numpy as np
import pandas as pd

from popcorn import config
from popcorn.retrieval import split
from popcorn.types import StageError

TITLES_FULL = "MicroLens-50k_titles.csv"
TITLES_SHORT = "MicroLens-100k_title_en.csv"
TAGS = "tags_to_summary.csv"
LABELS = "video_label.csv"
COMMENTS_RAW = "MicroLens-100k_comment_en.txt"
LIKES_VIEWS = "MicroLens-100k_likes_and_views.txt"

COLUMNS = ["video_id", "title", "category", "likes", "views", "comments"]
UNKNOWN_CATEGORY = "Unknown"


def popularity_label(comments) -> np.ndarray | float:
    """MMRA's label: log2(1 + comment count)."""
    return np.log2(1.0 + np.asarray(comments, dtype=np.float64))


@dataclass
class Corpus:
    """The normalised MicroLens table and where it came from."""

    table: pd.DataFrame  # COLUMNS, one row per video, sorted by video_id
    source: str
    skipped: Counter = field(default_factory=Counter)  # file -> malformed rows left out

    def __len__(self) -> int:
        return len(self.table)

    @property
    def fingerprint(self) -> str:
        """Changes whenever ids, titles, categories or comment counts change: the cache key of derived indexes."""
        h = hashlib.sha256()
        t = self.table
        h.update(t["video_id"].to_numpy(np.int64).tobytes())
        h.update("\x1f".join(t["title"]).encode("utf-8"))
        h.update("\x1f".join(t["category"]).encode("utf-8"))
        h.update(t["comments"].to_numpy(np.int64).tobytes())
        return h.hexdigest()[:16]

    def categories(self, min_size: int = 1) -> list[str]:
        counts = self.table["category"].value_counts()
        return sorted(c for c, n in counts.items() if n >= min_size and c != UNKNOWN_CATEGORY)

    def subset(self, video_ids) -> "Corpus":
        keep = self.table["video_id"].isin(set(int(v) for v in video_ids))
        return Corpus(self.table[keep].reset_index(drop=True), self.source + " (subset)", Counter(self.skipped))


# ----------------------------------------------------------------------------------------------- raw folder parsing


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def _to_int(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return int(number)


def _read_pairs(path: Path, skipped: Counter, *, header: bool, split_first_comma: bool) -> dict[int, str]:
    """Rows of (id, text). `split_first_comma` for files whose text is not quoted (MicroLens-100k_title_en.csv)."""
    out: dict[int, str] = {}
    text = _read_text(path)
    if split_first_comma:
        rows = (line.split(",", 1) for line in text.splitlines())
    else:
        rows = csv.reader(io.StringIO(text))
    for i, row in enumerate(rows):
        if header and i == 0:
            continue
        if len(row) < 2:
            if any(cell.strip() for cell in row):
                skipped[path.name] += 1
            continue
        vid = _to_int(row[0])
        if vid is None:
            skipped[path.name] += 1
            continue
        out[vid] = ",".join(row[1:]).strip() if not split_first_comma else row[1].strip()
    return out


def _read_counts(path: Path, skipped: Counter, *, sep: str, header: bool) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, line in enumerate(_read_text(path).splitlines()):
        if header and i == 0:
            continue
        if not line.strip():
            continue
        parts = [p for p in (line.split(sep) if sep else line.split())]
        numbers = [_to_int(p) for p in parts]
        if len(numbers) < 2 or any(n is None for n in numbers):
            skipped[path.name] += 1
            continue
        out[numbers[0]] = numbers[1:]
    return out


def _count_raw_comments(path: Path, skipped: Counter) -> dict[int, int]:
    """Comments per video from the official `user_id video_id comment` file."""
    counts: Counter = Counter()
    with path.open("r", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.split(None, 2)
            if len(parts) < 3:
                skipped[path.name] += 1
                continue
            vid = _to_int(parts[1])
            if vid is None:
                skipped[path.name] += 1
                continue
            counts[vid] += 1
    return dict(counts)


def load_raw_dir(folder: str | Path) -> Corpus:
    """Read a folder in the MicroLens raw layout into one table."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StageError("retrieve", f"MicroLens folder {folder} does not exist",
                         "set POPCORN_DATA_DIR to a folder holding the MicroLens files (see README)")
    skipped: Counter = Counter()

    titles: dict[int, str] = {}
    if (folder / TITLES_SHORT).exists():
        titles.update(_read_pairs(folder / TITLES_SHORT, skipped, header=False, split_first_comma=True))
    if (folder / TITLES_FULL).exists():  # full titles win where both exist
        full = _read_pairs(folder / TITLES_FULL, skipped, header=True, split_first_comma=False)
        titles.update({k: v for k, v in full.items() if v})
    if not titles:
        raise StageError("retrieve", f"no title file in {folder}",
                         f"expected {TITLES_FULL} or {TITLES_SHORT} (the MicroLens raw layout)")

    categories: dict[int, str] = {}
    if (folder / TAGS).exists():
        tags = _read_pairs(folder / TAGS, skipped, header=True, split_first_comma=False)
        categories = {k: v for k, v in tags.items() if v}

    if (folder / LABELS).exists():
        comments = {k: v[0] for k, v in _read_counts(folder / LABELS, skipped, sep=",", header=True).items()}
    elif (folder / COMMENTS_RAW).exists():
        comments = _count_raw_comments(folder / COMMENTS_RAW, skipped)
    else:
        raise StageError("retrieve", f"no comment counts in {folder}",
                         f"expected {LABELS} or {COMMENTS_RAW}: the popularity label is log2(1 + comments)")

    likes_views: dict[int, list[int]] = {}
    if (folder / LIKES_VIEWS).exists():
        likes_views = _read_counts(folder / LIKES_VIEWS, skipped, sep="\t", header=False)

    rows = []
    for vid in sorted(titles):
        if vid not in comments:  # no label: cannot be a reference or a training item
            skipped["no comment count"] += 1
            continue
        lv = likes_views.get(vid, [0, 0])
        rows.append((vid, titles[vid], categories.get(vid, UNKNOWN_CATEGORY), lv[0], lv[1] if len(lv) > 1 else 0,
                     comments[vid]))
    table = pd.DataFrame(rows, columns=COLUMNS)
    return Corpus(table=table, source=str(folder), skipped=skipped)


# ----------------------------------------------------------------------------------------------- hub dataset


def load_hub(repo_id: str | None = None) -> Corpus:
    """Load `junchenfu/microlens_rag` from the Hugging Face hub (needs a network; cached by huggingface_hub)."""
    repo_id = repo_id or config.hub_dataset()
    local = Path(huggingface_hub.snapshot_download(repo_id=repo_id, repo_type="dataset"))
    frames = []
    for path in sorted(local.rglob("*")):
        if path.suffix == ".parquet":
            frames.append(pd.read_parquet(path))
        elif path.suffix == ".csv":
            frames.append(pd.read_csv(path))
        elif path.suffix in (".jsonl", ".json"):
            frames.append(pd.read_json(path, lines=path.suffix == ".jsonl"))
    if not frames:
        raise StageError("retrieve", f"hub dataset {repo_id} holds no table", "use POPCORN_DATA_DIR instead")
    skipped: Counter = Counter()
    tags = next(iter(local.rglob(TAGS)), None)  # the category file, where the dataset ships one
    categories = _read_pairs(tags, skipped, header=True, split_first_comma=False) if tags else {}
    return from_hub_table(pd.concat(frames, ignore_index=True), source=f"hub:{repo_id}", categories=categories)


def from_hub_table(df: pd.DataFrame, source: str = "hub", categories: dict[int, str] | None = None) -> Corpus:
    """Normalise a microlens_rag-style table (title_en, comment_count, likes, views; a category column if present,
    else categories from `categories` by video id). `partition` is a data split, not a category."""
    skipped: Counter = Counter()
    categories = categories or {}
    title_col = "title_en" if "title_en" in df.columns else "title"
    comment_col = "comment_count" if "comment_count" in df.columns else "comments"
    category_col = next((c for c in ("category", "tag") if c in df.columns), None)
    rows = []
    for rec in df.to_dict("records"):
        vid = _to_int(str(rec.get("video_id", "")))
        comments = _to_int(str(rec.get(comment_col, "")))
        title = rec.get(title_col)
        if vid is None or comments is None or not isinstance(title, str):
            skipped[source] += 1
            continue
        category = str(rec.get(category_col) or "") if category_col else categories.get(vid, "")
        category = category.strip() or UNKNOWN_CATEGORY
        rows.append((vid, title.strip(), category, _to_int(str(rec.get("likes", 0))) or 0,
                     _to_int(str(rec.get("views", 0))) or 0, comments))
    table = pd.DataFrame(rows, columns=COLUMNS).drop_duplicates("video_id").sort_values("video_id")
    return Corpus(table=table.reset_index(drop=True), source=source, skipped=skipped)


# ----------------------------------------------------------------------------------------------- entry point

_CACHE: dict[str, Corpus] = {}
PARTS = ("retrieval", "judge", "human", "all")


def load_corpus(data_dir: str | Path | None = None, part: str = "retrieval") -> Corpus:
    """The corpus from a local folder if one is configured or found, else from the hub; loaded once per process.

    `part`: the judge split (popcorn/retrieval/split.py). "retrieval" (the default: what plans, the studio and h
    see), "judge" (the held-out judge's training set), "human" (the human-matched pool), or "all"."""
    if part not in PARTS:
        raise StageError("retrieve", f"unknown corpus part {part!r}", f"use one of {PARTS}")
    whole = _load_whole(data_dir)
    if part == "all":
        return whole
    key = f"{whole.source}#{whole.fingerprint}#{part}"
    if key not in _CACHE:
        keep = split.part_mask(whole.table["video_id"], part)
        _CACHE[key] = Corpus(whole.table[keep].reset_index(drop=True), whole.source, Counter(whole.skipped))
    return _CACHE[key]


def _load_whole(data_dir: str | Path | None = None) -> Corpus:
    folder = Path(data_dir) if data_dir else config.data_dir()
    key = str(folder) if folder else f"hub:{config.hub_dataset()}"
    if key in _CACHE:
        return _CACHE[key]
    if folder is not None:
        corpus = load_raw_dir(folder)
    elif config.offline():
        raise StageError("retrieve", "no MicroLens data: no local folder and the hub is off (offline)",
                         "set POPCORN_DATA_DIR to a folder with the MicroLens files, e.g. ../shared/data/microlens")
    else:
        try:
            corpus = load_hub()
        except StageError:
            raise
        except Exception as exc:  # network or hub failure
            raise StageError("retrieve", f"could not load the hub dataset {config.hub_dataset()}: "
                                       f"{type(exc).__name__}",
                             "set POPCORN_DATA_DIR to a folder with the MicroLens files (see README)") from exc
    if len(corpus) == 0:
        raise StageError("retrieve", f"the MicroLens source {corpus.source} has no usable rows",
                         "check the files' format (see popcorn/retrieval/corpus.py)")
    _CACHE[key] = corpus
    return corpus
