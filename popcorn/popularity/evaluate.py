"""Evaluate h on MicroLens videos it was not trained on, and make such held-out folders.

`evaluate(data_dir)` reads any folder in the MicroLens raw layout (popcorn.retrieval.corpus.load_raw_dir), predicts every video
from its title and category alone (its own comments, likes and views are never inputs; a memory video with the same
id is never retrieved) and returns the metrics over the whole set plus SRC per category.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from popcorn.retrieval import corpus as corpus_module
from popcorn.retrieval.corpus import load_raw_dir, popularity_label
from popcorn.popularity.metrics import per_category_src, regression_metrics
from popcorn.popularity.predictor import Predictor, get_predictor
from popcorn.popularity.visual import FEATURES_FILE, VisualSpace

RAW_FILES_WITH_HEADER = {corpus_module.TITLES_FULL: True, corpus_module.TAGS: True, corpus_module.LABELS: True,
                         corpus_module.TITLES_SHORT: False, corpus_module.LIKES_VIEWS: False}


def evaluate(data_dir: str | Path, checkpoint: str | Path | Predictor | None = None) -> dict[str, Any]:
    """{"n", "nMSE", "SRC", "MAE", "per_category_SRC": {category: {"n", "SRC"}}, ...} on the folder's videos."""
    held_out = load_raw_dir(data_dir)
    if isinstance(checkpoint, Predictor):
        predictor = checkpoint
    elif checkpoint:
        predictor = Predictor.load(checkpoint)
    else:
        predictor = get_predictor()
    table = held_out.table
    visual = None
    if predictor.model.visual_encoder is not None:  # the folder's own frame features, where it has them
        features = VisualSpace.load(data_dir)
        visual = features.rows_for(table["video_id"].tolist()) if features is not None else None
    predictions = predictor.predict_labels(table["title"].tolist(), table["category"].tolist(),  # "Unknown": inferred
                                         table["video_id"].tolist(), visual)
    labels = popularity_label(table["comments"].to_numpy())
    overlap = int(np.isin(table["video_id"].to_numpy(), predictor.model.memory.video_ids).sum())
    result: dict[str, Any] = regression_metrics(labels, predictions)
    result["per_category_SRC"] = per_category_src(labels, predictions, table["category"].tolist())
    result["data"] = str(data_dir)
    result["trained_on"] = predictor.info.get("corpus")
    result["overlap_with_training"] = overlap  # ids also in the memory bank (kept out of their own retrieval)
    return result


def split_ids(video_ids, test_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of video ids: (train ids, test ids), each sorted."""
    ids = np.unique(np.asarray(video_ids, dtype=np.int64))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_test = int(round(test_fraction * len(ids)))
    return np.sort(ids[order[n_test:]]), np.sort(ids[order[:n_test]])


def subset_raw_dir(source_dir: str | Path, folder: str | Path, video_ids) -> Path:
    """Copy the rows of the given videos from every MicroLens raw file of `source_dir` into `folder`, in the same
    file formats (a held-out folder then looks exactly like the official release's files)."""
    source_dir, folder = Path(source_dir), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keep = {int(v) for v in video_ids}
    for name, has_header in RAW_FILES_WITH_HEADER.items():
        path = source_dir / name
        if not path.exists():
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        newline = "\r\n" if "\r\n" in raw[:10_000] else "\n"
        if name == corpus_module.TITLES_FULL:  # quoted CSV: a title may hold commas
            rows = list(csv.reader(io.StringIO(raw.lstrip("\ufeff"))))
            out = io.StringIO()
            writer = csv.writer(out, lineterminator=newline)
            for i, row in enumerate(rows):
                if (has_header and i == 0) or (row and _row_id(row[0]) in keep):
                    writer.writerow(row)
            text = out.getvalue()
        else:
            lines = raw.splitlines()
            kept = [line for i, line in enumerate(lines)
                    if (has_header and i == 0) or _row_id(line.replace("\t", ",").split(",", 1)[0]) in keep]
            text = newline.join(kept) + newline
        (folder / name).write_bytes(text.encode("utf-8"))
    visual = VisualSpace.load(source_dir)
    if visual is not None:
        mask = np.isin(visual.video_ids, list(keep))
        np.savez(folder / FEATURES_FILE, video_id=visual.video_ids[mask], features=visual.features[mask],
                 encoder=np.array(visual.encoder))
    return folder


def write_raw_dir(table: pd.DataFrame, folder: str | Path) -> Path:
    """Write a corpus table (video_id, title, category, likes, views, comments) as a MicroLens raw folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = table.sort_values("video_id")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["item", "title"])
    writer.writerows(table[["video_id", "title"]].itertuples(index=False))
    (folder / corpus_module.TITLES_FULL).write_text(out.getvalue(), encoding="utf-8")
    lines = ["video_id, tag"] + [f"{v},{c}" for v, c in zip(table["video_id"], table["category"])]
    (folder / corpus_module.TAGS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines = ["video_id,comment_count"] + [f"{v},{c}" for v, c in zip(table["video_id"], table["comments"])]
    (folder / corpus_module.LABELS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if "likes" in table and "views" in table:
        lines = [f"{v}\t{a}\t{b}" for v, a, b in zip(table["video_id"], table["likes"], table["views"])]
        (folder / corpus_module.LIKES_VIEWS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _row_id(cell: str) -> int | None:
    cell = cell.strip().lstrip("\ufeff")
    return int(cell) if cell.isdigit() else None
