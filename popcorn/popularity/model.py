"""h: the retrieval-augmented popularity model (MMRA-style), as a two-level stack.

    level 1, from the item's text and the memory bank of training videos:
        ridge      TF-IDF ridge regressions on the title document (words + hashtags + category token, char n-grams)
        retrieval  label statistics of the top-k most similar training videos in the word and char TF-IDF spaces
                   (k = 5, 20, 50)
        category   the category's mean label (target encoding)
        hashtags   the mean / max / min label of the title's hashtags (target encoding)
        counts     length, words, hashtags, punctuation, digits, emoji
        [embedding a sentence-embedding space for retrieval, optional]
        [visual    a frame-feature space, when visual features are supplied; see popcorn/popularity/visual.py]
    level 2: gradient boosting on those features -> the label log2(1 + comments).

For training items every level-1 feature is computed without the item: ridge and target encodings out-of-fold,
retrieval leaving the item out of the memory bank. So the stack learns from features that look like those of an
unseen video.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from popcorn.popularity import encoding, memory, text
from popcorn.popularity.memory import MemoryBank
from popcorn.retrieval.corpus import UNKNOWN_CATEGORY, popularity_label
from popcorn.retrieval.embed import get_embedder

Progress = Callable[[str], None]

TEXT_SPACES = ("word", "char")
RIDGE_ALPHA = 3.0
CATEGORY_VOTERS = 20  # neighbours that vote for the category of an item that has none


@dataclass(frozen=True)
class Settings:
    """What the model uses; the ablations of bench/predictor.py switch these off one at a time."""

    text: tuple[str, ...] = TEXT_SPACES  # TF-IDF ridges: "word" (words, hashtags, category token), "char" (2-5 grams)
    # spaces searched for neighbours: "word", "char", "embedding", "visual". The embedding space adds ~0.006 SRC
    # (bench/RESULTS.md) but embedding new titles holds scoring to ~35-100 items/s on 2 cores: opt-in.
    retrieval: tuple[str, ...] = TEXT_SPACES
    category: bool = True  # the category token and the category's mean label
    hashtags: bool = True  # the hashtags' mean labels
    embedding: str = "packaged:all-MiniLM-L6-v2"  # the popcorn.retrieval.embed model of the "embedding" space
    folds: int = 5
    seed: int = 0

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


def _vectorizer(space: str) -> TfidfVectorizer:
    if space == "word":
        return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=text.TOKEN_PATTERN,
                               dtype=np.float32)
    if space == "char":
        return TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=3, sublinear_tf=True,
                               max_features=200_000, dtype=np.float32)
    raise ValueError(f"unknown text space {space!r}; known: {TEXT_SPACES}")


def _stacker(seed: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=500, learning_rate=0.03, max_leaf_nodes=15, min_samples_leaf=80,
                                         l2_regularization=1.0, random_state=seed)


def _one_openmp_thread():
    """Gradient boosting runs on one OpenMP thread: with torch's OpenMP runtime loaded beside scikit-learn's, or on a
    busy machine, its many small parallel regions spin and were measured 10x slower on two threads than on one."""
    return threadpool_limits(limits=1, user_api="openmp")


def _fit_stackers(features: np.ndarray, labels: np.ndarray, subsets: list[np.ndarray],
                  seed: int) -> list[HistGradientBoostingRegressor]:
    """One gradient boosting per row subset, side by side on the cores (each on one OpenMP thread, set inside its
    own worker thread: OpenMP's thread count is per thread). Each fit is the same as alone (fixed seed, its rows)."""
    def fit(rows: np.ndarray) -> HistGradientBoostingRegressor:
        with _one_openmp_thread():
            return _stacker(seed).fit(features[rows], labels[rows])

    with ThreadPoolExecutor(max_workers=max(1, min(len(subsets), os.cpu_count() or 1))) as pool:
        return list(pool.map(fit, subsets))


@dataclass
class Inputs:
    """A batch of items as the model reads them."""

    titles: list[str]
    categories: list[str | None]  # None (or "Unknown") = not given
    video_ids: list[int | None] | None = None  # ids to keep out of their own retrieval
    visual: np.ndarray | None = None  # frame features, one row per item (zero rows where an item has none)


@dataclass
class PopularityModel:
    settings: Settings
    vectorizers: dict[str, TfidfVectorizer]
    ridges: dict[str, Ridge]
    memory: MemoryBank
    category_encoder: encoding.TargetEncoder
    hashtag_encoder: encoding.TargetEncoder
    stacker: HistGradientBoostingRegressor
    feature_names: list[str]
    oof_predictions: np.ndarray  # the model's out-of-fold prediction for every memory video
    visual_encoder: object | None = None  # popcorn.popularity.visual.VisualSpace with a "visual" retrieval space

    # ------------------------------------------------------------------------------------------------ inference

    @property
    def retrieval_spaces(self) -> list[str]:
        return [sp for sp in self.settings.retrieval if sp in self.memory.spaces]

    def word_matrix(self, titles: list[str], categories: list[str | None] | None = None) -> sparse.csr_matrix:
        """The word TF-IDF rows (the category token included when the settings use it and one is given)."""
        cats = categories if categories is not None and self.settings.category else [None] * len(titles)
        return self.vectorizers["word"].transform([text.document(t, c) for t, c in zip(titles, cats)]).tocsr()

    def text_matrices(self, titles: list[str], categories: list[str | None]) -> dict[str, sparse.csr_matrix]:
        return {space: self.word_matrix(titles, categories) if space == "word"
                else vectorizer.transform([text.clean(t) for t in titles]).tocsr()
                for space, vectorizer in self.vectorizers.items()}

    def query_spaces(self, inputs: Inputs, categories: list[str | None]) -> dict[str, object]:
        spaces: dict[str, object] = dict(self.text_matrices(inputs.titles, categories))
        if "embedding" in self.settings.retrieval:
            spaces["embedding"] = get_embedder(self.settings.embedding).encode_many(inputs.titles)
        if "visual" in self.settings.retrieval and self.visual_encoder is not None:
            spaces["visual"] = self.visual_encoder.query_matrix(inputs.visual, len(inputs.titles))
        return spaces

    def infer_categories(self, titles: list[str]) -> tuple[list[str], list[float]]:
        """A category for items that have none: the similarity-weighted vote of their nearest training videos."""
        rows, sims = self.memory.search("word", self.word_matrix(titles), k=CATEGORY_VOTERS)  # always in the bank
        names, shares = [], []
        for r, s in zip(rows, sims):
            votes: dict[str, float] = {}
            for row, sim in zip(r, np.clip(s, 0, None) + 1e-6):
                cat = str(self.memory.categories[row])
                votes[cat] = votes.get(cat, 0.0) + float(sim)
            best = max(votes, key=lambda c: (votes[c], c))
            names.append(best)
            shares.append(votes[best] / sum(votes.values()))
        return names, shares

    def resolve_categories(self, categories: list[str | None], titles: list[str]) -> tuple[list[str], list[bool]]:
        """The given categories, with missing ones inferred; and which were inferred."""
        missing = [i for i, c in enumerate(categories) if not c or c == UNKNOWN_CATEGORY]
        resolved = [str(c) if c else UNKNOWN_CATEGORY for c in categories]
        if missing:
            inferred, _ = self.infer_categories([titles[i] for i in missing])
            for i, cat in zip(missing, inferred):
                resolved[i] = cat
        flags = [False] * len(categories)
        for i in missing:
            flags[i] = True
        return resolved, flags

    def features(self, inputs: Inputs, categories: list[str]) -> tuple[np.ndarray, dict]:
        """Level-1 features of new items (memory = all training videos, minus any row with the item's own id)."""
        spaces = self.query_spaces(inputs, categories)
        exclude = self.memory.rows_of(inputs.video_ids) if inputs.video_ids is not None else None
        blocks = [self._ridge_block(spaces)]
        retrieved = {}
        for name in self.retrieval_spaces:
            rows, sims = self.memory.search(name, spaces[name], exclude_rows=exclude)
            retrieved[name] = (rows, sims)
            blocks.append(memory.neighbour_features(rows, sims, self.memory.labels))
        blocks.append(self._encoding_block(inputs.titles, categories))
        blocks.append(text.basic_features(inputs.titles))
        return np.column_stack(blocks).astype(np.float32), retrieved

    def predict(self, inputs: Inputs) -> np.ndarray:
        categories, _ = self.resolve_categories(inputs.categories, inputs.titles)
        features, _ = self.features(inputs, categories)
        return self.predict_features(features)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        with _one_openmp_thread():
            return self.stacker.predict(features)

    def _ridge_block(self, spaces: dict[str, object]) -> np.ndarray:
        columns = []
        for name, ridge in self.ridges.items():  # ridges only exist for settings.text
            columns.append(ridge.predict(_ridge_input(spaces, name)))
        return np.column_stack(columns) if columns else np.zeros((_rows(spaces), 0))

    def _encoding_block(self, titles: list[str], categories: list[str]) -> np.ndarray:
        blocks = []
        if self.settings.category:
            blocks.append(encoding.encode_categories(self.category_encoder, categories))
        if self.settings.hashtags:
            blocks.append(encoding.encode_hashtags(self.hashtag_encoder, titles))
        return np.column_stack(blocks) if blocks else np.zeros((len(titles), 0), dtype=np.float32)

    # ------------------------------------------------------------------------------------------------ training

    @classmethod
    def fit(cls, table, settings: Settings = Settings(), embeddings: np.ndarray | None = None,
            visual=None, progress: Progress | None = None) -> "PopularityModel":
        """Train on a corpus table (video_id, title, category, comments). `embeddings`: one row per table row."""
        say = progress or (lambda message: None)
        titles = [str(t) for t in table["title"]]
        categories = [str(c) for c in table["category"]]
        labels = popularity_label(table["comments"].to_numpy())
        ids = table["video_id"].to_numpy(np.int64)
        folds = list(KFold(settings.folds, shuffle=True, random_state=settings.seed).split(titles))

        tfidf_spaces = [sp for sp in TEXT_SPACES if sp in settings.text or sp in settings.retrieval or sp == "word"]
        say(f"TF-IDF features for {len(titles)} videos ({', '.join(tfidf_spaces)})")
        vectorizers = {space: _vectorizer(space) for space in tfidf_spaces}
        spaces: dict[str, object] = {}
        for space, vectorizer in vectorizers.items():
            if space == "word":
                docs = [text.document(t, c if settings.category else None) for t, c in zip(titles, categories)]
            else:
                docs = [text.clean(t) for t in titles]
            spaces[space] = vectorizer.fit_transform(docs).tocsr()
        if "embedding" in settings.retrieval:
            if embeddings is None:
                raise ValueError("the embedding space needs the corpus embeddings")
            spaces["embedding"] = np.ascontiguousarray(embeddings, dtype=np.float32)
        visual_encoder = visual if "visual" in settings.retrieval else None
        if visual_encoder is not None:
            spaces["visual"] = visual_encoder.rows_for(ids)
        unknown = [sp for sp in settings.retrieval if sp not in spaces and sp != "visual"]
        if unknown:
            raise ValueError(f"unknown retrieval spaces {unknown}")
        bank = MemoryBank(ids, titles, np.asarray(categories, dtype=object), table["comments"].to_numpy(np.int64),
                          labels, {sp: spaces[sp] for sp in spaces if sp in settings.retrieval or sp == "word"})

        say("ridge regressions, out of fold")
        ridge_names = list(settings.text) + (["+".join(settings.text)] if len(settings.text) > 1 else [])
        ridge_oof = np.zeros((len(titles), len(ridge_names)))
        inputs = {name: _ridge_input(spaces, name) for name in ridge_names}
        jobs = [(name, train_idx, held_idx) for name in ridge_names for train_idx, held_idx in folds]
        jobs += [(name, None, None) for name in ridge_names]  # the fits on everything, kept for inference

        def fit_ridge(job):
            name, train_idx, _ = job
            x, y = (inputs[name], labels) if train_idx is None else (inputs[name][train_idx], labels[train_idx])
            return Ridge(alpha=RIDGE_ALPHA).fit(x, y)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # scipy's sparse products free the GIL
            fitted = list(pool.map(fit_ridge, jobs))
        ridges = {}
        for (name, train_idx, held_idx), ridge in zip(jobs, fitted):
            if train_idx is None:
                ridges[name] = ridge
            else:
                ridge_oof[held_idx, ridge_names.index(name)] = ridge.predict(inputs[name][held_idx])

        blocks = [ridge_oof]
        names = [f"ridge:{n}" for n in ridge_names]
        own_rows = np.arange(len(titles))
        for name in [sp for sp in settings.retrieval if sp in bank.spaces]:
            say(f"retrieval features in the {name} space, each video left out of its own neighbours")
            rows, sims = bank.search(name, bank.spaces[name], exclude_rows=own_rows)
            blocks.append(memory.neighbour_features(rows, sims, labels))
            names += memory.neighbour_feature_names(name)

        say("category and hashtag encodings, out of fold")
        category_encoder = encoding.TargetEncoder.fit(encoding.category_keys(categories), labels,
                                                      encoding.CATEGORY_PRIOR)
        hashtag_encoder = encoding.TargetEncoder.fit(encoding.hashtag_keys(titles), labels, encoding.HASHTAG_PRIOR)
        if settings.category or settings.hashtags:
            enc = None
            for train_idx, held_idx in folds:
                part = cls._fold_encodings(settings, titles, categories, labels, train_idx, held_idx)
                enc = np.zeros((len(titles), part.shape[1]), dtype=np.float32) if enc is None else enc
                enc[held_idx] = part
            blocks.append(enc)
            names += (["category:mean"] if settings.category else []) + (
                list(encoding.HASHTAG_FEATURES) if settings.hashtags else [])
        blocks.append(text.basic_features(titles))
        names += [f"count:{n}" for n in text.BASIC_FEATURES]
        features = np.column_stack(blocks).astype(np.float32)

        say("gradient boosting on the stacked features (and its out-of-fold predictions, for percentiles)")
        oof = np.zeros(len(titles))
        everything = np.arange(len(titles))
        fitted = _fit_stackers(features, labels, [train_idx for train_idx, _ in folds] + [everything], settings.seed)
        for (_, held_idx), fold_stacker in zip(folds, fitted):
            with _one_openmp_thread():
                oof[held_idx] = fold_stacker.predict(features[held_idx])
        stacker = fitted[-1]
        return cls(settings, vectorizers, ridges, bank, category_encoder, hashtag_encoder, stacker, names, oof,
                   visual_encoder)

    @staticmethod
    def _fold_encodings(settings, titles, categories, labels, train_idx, held_idx) -> np.ndarray:
        parts = []
        if settings.category:
            enc = encoding.TargetEncoder.fit(encoding.category_keys([categories[i] for i in train_idx]),
                                             labels[train_idx], encoding.CATEGORY_PRIOR)
            parts.append(encoding.encode_categories(enc, [categories[i] for i in held_idx]))
        if settings.hashtags:
            enc = encoding.TargetEncoder.fit(encoding.hashtag_keys([titles[i] for i in train_idx]),
                                             labels[train_idx], encoding.HASHTAG_PRIOR)
            parts.append(encoding.encode_hashtags(enc, [titles[i] for i in held_idx]))
        return np.column_stack(parts)


def _ridge_input(spaces: dict[str, object], name: str):
    parts = [spaces[p] for p in name.split("+")]
    return parts[0] if len(parts) == 1 else sparse.hstack(parts).tocsr()


def _rows(spaces: dict[str, object]) -> int:
    return next(iter(spaces.values())).shape[0]
