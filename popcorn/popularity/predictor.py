"""Train, save, load and use h: `train()`, `get_predictor()`, `Predictor.score()` / `score_batch()`.

The checkpoint (a joblib file of the fitted model: vectorizers, ridges, memory bank, encoders, gradient boosting)
lives in config.cache_dir()/popularity/, named by the corpus fingerprint and the settings, so a changed corpus or
setting never loads a stale model.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import joblib
import numpy as np

from popcorn import config
from popcorn.popularity.metrics import regression_metrics
from popcorn.popularity.model import Inputs, PopularityModel, Settings
from popcorn.popularity.visual import MIN_COVERAGE, VisualSpace
from popcorn.retrieval.corpus import Corpus, load_corpus
from popcorn.retrieval.embed import get_embedder, title_vectors
from popcorn.serve import prebuilt
from popcorn.types import StageError

Progress = Callable[[str], None]

CHECKPOINT_VERSION = 1
EXPLAIN_NEIGHBOURS = 5
EXPLAIN_SPACES = ("embedding", "word", "char", "visual")  # the first one the model has explains a score


def checkpoint_dir() -> Path:
    path = config.cache_dir() / "popularity"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings_key(settings: Settings) -> str:
    blob = json.dumps({"v": CHECKPOINT_VERSION, **settings.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def checkpoint_path(corpus: Corpus, settings: Settings = Settings()) -> Path:
    return checkpoint_dir() / f"{corpus.fingerprint}-{settings_key(settings)}.joblib"


# ---------------------------------------------------------------------------------------------------- the score


@dataclass
class Score:
    """h(x) for one item, and why."""

    title: str
    label: float  # predicted log2(1 + comments)
    predicted_comments: float  # 2**label - 1
    percentile_category: float  # share (0-100) of the category's MicroLens videos predicted lower or equal
    percentile_overall: float  # the same over all MicroLens videos
    category: str
    category_inferred: bool = False  # True when no category was given and the neighbours' vote chose it
    neighbours: list[dict[str, Any]] = field(default_factory=list)  # video_id, title, category, comments, similarity
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    """A trained model plus what scoring needs around it (percentiles, explanations)."""

    def __init__(self, model: PopularityModel, info: dict[str, Any]):
        self.model = model
        self.info = info  # corpus source and fingerprint, settings, training metrics, timings
        oof = model.oof_predictions
        self._overall = np.sort(oof)
        cats = model.memory.categories
        self._by_category = {c: np.sort(oof[cats == c]) for c in np.unique(cats)}

    # persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        joblib.dump({"version": CHECKPOINT_VERSION, "model": self.model, "info": self.info}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Predictor":
        path = Path(path)
        if not path.exists():
            raise StageError("score", f"no predictor checkpoint at {path}",
                             "train one with `python -m popcorn predictor train`")
        blob = joblib.load(path)
        if not isinstance(blob, dict) or blob.get("version") != CHECKPOINT_VERSION:
            raise StageError("score", f"{path} is not a popularity checkpoint of version {CHECKPOINT_VERSION}",
                             "retrain with `python -m popcorn predictor train`")
        return cls(blob["model"], blob["info"])

    # scoring
    def predict_labels(self, titles: list[str], categories: list[str | None] | None = None,
                       video_ids: list[int | None] | None = None, visual: np.ndarray | None = None) -> np.ndarray:
        """Predicted log2(1 + comments) for many items; a memory video with the same id is never retrieved.
        `visual`: frame features, one row per item (zeros where an item has none), for a model with that branch."""
        categories = categories if categories is not None else [None] * len(titles)
        return self.model.predict(Inputs(list(titles), list(categories), video_ids, visual=visual))

    def score(self, title: str, description: str = "", category: str | None = None, video: str | None = None,
              video_id: int | None = None) -> Score:
        item = {"title": title, "description": description, "category": category, "video": video,
                "video_id": video_id}
        return self.score_batch([item])[0]

    def score_batch(self, items: list[dict[str, Any]]) -> list[Score]:
        """Score items {title, description?, category?, video?, video_id?} together (much faster than one by one)."""
        if not items:
            return []
        titles = [str(it.get("title") or "") for it in items]
        if not any(t.strip() for t in titles):
            raise StageError("score", "nothing to score: every title is empty", "give --title")
        ids = [it.get("video_id") for it in items]
        categories, inferred = self.model.resolve_categories([it.get("category") for it in items], titles)
        visual, used_video = self._visual_rows(items)
        inputs = Inputs(titles, categories, ids if any(i is not None for i in ids) else None, visual=visual)
        features, retrieved = self.model.features(inputs, categories)
        labels = self.model.predict_features(features)
        explain = next((s for s in EXPLAIN_SPACES if s in retrieved), None)
        if explain is None:  # a model without retrieval features still shows the closest videos
            query = self.model.text_matrices(titles, categories)["word"]
            explain, retrieved = "word", {"word": self.model.memory.search("word", query, k=EXPLAIN_NEIGHBOURS,
                                                                           exclude_rows=self.model.memory.rows_of(ids))}
        scores = []
        for i, (title, label, cat) in enumerate(zip(titles, labels, categories)):
            notes = self._notes(items[i], cat, inferred[i], used_video[i])
            neighbours = self._neighbours(retrieved[explain], i, explain)
            scores.append(Score(
                title=title, label=round(float(label), 4),
                predicted_comments=round(float(2.0 ** label - 1.0), 2),
                percentile_category=self.percentile(float(label), cat),
                percentile_overall=self.percentile(float(label)),
                category=cat, category_inferred=inferred[i], neighbours=neighbours, notes=notes))
        return scores

    def percentile(self, label: float, category: str | None = None) -> float:
        ref = self._by_category.get(category, self._overall) if category else self._overall
        return round(100.0 * np.searchsorted(ref, label, side="right") / max(1, len(ref)), 1)

    def _neighbours(self, found, i: int, space: str) -> list[dict[str, Any]]:
        rows, sims = found
        bank = self.model.memory
        out = []
        for row, sim in zip(rows[i, :EXPLAIN_NEIGHBOURS], sims[i, :EXPLAIN_NEIGHBOURS]):
            out.append({"video_id": int(bank.video_ids[row]), "title": bank.titles[row],
                        "category": str(bank.categories[row]), "comments": int(bank.comments[row]),
                        "label": round(float(bank.labels[row]), 4), "similarity": round(float(sim), 4),
                        "space": space})
        return out

    def _visual_rows(self, items: list[dict[str, Any]]) -> tuple[np.ndarray | None, list[bool]]:
        """Frame features of the items' video files, where the model has a visual branch and an encoder for it."""
        space = self.model.visual_encoder
        used = [False] * len(items)
        if space is None or not any(it.get("video") for it in items):
            return None, used
        rows = np.zeros((len(items), space.dim), dtype=np.float32)
        for i, item in enumerate(items):
            vector = space.encode_video(str(item["video"])) if item.get("video") else None
            if vector is not None:
                rows[i], used[i] = vector, True
        return rows, used

    def _notes(self, item: dict[str, Any], category: str, inferred: bool, used_video: bool = False) -> list[str]:
        notes = []
        if inferred:
            notes.append(f"no category given: '{category}' inferred from the nearest MicroLens videos")
        elif category not in self._by_category:
            notes.append(f"category '{category}' is not in the training corpus: overall percentile used")
        if item.get("description"):
            notes.append("the description is not used: the training corpus has titles only (no captions)")
        if item.get("video") and not used_video:
            why = ("this model was trained without frame features" if self.model.visual_encoder is None else
                   f"no frame encoder '{self.model.visual_encoder.encoder}' is registered")
            notes.append(f"the video file is not used: {why} (see popcorn/popularity/visual.py)")
        return notes


