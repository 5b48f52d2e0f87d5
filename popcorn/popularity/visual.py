"""The frame-feature branch of h: a "visual" retrieval space, trained when frame features are supplied.

MicroLens as shipped here has titles only. A user who has frame features (the official MicroLens visual features,
or vectors from any vision encoder run over the videos' frames) puts them beside the raw files as

    visual_features.npz   video_id: (n,) int,  features: (n, d) float,  encoder: () str naming what made them

Then `train` adds a retrieval space over those vectors (neighbour label statistics, as for the text spaces), and
`evaluate` reads the held-out folder's own visual_features.npz for its videos. To score a new video file the same
encoder must turn its frames into a vector: `register_frame_encoder(name, fn)` with `fn(path) -> (d,) array`; with
none registered for the features' encoder, a video file is left out and the score says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

FEATURES_FILE = "visual_features.npz"
MIN_COVERAGE = 0.5  # share of training videos that need features for the branch to be trained

FrameEncoder = Callable[[str], np.ndarray]
_FRAME_ENCODERS: dict[str, FrameEncoder] = {}


def register_frame_encoder(name: str, encoder: FrameEncoder) -> None:
    """Make video files scorable by the visual branch whose features were made by `name`."""
    _FRAME_ENCODERS[name] = encoder


def frame_encoder(name: str) -> FrameEncoder | None:
    return _FRAME_ENCODERS.get(name)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


@dataclass
class VisualSpace:
    encoder: str
    video_ids: np.ndarray  # int64
    features: np.ndarray  # (n, d) float32, L2-normalised

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    @classmethod
    def load(cls, folder: str | Path) -> "VisualSpace | None":
        path = Path(folder) / FEATURES_FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as blob:
            encoder = str(blob["encoder"]) if "encoder" in blob else "unknown"
            return cls(encoder, np.asarray(blob["video_id"], dtype=np.int64), _normalise(blob["features"]))

    def coverage(self, video_ids) -> float:
        ids = np.asarray(video_ids, dtype=np.int64)
        return float(np.isin(ids, self.video_ids).mean()) if len(ids) else 0.0

    def rows_for(self, video_ids) -> np.ndarray:
        """One row per id: its features, or zeros (similarity 0 to everything) where it has none."""
        index = {int(v): i for i, v in enumerate(self.video_ids)}
        out = np.zeros((len(video_ids), self.dim), dtype=np.float32)
        for i, vid in enumerate(video_ids):
            row = index.get(int(vid)) if vid is not None else None
            if row is not None:
                out[i] = self.features[row]
        return out

    def query_matrix(self, visual: np.ndarray | None, n: int) -> np.ndarray:
        if visual is None:
            return np.zeros((n, self.dim), dtype=np.float32)
        return _normalise(visual)

    def encode_video(self, path: str) -> np.ndarray | None:
        """The features of a video file, if an encoder of this space's kind is registered."""
        encoder = frame_encoder(self.encoder)
        return None if encoder is None else np.asarray(encoder(path), dtype=np.float32).reshape(-1)
