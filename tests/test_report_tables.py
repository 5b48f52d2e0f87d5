"""The paper's tables from a small batch worked by hand (issue 23): every table split by prompt type, under both judges,
K values never pooled, p-values and Holm; the grid's run keys; and the same-inputs rule on the real judges."""

import pytest

from popcorn import pipeline, stats
from popcorn.experiments import grid, prompts_file
from popcorn.experiments.report import Row, build_report, paired, to_markdown
from popcorn.store import Store
from popcorn.types import Plan, StageError

# prompt -> (type, category, basic, pe K=10, pe K=50, human) under h; the held-out judge sees h + 0.1, except prompt 1's
# PE K=10 run (1.9: a tie under h, a loss under the held-out judge)
BATCH = {0: ("abstract", "Game", 1.0, 2.0, 0.5, 1.5),
         1: ("abstract", "Anime", 2.0, 2.0, 3.0, 1.0),
         2: ("concrete", "Game", 1.0, 3.0, 3.0, 2.0),
         3: ("concrete", "Delicacy", 3.0, 1.0, 4.0, 2.5)}
LLM_B_BASIC = {0: 0.5, 2: 2.0}  # a second LLM's Basic runs, for Table 5


def _record(prompt, mode, llm, k, h, human, kind, category, inferred=None):
    heldout = 1.9 if (prompt, mode, k, llm) == (1, "pe", 10, "a") else round(h + 0.1, 4)
    run_id = f"r{prompt}{mode}{llm}{k or 0}"
    return {"id": run_id,
            "settings": {"query": f"q{prompt}", "mode": mode, "llm": llm, "video": "v", "seed": 0, "k": k or 10,
                         "router": "ours",
                         "batch": {"prompt_index": prompt, "type": kind, "category": category, "k": k,
                                   "router": "ours", "clip_seconds": 3.0, "split_seed": 2502}},
            "plan": {"title": f"title {run_id}", "matched_categories": [category] if mode == "pe" else []},
            "video": {"video": "v.mp4"},
            "score": {"label": h, "category": category, "category_source": "prompt file", "rule": "same-inputs",
                      "judges": {"h": h, "heldout": heldout},
                      "sensitivity": {"title_inferred": {"h": inferred if inferred is not None else h,
                                                         "heldout": heldout}},
                      "notes": ["the video file is not used: this model was trained without frame features"]},
            "baseline": {"mean_predicted_label": human, "judges": {"h": human, "heldout": round(human + 0.1, 4)},
                         "videos": [{"video_id": 100 + prompt}]}}


@pytest.fixture()
def batch(tmp_path):
    store = Store(home=tmp_path)
    for prompt, (kind, category, basic, pe10, pe50, human) in BATCH.items():
        inferred = 3.5 if prompt == 2 else None  # title-inferred: prompt 2's Basic title scores 3.5 (PE K=10 loses)
        store.save_run(_record(prompt, "basic", "a", None, basic, human, kind, category, inferred), status="done")
        store.save_run(_record(prompt, "pe", "a", 10, pe10, human, kind, category), status="done")
        store.save_run(_record(prompt, "pe", "a", 50, pe50, human, kind, category), status="done")
        if prompt in LLM_B_BASIC:
            store.save_run(_record(prompt, "basic", "b", None, LLM_B_BASIC[prompt], human, kind, category),
                           status="done")
    return tmp_path