# ---------------------------------------------------------------------------------------------------- training


def default_settings(corpus: Corpus, seed: int = 0) -> Settings:
    """Text and retrieval; plus the visual branch when the corpus folder holds frame features for most videos."""
    settings = Settings(seed=seed)
    visual = VisualSpace.load(corpus.source) if Path(corpus.source).is_dir() else None
    if visual is not None and visual.coverage(corpus.table["video_id"]) >= MIN_COVERAGE:
        settings = replace(settings, retrieval=settings.retrieval + ("visual",))
    return settings


def fit_predictor(corpus: Corpus, settings: Settings = Settings(), progress: Progress | None = None) -> Predictor:
    """Fit h on a corpus (nothing saved). Its `info["validation"]` holds the metrics of the model's out-of-fold
    predictions on that corpus (5-fold: every video predicted by a stack that did not see it)."""
    say = progress or (lambda message: None)
    started = time.perf_counter()
    say(f"training the popularity predictor on {len(corpus)} MicroLens videos from {corpus.source}")
    embeddings = None
    if "embedding" in settings.retrieval:
        embeddings = title_vectors(corpus.table["title"].tolist(), corpus.fingerprint, get_embedder(settings.embedding),
                                   say)
    visual = VisualSpace.load(corpus.source) if "visual" in settings.retrieval else None
    model = PopularityModel.fit(corpus.table, settings, embeddings=embeddings, visual=visual, progress=say)
    validation = {"kind": f"{settings.folds}-fold out-of-fold on the training corpus",
                  **regression_metrics(model.memory.labels, model.oof_predictions)}
    info = {"corpus": corpus.source, "fingerprint": corpus.fingerprint, "n_train": len(corpus),
            "settings": settings.to_dict(), "validation": validation,
            "train_seconds": round(time.perf_counter() - started, 1)}
    return Predictor(model, info)


