"""Bench of the popularity predictor h: held-out accuracy with ablations, training time, scoring throughput.

    python bench/predictor.py                       # everything but the embedding ablation
    python bench/predictor.py --embedding           # also the MiniLM-L6 retrieval space (embeds the corpus)
    python bench/predictor.py --only throughput

The held-out split: the corpus (POPCORN_DATA_DIR) split 85/15 by video id (seed 0) into two raw-layout folders;
every model is trained on the first and evaluated on the second through `evaluate`, the code path of
`python -m popcorn predictor eval`. Throughput: `score_batch` on the held-out titles against scoring them one at a
time, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sklearn.linear_model import Ridge

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from popcorn import config  # noqa: E402
from popcorn.retrieval.corpus import load_raw_dir, popularity_label  # noqa: E402
from popcorn.popularity import Settings, evaluate, fit_predictor, regression_metrics, split_ids, subset_raw_dir  # noqa: E402
from popcorn.popularity.model import _vectorizer  # noqa: E402
from popcorn.popularity.text import document  # noqa: E402

ABLATIONS = {
    "h (default: word+char ridges, word+char retrieval, category, hashtags)": Settings(),
    "without retrieval": Settings(retrieval=()),
    "retrieval in word space only": Settings(retrieval=("word",)),
    "without category": Settings(category=False),
    "without hashtag encodings": Settings(hashtags=False),
    "word TF-IDF only (no char n-grams anywhere)": Settings(text=("word",), retrieval=("word",)),
}
MINILM = "packaged:all-MiniLM-L6-v2"
EMBEDDING = {
    "retrieval also in MiniLM-L6 space": Settings(retrieval=("word", "char", "embedding"), embedding=MINILM),
    "retrieval in word + MiniLM-L6 spaces": Settings(retrieval=("word", "embedding"), embedding=MINILM),
    "retrieval in MiniLM-L6 space only": Settings(retrieval=("embedding",), embedding=MINILM),
}


def machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()} {model}, {cpus} cores, load average {os.getloadavg()[0]:.1f} at start"


def references(train_table: pd.DataFrame, test_table: pd.DataFrame) -> dict[str, dict]:
    """The issue's reference points on the same split: category means, TF-IDF ridge on title + category."""
    y_train = popularity_label(train_table["comments"].to_numpy())
    y_test = popularity_label(test_table["comments"].to_numpy())
    means = pd.Series(y_train).groupby(train_table["category"].to_numpy()).mean()
    by_category = test_table["category"].map(means).fillna(y_train.mean()).to_numpy()
    vectorizer = _vectorizer("word")
    x_train = vectorizer.fit_transform([document(t, c) for t, c in zip(train_table["title"], train_table["category"])])
    x_test = vectorizer.transform([document(t, c) for t, c in zip(test_table["title"], test_table["category"])])
    ridge = Ridge(alpha=3.0).fit(x_train, y_train).predict(x_test)
    return {"reference: category means": regression_metrics(y_test, by_category),
            "reference: TF-IDF ridge on title + category": regression_metrics(y_test, ridge)}


def accuracy(train_dir: Path, test_dir: Path, settings_by_name: dict[str, Settings],
             keep: dict | None = None) -> dict[str, dict]:
    """Each setting trained on train_dir and scored on test_dir; the default's predictor goes into keep["default"]."""
    train_corpus = load_raw_dir(train_dir)
    rows = references(train_corpus.table, load_raw_dir(test_dir).table)
    for name, settings in settings_by_name.items():
        started = time.perf_counter()
        predictor = fit_predictor(train_corpus, settings)
        fit_s = time.perf_counter() - started
        result = evaluate(test_dir, predictor)
        rows[name] = {k: result[k] for k in ("n", "nMSE", "SRC", "MAE")} | {
            "oof_SRC": predictor.info["validation"]["SRC"], "train_s": round(fit_s, 1)}
        if name.startswith("h (default"):
            rows[name]["per_category_SRC"] = result["per_category_SRC"]
            if keep is not None:
                keep["default"] = predictor
        print(f"{name}: {rows[name]}", flush=True)
    return rows


def throughput(predictor, test_dir: Path, n_batch: int = 2000, n_single: int = 200) -> dict:
    table = load_raw_dir(test_dir).table
    items = [{"title": t, "category": c} for t, c in zip(table["title"], table["category"])]
    items = (items * (n_batch // len(items) + 1))[:n_batch]
    predictor.score_batch(items[:50])  # warm-up (torch import, first predict)
    started = time.perf_counter()
    batch = predictor.score_batch(items)
    batch_s = time.perf_counter() - started
    started = time.perf_counter()
    single = [predictor.score(**items[i]) for i in range(n_single)]
    single_s = time.perf_counter() - started
    assert all(abs(a.label - b.label) < 1e-6 for a, b in zip(batch, single))
    started = time.perf_counter()
    unnamed = predictor.score_batch([{"title": it["title"]} for it in items])  # category inferred
    unnamed_s = time.perf_counter() - started
    assert len(unnamed) == n_batch
    out = {"batch_items_per_s": round(n_batch / batch_s, 1), "one_at_a_time_items_per_s": round(n_single / single_s, 1),
           "batch_without_category_items_per_s": round(n_batch / unnamed_s, 1)}
    out["batch_vs_one_at_a_time"] = round(out["batch_items_per_s"] / out["one_at_a_time_items_per_s"], 1)
    print(f"throughput: {out}", flush=True)
    return out


def full_training_time() -> dict:
    """`train()` on all of the configured corpus into a throw-away cache: what `predictor train` costs."""
    from popcorn.popularity import train

    previous = os.environ.get("POPCORN_CACHE_DIR")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["POPCORN_CACHE_DIR"] = cache
        started = time.perf_counter()
        result = train(seed=0)
        seconds = time.perf_counter() - started
        size = Path(result["checkpoint"]).stat().st_size
    if previous is None:
        os.environ.pop("POPCORN_CACHE_DIR")
    else:
        os.environ["POPCORN_CACHE_DIR"] = previous
    out = {"n_train": result["n_train"], "train_s": round(seconds, 1), "checkpoint_MB": round(size / 1e6, 1),
           "oof_validation": result["validation"]}
    print(f"full training: {out}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("accuracy", "throughput", "train"))
    parser.add_argument("--embedding", action="store_true", help="add the MiniLM-L6 retrieval ablations")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    source = config.data_dir()
    full = load_raw_dir(source)
    report = {"machine": machine(), "corpus": str(source), "n": len(full)}
    print(report, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        train_ids, test_ids = split_ids(full.table["video_id"], test_fraction=0.15, seed=0)
        train_dir = subset_raw_dir(source, Path(tmp) / "train", train_ids)
        test_dir = subset_raw_dir(source, Path(tmp) / "test", test_ids)
        trained: dict = {}
        if args.only in (None, "accuracy"):
            settings = dict(ABLATIONS) | (EMBEDDING if args.embedding else {})
            report["accuracy"] = accuracy(train_dir, test_dir, settings, keep=trained)
        if args.only in (None, "throughput"):  # the default model accuracy() trained, else one trained here
            predictor = trained.get("default") or fit_predictor(load_raw_dir(train_dir))
            report["throughput"] = throughput(predictor, test_dir)
    if args.only in (None, "train"):
        report["full_training"] = full_training_time()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
