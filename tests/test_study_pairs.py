"""Pairing rules: the same query, differing in exactly one factor; pair files; batch folders."""

from __future__ import annotations

import csv
import json

import pytest

from popcorn.study import StudyError
from popcorn.study import pairs as P


def run(tmp_path, rid, query, mode="pe", llm="local", video="storyboard", created=0.0, h=None, status="done",
        with_video=True, category="Food"):
    path = tmp_path / f"{rid}.mp4"
    if with_video:
        path.write_bytes(b"\x00\x00\x00\x18ftypisom")
    return {"id": rid, "created": created, "status": status, "query": query,
            "settings": {"query": query, "mode": mode, "llm": llm, "video": video},
            "plan": {"title": f"title {rid}", "matched_categories": [category]},
            "score": {"predicted_comments": h} if h is not None else {}, "video": {"video": str(path)}}


def test_runs_pair_on_the_same_query_differing_only_in_the_factor(tmp_path):
    runs = [run(tmp_path, "r1", "Cats in snow", "pe", created=1, h=10.0),
            run(tmp_path, "r2", "cats  in snow", "basic", created=2, h=4.0),  # same query, spacing/case aside
            run(tmp_path, "r3", "cats in snow", "basic", llm="openai", created=3),  # another LLM: not paired by mode
            run(tmp_path, "r4", "dogs", "pe", created=4), run(tmp_path, "r5", "dogs", "pe", created=5),  # same mode
            run(tmp_path, "r6", "a golden retriever puppy sees the sea for the first time", "pe", created=6),
            run(tmp_path, "r7", "a golden retriever puppy sees the sea for the first time", "basic", created=7),
            run(tmp_path, "r8", "fish", "pe", created=8), run(tmp_path, "r9", "fish", "basic", status="failed"),
            run(tmp_path, "r10", "birds", "pe"), run(tmp_path, "r11", "birds", "basic", with_video=False)]
    pairs = P.pairs_from_runs(runs, "mode", "pe", "basic")
    got = sorted((p["a"]["run_id"], p["b"]["run_id"]) for p in pairs)
    assert got == [("r1", "r2"), ("r6", "r7")]
    by_a = {p["a"]["run_id"]: p for p in pairs}
    assert by_a["r1"]["a"]["condition"] == "pe" and by_a["r1"]["b"]["condition"] == "basic"
    assert (by_a["r1"]["a"]["h"], by_a["r1"]["b"]["h"]) == (10.0, 4.0)
    assert by_a["r6"]["prompt_type"] == "concrete"  # a studio example idea
    assert by_a["r1"]["prompt_type"] == "unknown" and by_a["r1"]["category"] == "Food"
    # conditions named the other way round put "a" first as named
    flipped = P.pairs_from_runs(runs, "mode", "basic", "pe")
    assert sorted((p["a"]["run_id"], p["b"]["run_id"]) for p in flipped) == [("r2", "r1"), ("r7", "r6")]


def test_runs_are_matched_one_to_one_and_by_llm(tmp_path):
    runs = [run(tmp_path, f"q{i}", "idea", llm=llm, created=i) for i, llm in enumerate(["a", "a", "b", "b", "b"])]
    pairs = P.pairs_from_runs(runs, "llm")
    assert sorted((p["a"]["run_id"], p["b"]["run_id"]) for p in pairs) == [("q0", "q2"), ("q1", "q3")]
    with pytest.raises(StudyError, match="unknown factor"):
        P.pairs_from_runs(runs, "colour")


def test_prompt_type_from_the_run_wins(tmp_path):
    r = run(tmp_path, "x", "some idea")
    r["settings"]["prompt_type"] = "Abstract"
    assert P.prompt_type(r, {}) == "abstract"
    r = run(tmp_path, "y", "some idea")  # a batch run: its prompt file's type and category
    r["settings"]["batch"] = {"type": "concrete", "category": "Pets"}
    assert (P.prompt_type(r, {}), P.category(r)) == ("concrete", "Pets")


def test_pair_file_json_and_csv(tmp_path):
    a, b = tmp_path / "one.mp4", tmp_path / "two.mp4"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    entries = [{"a": str(a), "b": str(b), "condition_a": "ltx", "condition_b": "wan", "query": "q",
                "prompt_type": "concrete", "h_a": "3.5", "h_b": ""}]
    (tmp_path / "pairs.json").write_text(json.dumps(entries))
    (pair,) = P.pairs_from_file(tmp_path / "pairs.json")
    assert (pair["a"]["condition"], pair["b"]["condition"], pair["a"]["h"], pair["b"]["h"]) == ("ltx", "wan", 3.5, None)
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(entries[0]))
        writer.writeheader()
        writer.writerows(entries)
    assert P.pairs_from_file(tmp_path / "pairs.csv")[0]["a"]["video"] == str(a)
    # our own format round-trips
    P.write_pair_file([pair], tmp_path / "again.json")
    assert P.pairs_from_file(tmp_path / "again.json")[0]["b"]["video"] == str(b)
    (tmp_path / "bad.json").write_text(json.dumps([{"a": str(a), "b": str(tmp_path / "missing.mp4")}]))
    with pytest.raises(StudyError, match="neither a stored run nor a video file"):
        P.pairs_from_file(tmp_path / "bad.json")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(StudyError, match="holds no pairs"):
        P.pairs_from_file(tmp_path / "empty.json")


def test_batch_folder_of_run_json_files(tmp_path):
    for rid, mode in (("b1", "pe"), ("b2", "basic")):
        folder = tmp_path / "batch" / rid
        folder.mkdir(parents=True)
        (folder / "video.mp4").write_bytes(b"v")
        (folder / "run.json").write_text(json.dumps({"id": rid, "settings": {"query": "q", "mode": mode, "llm": "l",
                                                                             "video": "v"}, "video": {}}))
    (pair,) = P.pairs_from_batch(tmp_path / "batch", "mode", "pe", "basic")
    assert (pair["a"]["run_id"], pair["b"]["run_id"]) == ("b1", "b2")
    with pytest.raises(StudyError, match="not a folder"):
        P.pairs_from_batch(tmp_path / "nope", "mode")


def test_a_video_model_study_with_the_storyboard_preview_is_flagged_as_not_blind(tmp_path):
    from popcorn.study.owner import blindness_warnings

    runs = [run(tmp_path, "v1", "q", video="storyboard"), run(tmp_path, "v2", "q", video="ltx")]
    assert blindness_warnings(P.pairs_from_runs(runs, "video"))  # its frames say "PREVIEW - storyboard"
    runs = [run(tmp_path, "m1", "q", mode="pe"), run(tmp_path, "m2", "q", mode="basic")]
    assert blindness_warnings(P.pairs_from_runs(runs, "mode")) == []  # both sides storyboard: nothing tells them apart