def _pick(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def _counts(r):
    return r["n"], r["wins"], r["ties"], r["losses"], r["win_rate"]


def test_table3_by_type_and_k_under_both_judges(batch):
    report = build_report(batch, judges=False)
    t3 = report["tables"]["h"]["table3"]
    assert _counts(_pick(t3, type="abstract", llm="a", k=10)) == (2, 1, 1, 0, 0.5)  # p0 win, p1 tie
    assert _counts(_pick(t3, type="concrete", llm="a", k=10)) == (2, 1, 0, 1, 0.5)  # p2 win, p3 loss
    assert _counts(_pick(t3, type="concrete", llm="a", k=50)) == (2, 2, 0, 0, 1.0)
    assert _counts(_pick(t3, type="(all)", llm="a", k=50)) == (4, 3, 0, 1, 0.75)
    # p-values: sign flips over prompts. 2 of 2 decisive prompts won: 2 of 4 patterns reach |sum| = 2 -> 0.5;
    # 3 wins, 1 loss: patterns of 4 signs with |sum| >= 2 are 10 of 16 -> 0.625
    assert _pick(t3, type="concrete", k=50)["p"] == 0.5 and _pick(t3, type="(all)", k=50)["p"] == 0.625
    assert all(r["p_holm"] == 1.0 for r in t3)  # 6 rows: 0.5 x 6 and 0.625 x 5 both cap at 1
    heldout = report["tables"]["heldout"]["table3"]
    assert _counts(_pick(heldout, type="abstract", llm="a", k=10)) == (2, 1, 0, 1, 0.5)  # p1: 1.9 < 2.1
    inferred = report["sensitivity"]["title_inferred"]["h"]
    assert _counts(_pick(inferred, type="concrete", llm="a", k=10)) == (2, 0, 0, 2, 0.0)  # p2 Basic inferred 3.5


def test_tables_1_2_and_the_human_matched_column(batch):
    t = build_report(batch, judges=False)["tables"]["h"]
    t2 = {row["type"]: row for row in t["table2"]}
    assert t2["abstract"]["cells"]["a/basic"]["median"] == 1.5  # (1, 2)
    assert t2["abstract"]["cells"]["a/pe K=10"]["median"] == 2.0 and t2["abstract"]["cells"]["a/pe K=50"]["median"] == 1.75
    assert t2["abstract"]["human_matched"] == {**t2["abstract"]["human_matched"], "name": "Abstract-M",
                                               "median": 1.25, "n": 2}  # one video per prompt: (1.5, 1.0)
    assert t2["concrete"]["human_matched"]["name"] == "Concrete-M" and t2["concrete"]["human_matched"]["median"] == 2.25
    assert t2["concrete"]["cells"]["a/pe K=50"]["median"] == 3.5
    assert 0.0 <= t2["concrete"]["human_matched"]["percentile"] <= 100.0
    t1 = {(row["type"], row["category"]): row for row in t["table1"]}
    assert t1[("(all)", "Game")]["cells"]["a/pe K=10"]["median"] == 2.5  # p0 2.0, p2 3.0
    assert t1[("abstract", "Game")]["cells"]["a/basic"] == {"median": 1.0, "predicted_comments": 1.0, "n": 1}
    assert t1[("concrete", "(all)")]["prompts"] == 2


def test_tables_5_6_k_sweep_and_vs_human(batch):
    report = build_report(batch, judges=False)
    t = report["tables"]["h"]
    t5 = t["table5"]
    assert _counts(_pick(t5, type="abstract", mode="basic", a="a", b="b")) == (1, 1, 0, 0, 1.0)  # 1.0 > 0.5
    assert _counts(_pick(t5, type="concrete", mode="basic", a="a", b="b")) == (1, 0, 0, 1, 0.0)  # 1.0 < 2.0
    assert t["table6"]["finding"] is False and "one video model" in t["table6"]["note"]
    sweep = t["k_sweep"]
    assert sweep["ks"] == [10, 50] and sweep["note"] == ""
    assert _counts(_pick(sweep["k_vs_k"], type="abstract", llm="a")) == (2, 1, 0, 1, 0.5)  # K=10 vs K=50
    assert _counts(_pick(sweep["k_vs_k"], type="concrete", llm="a")) == (2, 0, 1, 1, 0.0)
    assert _pick(sweep["medians"], type="concrete", k=50)["median"] == 3.5
    basic_abstract = _pick(t["vs_human"], type="abstract", condition="a/basic")
    assert _counts(basic_abstract) == (2, 1, 0, 1, 0.5)  # p0 1.0 < 1.5, p1 2.0 > 1.0
    assert report["same_inputs"]["holds"] and report["same_inputs"]["category_sources"] == {"prompt file": 14}
    text = to_markdown(report)
    for heading in ("Table 1", "Table 2", "Table 3", "Table 5", "Table 6", "K sweep", "Abstract-M", "p (Holm)",
                    "The paper's scale", "title-inferred"):
        assert heading in text


def test_two_k_values_are_reported_apart_and_never_merged(batch):
    report = build_report(batch, judges=False)
    rows = [r for r in report["tables"]["h"]["table3"] if r["type"] == "(all)"]
    assert [(r["k"], r["n"]) for r in rows] == [(10, 4), (50, 4)]  # not one row of 8 pairs
    from popcorn.experiments.report import load_rows

    with pytest.raises(StageError, match="would be merged"):  # pairing modes over both Ks at once is refused
        paired(load_rows(batch), "mode", "pe", "basic", lambda r: r.label)


def test_same_inputs_check_flags_arms_scored_apart(tmp_path):
    store = Store(home=tmp_path)
    basic = _record(0, "basic", "a", None, 1.0, 1.0, "abstract", "")
    pe = _record(0, "pe", "a", 10, 2.0, 1.0, "abstract", "")
    basic["score"]["category"], pe["score"]["category"] = "Film and Television Works", "Game"  # the old confound
    pe["baseline"]["videos"] = [{"video_id": 7}]
    store.save_run(basic, status="done")
    store.save_run(pe, status="done")
    same = build_report(tmp_path, judges=False)["same_inputs"]
    assert not same["holds"] and same["broken"][0]["categories"] == ["Film and Television Works", "Game"]
    assert same["broken"][0]["human_videos"] == ["100", "7"]


def test_holm_and_sign_flip_by_hand():
    assert stats.holm([0.01, 0.04, 0.03, None]) == [0.03, 0.06, 0.06, None]
    assert stats.holm([0.5, 0.01]) == [0.5, 0.02]
    assert stats.sign_flip_p([1] * 5) == 0.0625  # 2 / 2**5
    assert stats.sign_flip_p([1, 1, 1, -1, 0]) == 0.625  # 3 of 4 decisive: 2 * 5/16
    assert stats.sign_flip_p([0, 0]) == 1.0 and stats.sign_flip_p([]) is None
    # two pairs of one prompt (a win and a tie) are one prompt with mean 0.5, not two wins
    assert stats.sign_flip_p([1, 0], groups=[3, 3]) == 1.0
    assert stats.prompt_means([1, 0, -1, -1], groups=[0, 0, 1, 1]).tolist() == [0.5, -1.0]


def test_run_keys_hold_every_setting_and_k_sweeps():
    prompts = [prompts_file.Prompt("a cat", "concrete", "Animal"), prompts_file.Prompt("hope", "abstract", "")]
    specs = grid.build_grid(prompts, ["basic", "pe"], ["local"], ["storyboard"], [0], k=[10, 50, 100])
    assert len(specs) == 2 * (1 + 3) and len({s.key for s in specs}) == len(specs)  # Basic once, PE per K
    assert sorted(s.k for s in specs if s.mode == "pe" and s.prompt.query == "a cat") == [10, 50, 100]
    one = grid.build_grid(prompts[:1], ["pe"], ["local"], ["storyboard"], [0], k=10)[0]
    for change in ({"router": "paper"}, {"clip_seconds": 5.0}):
        other = grid.build_grid(prompts[:1], ["pe"], ["local"], ["storyboard"], [0], k=10, **change)[0]
        assert other.key != one.key  # a folder with two settings holds two sets of runs
    recat = grid.build_grid([prompts_file.Prompt("a cat", "concrete", "Game")], ["pe"], ["local"], ["storyboard"],
                            [0], k=10)[0]
    assert recat.key != one.key and recat.settings().category == "Game"
    assert one.meta()["k"] == 10 and one.meta()["router"] == "ours" and one.meta()["clip_seconds"] == 3.0
    with pytest.raises(StageError, match="K must be positive"):
        grid.build_grid(prompts, ["pe"], ["local"], ["storyboard"], [0], k=[0])


# ---------------------------------------------------------------------------------------------- the rule, for real


def _plan(mode, query, title, categories=()):
    return Plan(title=title, cover_prompt="a cover", video_prompt="a clip", reasoning="", mode=mode, llm="local",
                query=query, matched_categories=list(categories))


def test_basic_and_pe_of_one_prompt_get_the_same_inputs():
    """Real judges (h and the held-out one), real human pool: the prompt file's category for both arms."""
    query = "grandma's secret dumpling recipe for the new year"
    runs = []
    for mode, title, cats in (("basic", "Grandma's dumplings, the secret is the fold", ()),
                              ("pe", "Grandma's dumplings, the secret is the fold", ("Game",))):
        run = pipeline.Run(pipeline.Settings(query=query, mode=mode, category="Delicacy"))
        run.plan = _plan(mode, query, title, cats)
        runs.append(pipeline.score_run(run).to_dict())
    basic, pe = runs
    for run in runs:
        assert run["score"]["category"] == "Delicacy" and run["score"]["category_source"] == "prompt file"
        assert set(run["score"]["judges"]) == {"h", "heldout"} and run["score"]["rule"] == "same-inputs"
        assert run["score"]["split_seed"] == 2502  # the judge split the held-out judge was trained on
        assert run["baseline"]["videos"][0]["category"] == "Delicacy"
    assert basic["baseline"]["videos"][0]["video_id"] == pe["baseline"]["videos"][0]["video_id"]
    assert basic["score"]["judges"] == pe["score"]["judges"]  # one title, same inputs: the same scores
    assert basic["baseline"]["judges"] == pe["baseline"]["judges"]
    from popcorn.retrieval.corpus import load_corpus

    human_id = basic["baseline"]["videos"][0]["video_id"]
    assert human_id in set(load_corpus(part="human").table["video_id"])  # from the pool neither judge trained on
    assert human_id not in set(load_corpus().table["video_id"])  # and no plan could have been shown it


def test_without_a_prompt_category_both_arms_get_the_routed_one(retriever):
    query = "speedrunning the first level of a platform game blindfolded"
    retrieval = retriever.retrieve(query, 10, router="ours")
    settings = pipeline.Settings(query=query, mode="basic")
    basic = pipeline.score_category(settings, None)
    pe = pipeline.score_category(pipeline.Settings(query=query, mode="pe"), retrieval)
    assert basic == pe and basic[0] == retrieval.matched_categories[0]
    assert basic[1].startswith("routed from the query (router ours)")
    odd = pipeline.score_category(pipeline.Settings(query=query, category="Not A Category"), retrieval)
    assert odd[0] == basic[0] and "not a MicroLens category" in odd[1]


def test_the_confounded_rule_is_kept_for_rescoring():
    query = "a self-improvement routine for busy students"
    run = pipeline.Run(pipeline.Settings(query=query, mode="basic"))
    run.plan = _plan("basic", query, "5 habits that changed my life")
    pipeline.score_run(run, rule="confounded")
    assert run.score["rule"] == "confounded" and run.score["category_inferred"] is True
    assert set(run.score["judges"]) == {"h", "heldout"} and run.baseline["rule"] == "confounded"
    with pytest.raises(StageError, match="unknown scoring rule"):
        pipeline.score(run.plan, rule="fancy")


def test_rows_read_runs_scored_before_the_rule():
    from popcorn.experiments.report import _row

    old = _record(0, "pe", "a", 10, 2.0, 1.0, "abstract", "")
    del old["score"]["judges"], old["baseline"]["judges"], old["score"]["sensitivity"]
    row = _row({**old, "status": "done"})
    assert isinstance(row, Row) and row.labels == {"h": 2.0} and row.human == {"h": 1.0} and row.k == 10


def test_rescore_brings_old_runs_to_the_rule_and_the_old_rule_goes_to_a_copy(tmp_path):
    from popcorn.experiments.rescore import rescore

    query = "grandma's secret dumpling recipe for the new year"
    store = Store(home=tmp_path / "b")
    for mode in ("basic", "pe"):
        plan = _plan(mode, query, "Grandma's dumplings, the secret is the fold", ("Game",) if mode == "pe" else ())
        store.save_run({"id": f"r-{mode}", "settings": {"query": query, "mode": mode, "llm": "local", "seed": 0,
                                                        "batch": {"prompt_index": 0, "type": "concrete",
                                                                  "category": "Delicacy"}},
                        "plan": plan.to_dict(), "score": {"label": 1.0}, "baseline": {}}, status="done")
    copy = rescore(tmp_path / "b", rule="confounded", dest=tmp_path / "old")
    assert copy["rescored"] == 2 and not copy["failed"]
    assert store.get_run("r-pe")["score"] == {"label": 1.0}  # the source folder is untouched
    old = {r["id"]: r for r in Store(home=tmp_path / "old").list_runs()}
    assert old["r-pe"]["score"]["category"] == "Game" and old["r-basic"]["score"]["category_inferred"]
    result = rescore(tmp_path / "b")
    assert result["rescored"] == 2
    new = {r["id"]: r for r in Store(home=tmp_path / "b").list_runs()}
    assert {r["score"]["category"] for r in new.values()} == {"Delicacy"}  # the prompt file's, for both arms
    assert new["r-pe"]["score"]["judges"] == new["r-basic"]["score"]["judges"]
    report = build_report(tmp_path / "b", judges=False)
    assert report["same_inputs"]["holds"] and report["same_inputs"]["rules"] == ["same-inputs"]
    with pytest.raises(StageError, match="already holds a store"):
        rescore(tmp_path / "b", rule="confounded", dest=tmp_path / "old")


def test_a_folder_with_two_settings_never_pools_them(tmp_path):
    store = Store(home=tmp_path)
    for router, labels in (("ours", (1.0, 2.0)), ("paper", (3.0, 1.0))):
        for mode, label in zip(("basic", "pe"), labels):
            record = _record(0, mode, "a", 10 if mode == "pe" else None, label, 1.0, "abstract", "Game")
            record["id"] += router
            record["settings"]["batch"]["router"] = record["settings"]["router"] = router
            store.save_run(record, status="done")
    report = build_report(tmp_path, judges=False)
    assert len(report["summary"]["settings"]) == 2
    t3 = report["tables"]["h"]["table3"]
    assert [(r["type"], r["n"], r["wins"], r["losses"]) for r in t3] == [  # one row per setting, never one of 2 pairs
        ("abstract [router ours, clip 3.0, split 2502]", 1, 1, 0),
        ("abstract [router paper, clip 3.0, split 2502]", 1, 0, 1)]
    conditions = set(report["tables"]["h"]["table2"][0]["cells"])
    assert len(conditions) == 4 and all("router" in c for c in conditions)


def test_a_title_scored_alone_keeps_its_category_and_the_card_fields():
    """The studio's Score page: pipeline.score(plan) with the category given on the plan, or none (h infers it)."""
    plan = _plan("basic", "my dog sees the sea", "When my dog sees the sea for the first time # cute pet", ("Animal",))
    score, baseline = pipeline.score(plan)
    assert score["category"] == "Animal" and score["category_source"] == "given with the plan"
    video = baseline["videos"][0]
    assert video["category"] == "Animal" and video["predicted_label"] == video["judges"]["h"]
    assert video["predicted_comments"] == pytest.approx(2 ** video["predicted_label"] - 1, abs=0.01)
    assert 0 <= video["percentile_category"] <= 100 and 0 <= video["percentile_overall"] <= 100
    plan.matched_categories = []
    score, baseline = pipeline.score(plan)
    assert score["category_inferred"] and score["category_source"] == "title (inferred by h)"
    assert baseline["videos"][0]["category"] == score["category"]  # matched within the inferred category


PLUS = {0: 3.0, 1: 2.0, 2: 2.5, 3: 3.0}  # PE+ at K=10 under h (held-out: h + 0.1)


def test_table3_gives_every_pair_of_plan_modes_with_plus(batch):
    """PE+ runs beside Basic and PE: table 3 holds PE vs Basic, PE+ vs Basic and PE+ vs PE at K=10 (PE+ ran at K=10
    only, so K=50 has PE vs Basic alone), under both judges, worked by hand."""
    store = Store(home=batch)
    for prompt, (kind, category, *_rest, human) in BATCH.items():
        store.save_run(_record(prompt, "plus", "a", 10, PLUS[prompt], human, kind, category), status="done")
    report = build_report(batch, judges=False)
    t3 = report["tables"]["h"]["table3"]
    # vs Basic (1.0, 2.0, 1.0, 3.0): win, tie, win, tie; vs PE K=10 (2.0, 2.0, 3.0, 1.0): win, tie, loss, win
    assert _counts(_pick(t3, type="(all)", k=10, a="plus", b="basic")) == (4, 2, 2, 0, 0.5)
    assert _counts(_pick(t3, type="(all)", k=10, a="plus", b="pe")) == (4, 2, 1, 1, 0.5)
    assert _counts(_pick(t3, type="(all)", k=10, a="pe", b="basic")) == (4, 2, 1, 1, 0.5)
    assert not [r for r in t3 if r["k"] == 50 and "plus" in (r["a"], r["b"])]
    heldout = report["tables"]["heldout"]["table3"]
    assert _counts(_pick(heldout, type="(all)", k=10, a="plus", b="pe")) == (4, 3, 0, 1, 0.75)  # p1: 2.1 > 1.9
    assert "PE+" in to_markdown(report) or "plus" in to_markdown(report)


def test_runs_from_a_reordered_prompt_file_pair_by_prompt_not_by_line(batch):
    """PE+ run from the same prompts in reverse order (prompt i on line 3 - i): the report pairs each PE+ run with the
    Basic and PE runs of its own prompt, as with the same order (the numbers of the test above)."""
    store = Store(home=batch)
    for prompt, (kind, category, *_rest, human) in BATCH.items():
        record = _record(prompt, "plus", "a", 10, PLUS[prompt], human, kind, category)
        record["settings"]["batch"]["prompt_index"] = 3 - prompt
        store.save_run(record, status="done")
    report = build_report(batch, judges=False)
    t3 = report["tables"]["h"]["table3"]
    assert _counts(_pick(t3, type="(all)", k=10, a="plus", b="basic")) == (4, 2, 2, 0, 0.5)
    assert _counts(_pick(t3, type="(all)", k=10, a="plus", b="pe")) == (4, 2, 1, 1, 0.5)
    assert report["summary"]["prompts"] == 4 and report["summary"]["types"] == {"abstract": 2, "concrete": 2}
    assert report["same_inputs"]["holds"] and report["same_inputs"]["broken"] == []
