"""The report's maths against small cases worked by hand: pairing, wins/ties/losses, bootstrap intervals, medians,
the human-matched column, and the video table when h does not see the video."""

import math

import pytest

from popcorn import stats
from popcorn.experiments.report import (Row, build_report, human_judged, judged, paired, table1, table2, to_markdown,
                                        vs_human, win_table)
from popcorn.store import Store


def row(prompt, mode, label, llm="a", video="v", seed=0, human=None, human_video=None, kind="", category="",
        video_used=False):
    return Row(id=f"{prompt}-{mode}-{llm}-{video}-{seed}", prompt_index=prompt, query=f"q{prompt}", type=kind,
               category=category, mode=mode, llm=llm, video=video, seed=seed, status="done", title=f"t{prompt}{mode}",
               label=label, human_label=human, human_video=human_video, video_used=video_used,
               h_category=category or None)


def test_compare_counts_ties_apart():
    assert stats.compare(2.0, 1.0) == 1 and stats.compare(1.0, 2.0) == -1
    assert stats.compare(1.0, 1.0 + 5e-7) == 0  # labels are rounded to 4 decimals: this is the same score
    assert stats.compare(1.0, 1.0001) == -1


def test_win_loss_tie_by_hand():
    rows = [row(0, "pe", 3.0), row(0, "basic", 2.0),  # PE wins
            row(1, "pe", 1.0), row(1, "basic", 1.0),  # tie
            row(2, "pe", 0.5), row(2, "basic", 2.5)]  # PE loses
    [r] = win_table(rows, "mode", [("pe", "basic")], lambda r: r.label, within="llm")
    assert (r["llm"], r["n"], r["groups"], r["wins"], r["ties"], r["losses"]) == ("a", 3, 3, 1, 1, 1)
    assert r["win_rate"] == pytest.approx(1 / 3, abs=1e-4) and r["tie_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert r["win_rate_without_ties"] == 0.5
    # bootstrap of [win, tie, loss]: wins ~ Binomial(3, 1/3); P(0 wins) = 8/27 > 2.5%, P(3 wins) = 1/27 > 2.5%
    assert r["win_rate_ci95"] == [0.0, 1.0]


def test_bootstrap_interval_by_hand():
    assert stats.bootstrap_interval([1, 1, 1, 1]) == (1.0, 1.0)
    assert stats.bootstrap_interval([-1, 0, -1]) == (0.0, 0.0)
    # one prompt holds every pair: resampling prompts always draws the same set, so the interval is the point
    assert stats.bootstrap_interval([1, 1, 0, -1], groups=[7, 7, 7, 7]) == (0.5, 0.5)
    # 2 prompts, one all wins, one all losses: 1/4 both wins, 1/2 one each, 1/4 both losses
    assert stats.bootstrap_interval([1, 1, -1, -1], groups=[0, 0, 1, 1]) == (0.0, 1.0)
    # 40 pairs, 30 wins: the normal approximation gives 0.75 +- 1.96 * sqrt(0.75 * 0.25 / 40) = [0.616, 0.884]
    low, high = stats.bootstrap_interval([1] * 30 + [-1] * 10, n_boot=20000)
    assert low == pytest.approx(0.616, abs=0.03) and high == pytest.approx(0.884, abs=0.03)
    assert stats.bootstrap_interval([1, -1], seed=3) == stats.bootstrap_interval([1, -1], seed=3)  # seeded


def test_pairs_only_match_on_everything_else():
    rows = [row(0, "pe", 3.0, seed=0), row(0, "basic", 2.0, seed=1),  # different seeds: no pair
            row(1, "pe", 3.0, llm="a"), row(1, "basic", 2.0, llm="b"),  # different LLMs: no pair
            row(2, "pe", 3.0), row(2, "basic", 4.0)]
    outcomes, groups = paired(rows, "mode", "pe", "basic", lambda r: r.label)
    assert (outcomes, groups) == ([-1], [2])
    assert paired([row(0, "pe", None), row(0, "basic", 1.0)], "mode", "pe", "basic", lambda r: r.label) == ([], [])


def test_llm_vs_llm_per_mode():
    rows = [row(0, "pe", 2.0, llm="a"), row(0, "pe", 1.0, llm="b"), row(1, "pe", 1.0, llm="a"),
            row(1, "pe", 1.5, llm="b"), row(0, "basic", 1.0, llm="a"), row(0, "basic", 1.0, llm="b")]
    table = win_table(rows, "llm", [("a", "b")], lambda r: r.label, within="mode")
    by_mode = {r["mode"]: (r["n"], r["wins"], r["ties"], r["losses"]) for r in table}
    assert by_mode == {"basic": (1, 0, 1, 0), "pe": (2, 1, 0, 1)}


def test_medians_and_human_matched_column():
    rows = [row(0, "pe", 1.0, human=0.5, human_video=10, kind="concrete", category="Food"),
            row(1, "pe", 3.0, human=2.5, human_video=11, kind="concrete", category="Food"),
            row(2, "pe", 4.0, human=2.5, human_video=11, kind="concrete", category="Pets"),
            row(0, "basic", 2.0, human=0.5, human_video=10, kind="concrete", category="Food"),
            row(3, "pe", 5.0, human=1.0, human_video=12, kind="abstract")]
    table = {(t["type"], t["category"]): t for t in table1(rows, judged("h"))}
    food = table[("concrete", "Food")]
    assert food["cells"]["a/pe"] == {"median": 2.0, "predicted_comments": 3.0, "n": 2}  # median(1, 3); 2**2 - 1
    assert food["cells"]["a/basic"]["median"] == 2.0 and food["cells"]["a/basic"]["n"] == 1
    assert table[("(all)", "(all)")]["cells"]["a/pe"]["median"] == 3.5  # median(1, 3, 4, 5)
    by_type = {t["type"]: t for t in table2(rows, judged("h"), human_judged("h"))}
    concrete = by_type["concrete"]
    assert concrete["human_matched"]["name"] == "Concrete-M"
    # prompts 1 and 2 matched the same video 11, but they are two prompts: both count
    assert concrete["cells"]["a/pe"]["median"] == 3.0 and concrete["human_matched"]["n"] == 3
    assert concrete["human_matched"]["median"] == 2.5  # (0.5, 2.5, 2.5)
    assert by_type["abstract"]["human_matched"]["name"] == "Abstract-M"
    # runs scored before the same-inputs rule: one human match per prompt, its PE run's, not its Basic run's
    [only] = table2([row(0, "basic", 2.0, human=3.0, human_video=1), row(0, "pe", 2.0, human=1.0, human_video=2)],
                    judged("h"), human_judged("h"))
    assert only["human_matched"]["median"] == 1.0 and only["human_matched"]["n"] == 1


def test_generated_against_its_human_match():
    rows = [row(0, "pe", 2.0, human=1.0), row(1, "pe", 1.0, human=1.0), row(2, "pe", 0.0, human=1.0),
            row(3, "pe", 3.0, human=1.0)]
    [r] = vs_human(rows, judged("h"), human_judged("h"))
    assert (r["n"], r["wins"], r["ties"], r["losses"], r["win_rate"]) == (4, 2, 1, 1, 0.5)
    assert r["p"] == 1.0  # 2 wins, 1 loss over 3 decisive prompts: |sum| >= 1 for every sign pattern


def _store_batch(folder, rows, video_note=True):
    store = Store(home=folder)
    for r in rows:
        note = ["the video file is not used: this model was trained without frame features"] if video_note else []
        store.save_run({"id": r.id, "settings": {"query": r.query, "mode": r.mode, "llm": r.llm, "video": r.video,
                                                 "seed": r.seed, "batch": {"prompt_index": r.prompt_index,
                                                                           "type": r.type, "category": r.category}},
                        "plan": {"title": r.title, "matched_categories": []},
                        "video": {"video": str(folder / "v.mp4")},
                        "score": {"label": r.label, "notes": note},
                        "baseline": {"mean_predicted_label": r.human_label, "videos": [{"video_id": r.human_video}]}},
                       status="done")
    store.save_run({"id": "broken", "settings": {"query": "q9", "mode": "pe", "llm": "a", "video": "x", "seed": 0,
                                                 "batch": {"prompt_index": 9, "failure": {"stage": "plan"}}}},
                   status="failed", error="[plan] unreadable")


def test_report_from_a_store(tmp_path):
    rows = [row(p, mode, label, video=v, human=1.0, human_video=5) for p, (pe, basic) in enumerate([(2, 1), (1, 1)])
            for v in ("x", "y") for mode, label in (("pe", pe), ("basic", basic))]
    _store_batch(tmp_path, rows)
    report = build_report(tmp_path, judges=False)
    assert report["summary"]["runs"] == 9 and report["summary"]["status"] == {"done": 8, "failed": 1}
    assert report["summary"]["failed_at_stage"] == {"plan": 1}
    assert report["h_sees_video"] is False
    [pe] = report["tables"]["h"]["table3"]
    assert (pe["n"], pe["groups"], pe["wins"], pe["ties"], pe["losses"]) == (4, 2, 2, 2, 0)  # 2 prompts x 2 videos
    video = report["tables"]["h"]["table6"]
    assert video["finding"] is False and "does not see the video" in video["note"]
    assert [(r["mode"], r["n"], r["ties"]) for r in video["rows"]] == [("basic", 2, 2), ("pe", 2, 2)]  # modes apart
    text = to_markdown(report)
    assert "PE vs Basic" in text and "| (untyped) | a | - | pe | basic | 4 | 2 | 2 | 2 | 0 | 0.500 |" in text
    assert "does not see the video" in text


def test_video_table_is_a_finding_when_h_sees_the_video(tmp_path):
    rows = [row(0, "pe", 2.0, video="x"), row(0, "pe", 1.0, video="y"), row(1, "pe", 1.0, video="x"),
            row(1, "pe", 1.0, video="y")]
    _store_batch(tmp_path, rows, video_note=False)
    report = build_report(tmp_path, judges=False)
    assert report["h_sees_video"] is True and report["tables"]["h"]["table6"]["finding"] is True
    [r] = report["tables"]["h"]["table6"]["rows"]
    assert (r["a"], r["b"], r["n"], r["wins"], r["ties"]) == ("x", "y", 2, 1, 1)
    assert math.isclose(r["win_rate"], 0.5)
