"""A histogram as a PNG, drawn with PIL (no plotting library needed): one bar series per group of values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLOURS = [(66, 133, 244), (234, 67, 53), (120, 120, 120), (52, 168, 83), (251, 188, 5), (171, 71, 188)]
WIDTH, HEIGHT, MARGIN = 760, 420, 56


def bin_counts(series: dict[str, list[float]], bins: int = 16) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shared bin edges over all the values, and each series' counts in them."""
    values = np.concatenate([np.asarray(v, dtype=float) for v in series.values() if len(v)] or [np.zeros(1)])
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    return edges, {name: np.histogram(np.asarray(v, dtype=float), bins=edges)[0] for name, v in series.items()}


def histogram_png(series: dict[str, list[float]], path: str | Path, title: str = "", bins: int = 16) -> Path:
    edges, counts = bin_counts(series, bins)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = MARGIN, 34 + 16 * len(series), WIDTH - 20, HEIGHT - MARGIN  # legend above the bars
    peak = max(1, max((int(c.max()) for c in counts.values() if c.size), default=1))
    draw.text((left, 10), title, fill="black", font=font)
    draw.line([(left, bottom), (right, bottom)], fill="black")
    draw.line([(left, top), (left, bottom)], fill="black")
    slot = (right - left) / bins
    bar = max(1.0, (slot - 4) / max(1, len(counts)))
    for s, (name, c) in enumerate(counts.items()):
        colour = COLOURS[s % len(COLOURS)]
        for i, count in enumerate(c):
            if count:
                x0 = left + i * slot + 2 + s * bar
                y0 = bottom - (bottom - top) * count / peak
                draw.rectangle([x0, y0, x0 + bar - 1, bottom - 1], fill=colour)
        draw.rectangle([right - 190, 28 + 16 * s, right - 180, 38 + 16 * s], fill=colour)
        draw.text((right - 174, 27 + 16 * s), f"{name} (n={int(c.sum())})", fill="black", font=font)
    for i in range(0, bins + 1, max(1, bins // 8)):
        x = left + i * slot
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x - 10, bottom + 6), f"{edges[i]:.1f}", fill="black", font=font)
    draw.text((left - 30, top - 4), str(peak), fill="black", font=font)
    draw.text((left + (right - left) // 2 - 90, bottom + 24), "predicted log2(1 + comments)", fill="black", font=font)
    path = Path(path)
    image.save(path)
    return path