def train(data_dir: str | Path | None = None, seed: int = 0, progress: Progress | None = None,
          settings: Settings | None = None, save: bool = True) -> dict[str, Any]:
    """Train h on the whole corpus (POPCORN_DATA_DIR, or `data_dir`) and save the checkpoint in the cache.

    Returns {"n_train", "validation": {kind, n, nMSE, SRC, MAE}, "train_seconds", "settings", "checkpoint"}.
    """
    corpus = load_corpus(data_dir)
    settings = replace(settings or default_settings(corpus), seed=seed)
    predictor = fit_predictor(corpus, settings, progress)
    result = {key: predictor.info[key] for key in ("n_train", "validation", "train_seconds", "settings")}
    result["checkpoint"] = None
    if save:
        path = predictor.save(checkpoint_path(corpus, settings))
        result["checkpoint"] = str(path)
        if progress:
            progress(f"saved {path}")
    _PREDICTORS[_key(corpus, settings)] = predictor
    return result


_PREDICTORS: dict[str, Predictor] = {}
_LOCK = threading.Lock()


def _key(corpus: Corpus, settings: Settings) -> str:
    return f"{corpus.fingerprint}-{settings_key(settings)}"


def log_progress(message: str) -> None:
    print(f"[popularity] {message}", file=sys.stderr, flush=True)


def checkpoint_ready(data_dir: str | Path | None = None) -> bool:
    """Whether get_predictor() finds this corpus' predictor loaded or on disk (False: it will train, or install a
    prebuilt checkpoint, first)."""
    corpus = load_corpus(data_dir)
    settings = default_settings(corpus)
    return _key(corpus, settings) in _PREDICTORS or checkpoint_path(corpus, settings).exists()


def get_predictor(data_dir: str | Path | None = None, progress: Progress | None = None) -> Predictor:
    """The predictor trained on the configured corpus: loaded once per process, trained first if no checkpoint."""
    corpus = load_corpus(data_dir)
    settings = default_settings(corpus)
    key = _key(corpus, settings)
    with _LOCK:
        if key in _PREDICTORS:
            return _PREDICTORS[key]
        path = checkpoint_path(corpus, settings)
        say = progress or log_progress
        if not path.exists():  # online, a verified prebuilt checkpoint saves the training (popcorn/serve/prebuilt.py)
            prebuilt.install(corpus, say)
        if path.exists():
            _PREDICTORS[key] = Predictor.load(path)
        else:
            say(f"no popularity checkpoint for this corpus yet: training one now (a few minutes, once) -> {path}")
            train(data_dir, seed=settings.seed, progress=say, settings=settings)
        return _PREDICTORS[key]
