"""The MicroLens corpus: the real shared files, and the edge cases of the raw layout."""

import pandas as pd
import pytest

from popcorn import config
from popcorn.retrieval.corpus import COLUMNS, from_hub_table, load_corpus, load_raw_dir, popularity_label
from popcorn.types import StageError


def test_real_corpus_is_normalised(data_dir):
    corpus = load_corpus(data_dir, part="all")  # the whole of MicroLens; the default is the retrieval part
    table = corpus.table
    assert list(table.columns) == COLUMNS
    assert len(table) == 17738
    assert table["video_id"].is_unique and table["video_id"].is_monotonic_increasing
    assert (table["comments"] >= 0).all() and (table["likes"] >= 0).all()
    assert table["category"].nunique() == 23
    assert sum(corpus.skipped.values()) == 0  # the shared files are clean


def test_full_titles_win_over_the_short_ones(data_dir):
    row = load_corpus(data_dir, part="all").table.set_index("video_id").loc[1]
    # the 100k file holds the title up to its first comma; the 50k file holds all of it
    assert row["title"].startswith("Gu long song gaga bad, even three hundred years old")
    assert row["category"] == "Anime" and row["comments"] == 2


def test_label_is_log2_of_one_plus_comments():
    assert popularity_label(0) == 0.0
    assert popularity_label(1) == 1.0
    assert popularity_label([3, 7]).tolist() == [2.0, 3.0]


def _write(folder, name, text, encoding="utf-8"):
    (folder / name).write_bytes(text.encode(encoding))


def test_malformed_rows_are_counted_and_skipped(tmp_path):
    _write(tmp_path, "MicroLens-100k_title_en.csv", "1, cat video\r\nnot-a-number, x\r\n2, dog video\r\n3\r\n")
    _write(tmp_path, "tags_to_summary.csv", "video_id, tag\n1,Animal\n2,Animal\nxx,Game\n")
    _write(tmp_path, "video_label.csv", "\ufeffvideo_id,comment_count\n1,5\n2,-3\n3,abc\n")
    corpus = load_raw_dir(tmp_path)
    assert corpus.table["video_id"].tolist() == [1]  # 2 has a negative count, 3 has no title and a bad count
    assert corpus.table.iloc[0]["title"] == "cat video"
    assert corpus.skipped["MicroLens-100k_title_en.csv"] == 2
    assert corpus.skipped["tags_to_summary.csv"] == 1
    assert corpus.skipped["video_label.csv"] == 2
    assert corpus.skipped["no comment count"] == 1  # video 2 lost its label


def test_comments_from_the_official_comment_file(tmp_path):
    _write(tmp_path, "MicroLens-100k_title_en.csv", "7, a title\n8, another\n")
    _write(tmp_path, "MicroLens-100k_comment_en.txt", "u1 7 nice video\nu2 7 wow so good\nu3 8 ok cool\nbroken\n")
    corpus = load_raw_dir(tmp_path)
    assert dict(zip(corpus.table["video_id"], corpus.table["comments"])) == {7: 2, 8: 1}
    assert corpus.table["category"].tolist() == ["Unknown", "Unknown"]
    assert corpus.skipped["MicroLens-100k_comment_en.txt"] == 1


def test_missing_files_give_a_clear_message(tmp_path):
    with pytest.raises(StageError) as err:
        load_raw_dir(tmp_path / "nope")
    assert err.value.stage == "retrieve" and "POPCORN_DATA_DIR" in str(err.value)
    with pytest.raises(StageError, match="no title file"):
        load_raw_dir(tmp_path)
    _write(tmp_path, "MicroLens-100k_title_en.csv", "1, t\n")
    with pytest.raises(StageError, match="no comment counts"):
        load_raw_dir(tmp_path)


def test_no_data_source_offline_says_how_to_provide_one(monkeypatch, tmp_path):
    monkeypatch.delenv("POPCORN_DATA_DIR", raising=False)
    monkeypatch.setenv("POPCORN_OFFLINE", "1")
    monkeypatch.setattr(config, "data_dir", lambda: None)
    with pytest.raises(StageError) as err:
        load_corpus()
    assert "POPCORN_DATA_DIR" in err.value.hint


def test_hub_table_is_normalised_and_bad_rows_skipped():
    df = pd.DataFrame({
        "video_id": [3, 1, 2, "x"], "title_en": ["c", "a", None, "d"], "cover_desc": ["", "", "", ""],
        "caption_en": ["", "", "", ""], "partition": ["train"] * 4, "likes": [1, 2, 3, 4],
        "views": [10, 20, 30, 40], "comment_count": [5, 6, 7, 8]})
    corpus = from_hub_table(df, source="hub:test", categories={1: "Game"})
    assert corpus.table["video_id"].tolist() == [1, 3]
    assert corpus.table["category"].tolist() == ["Game", "Unknown"]  # partition is a split, never a category
    assert corpus.table["comments"].tolist() == [6, 5]
    assert corpus.skipped["hub:test"] == 2


def test_fingerprint_changes_with_the_labels(tmp_path):
    _write(tmp_path, "MicroLens-100k_title_en.csv", "1, t\n")
    _write(tmp_path, "video_label.csv", "video_id,comment_count\n1,5\n")
    a = load_raw_dir(tmp_path).fingerprint
    _write(tmp_path, "video_label.csv", "video_id,comment_count\n1,6\n")
    assert load_raw_dir(tmp_path).fingerprint != a
