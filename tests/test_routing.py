"""Category routing: ours vs the paper's, on the labelled query sets (assets/routing/routing_queries.tsv and
routing_heldout.tsv: 414 queries the defaults were fitted on; the idea bank's other files, written blind and evaluated
once before they joined it; tests/data/routing_heldout5.tsv, written blind and in no bank). A file of the idea bank is
always routed by a router whose bank does not hold it (an idea must not find itself)."""

from pathlib import Path

import numpy as np
import pytest

from popcorn.retrieval.routing import (IDEAS_DIR, TITLE_WEIGHTS, BlendRouter, BlendWeights, calibrated, fit_weights,
                                      idea_bank, read_labelled)

QUERIES = IDEAS_DIR / "routing_queries.tsv"
HELDOUT = IDEAS_DIR / "routing_heldout.tsv"


def labelled(*paths):
    return [row for path in (paths or (QUERIES,)) for row in read_labelled(path)]


def without(retriever, *paths, weights=None):
    """Our router with the idea bank of every writer but the files `paths`."""
    return BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors, weights,
                       ideas=idea_bank(tuple(p.name for p in paths)))


def accuracy(router, embedder, rows):
    vectors = embedder.encode([q for _, q in rows])
    return float(np.mean([router.route(v, text=q).categories[0] == c for v, (c, q) in zip(vectors, rows)]))


def test_the_labelled_set_is_large_and_covers_the_main_categories():
    rows = labelled()
    cats = {c for c, _ in rows}
    assert len(rows) >= 150
    assert {"Anime", "Delicacy", "Daily Sharing", "Film and Television Works", "Game", "Music", "Sports", "Animal",
            "Celebrity"} <= cats


def test_weights_fitted_on_one_half_route_the_other_half(retriever):
    rows = labelled(QUERIES, HELDOUT)
    order = np.random.default_rng(7).permutation(len(rows))
    train = [rows[i] for i in order[: len(rows) // 2]]
    held_out = [rows[i] for i in order[len(rows) // 2:]]
    router = without(retriever, QUERIES, HELDOUT, weights=BlendWeights(**TITLE_WEIGHTS))  # the fit searches them
    weights, train_acc = fit_weights(router, retriever.embedder, train)
    fitted = without(retriever, QUERIES, HELDOUT, weights=weights)
    assert train_acc == pytest.approx(accuracy(fitted, retriever.embedder, train))  # what it reports is what it got
    assert train_acc >= accuracy(router, retriever.embedder, train)  # its weights are in the grid: never worse
    with pytest.raises(ValueError, match="read the titles"):  # the defaults read none: nothing to fit them by
        fit_weights(without(retriever, QUERIES, HELDOUT), retriever.embedder, train)
    ours = accuracy(fitted, retriever.embedder, held_out)
    paper = accuracy(retriever.routers["paper"], retriever.embedder, held_out)
    assert ours >= 0.82, (ours, weights)
    assert ours >= paper + 0.3  # the paper's name-only routing lands far less often on the intended category


def test_default_router_beats_the_papers_on_the_whole_set(retriever):
    rows = labelled()
    # on the retrieval corpus (70%: the judge split, popcorn/retrieval/split.py): 0.906 with the weights fitted on
    # both labelled files and no idea bank (grouped 10-fold cross-validation: 0.90, bench/routing.py --cv); 0.939
    # with the other writers' bank beside the title signals, 0.910 with the bank alone (session 12's defaults)
    assert accuracy(without(retriever, QUERIES), retriever.embedder, rows) >= 0.9
    assert accuracy(retriever.routers["paper"], retriever.embedder, rows) < 0.6


def close_calls(retriever, router):
    """(query, route) of the blind set's ideas whose runner-up scores within the router's margin of the best."""
    rows = labelled(BLIND)
    routes = [(q, router.route(v, text=q)) for v, (_, q) in zip(retriever.embedder.encode([q for _, q in rows]), rows)]
    return [(q, r) for q, r in routes if r.scores[1].score >= r.scores[0].score * (1 - router.w.margin)]


def test_an_ambiguous_query_keeps_several_categories(retriever):
    """Every idea whose runners-up score within the margin of the best keeps them (up to max_categories), and its
    references come from each kept category; a clear idea keeps one."""
    router = retriever.routers["ours"]
    close = close_calls(retriever, router)
    assert len(close) >= 3
    for query, route in close:
        within = [c.category for c in route.scores if c.score >= route.scores[0].score * (1 - router.w.margin)]
        assert route.categories == within[: router.w.max_categories] and len(route.categories) >= 2
    query, route = close[0]
    result = retriever.retrieve(query, k=10)
    assert result.matched_categories == route.categories
    assert {r.category for r in result.references} <= set(route.categories)
    assert len({r.category for r in result.references}) >= 2
    assert retriever.retrieve("Create a video showcasing street food in Bangkok", k=10).matched_categories == ["Delicacy"]


def test_explicit_top_t_and_the_margin_control_how_many_categories(retriever):
    router = retriever.routers["ours"]
    q = retriever.embedder.encode_one("grandma's dumplings on new year's eve")
    assert len(router.route(q, top_t=3, text="").categories) == 3
    ambiguous, route = close_calls(retriever, router)[0]
    q = retriever.embedder.encode_one(ambiguous)
    assert len(router.route(q, text=ambiguous).categories) >= 2  # the default margin keeps the runner-up
    strict = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors, BlendWeights(margin=0.0))
    assert len(strict.route(q, text=ambiguous).categories) == 1


def test_format_only_and_tiny_categories_are_not_routed_to(retriever):
    cats = retriever.routers["ours"].categories
    assert "Others" not in cats and "Video Clip" not in cats
    assert "yszp" not in cats and "Advertising" not in cats
    assert "Others" in retriever.routers["paper"].categories  # the paper's router sees every label


def test_category_scores_explain_the_choice(retriever):
    result = retriever.retrieve("Honor of Kings pentakill montage", k=10)
    scores = [c.score for c in result.category_scores]
    assert result.category_scores[0].category == "Game" == result.matched_categories[0]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5


def test_each_cosine_signal_is_calibrated_into_a_distribution_over_the_categories(retriever):
    """The desc, examples, centroid and ideas cosines become a softmax over the categories at the router's temperature (the
    vote and names are shares already); temperature 0 keeps the raw cosines, as the router before session 9. (With
    the title signals weighed, as in sessions 9-11, so the centroid and the vote are computed.)"""
    router = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors, BlendWeights(**TITLE_WEIGHTS))
    text = "grandma's dumplings on new year's eve"
    q = retriever.embedder.encode_one(text)
    s = router.signals(q, text)
    raw = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors,
                      BlendWeights(temperature=0.0, **TITLE_WEIGHTS)).signals(q, text)
    assert s["vote"].sum() == pytest.approx(1.0)
    assert router.w.temperature > 0
    for k in ("desc", "examples", "centroid", "ideas"):
        assert s[k].sum() == pytest.approx(1.0) and (s[k] > 0).all()
        assert np.argsort(s[k]).tolist() == np.argsort(raw[k]).tolist()  # the order is the cosines'
        assert s[k] == pytest.approx(calibrated(raw[k], router.w.temperature))
        assert raw[k].max() <= 1.0 + 1e-5 and raw[k].sum() != pytest.approx(1.0)
    assert s["vote"] == pytest.approx(raw["vote"]) and s["names"] == pytest.approx(raw["names"])
    assert calibrated(np.array([0.3, 0.5]), 0.0).tolist() == [0.3, 0.5]
    # one cosine 0.1 ahead of another at temperature 0.1 weighs e (2.718...) times as much
    assert calibrated(np.array([0.4, 0.5]), 0.1) == pytest.approx([1 / (1 + np.e), np.e / (1 + np.e)])


def test_calibrated_cosines_route_the_other_labelled_file_better_than_raw_ones(retriever):
    """The one change of session 9 (cosines calibrated per query; no idea bank then): weights fitted on one labelled file, scored on the
    other (written in another session), each way, route at least as well as raw cosines fitted the same way, and
    better in all (0.912 vs 0.898 and 0.859 vs 0.852). The gain is small: grouped 10-fold cross-validation over the 414
    gives 0.903 vs 0.884 (bench/routing.py --cv), and one random half split of the 414 came out 0.899 vs 0.889 and
    0.884 vs 0.889."""
    files = labelled(QUERIES), labelled(HELDOUT)
    scored = {}
    for temperature in (0.0, BlendWeights().temperature):
        base = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors,
                           BlendWeights(temperature=temperature, ideas=0.0, **TITLE_WEIGHTS), ideas=[])
        for side in (0, 1):
            weights, _ = fit_weights(base, retriever.embedder, files[side])
            fitted = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors, weights, ideas=[])
            scored[temperature, side] = accuracy(fitted, retriever.embedder, files[1 - side])
    ours, raw = [scored[BlendWeights().temperature, s] for s in (0, 1)], [scored[0.0, s] for s in (0, 1)]
    assert all(c >= r for c, r in zip(ours, raw)) and sum(ours) > sum(raw), scored
    assert min(ours) >= 0.85, scored


def test_a_route_says_how_sure_it_is_and_which_signal_decided(retriever):
    """The margin is (best - next) / best of the shown scores, the deciding signal one of the blend's, and both reach
    run.json through the Retrieval."""
    from popcorn.types import Retrieval

    result = retriever.retrieve("my cat knocks a glass off the table", 10)
    top, runner = result.category_scores[0].score, result.category_scores[1].score
    assert result.margin == pytest.approx((top - runner) / top, abs=1e-3)
    assert result.deciding_signal in BlendRouter.SIGNALS
    again = Retrieval.from_dict(result.to_dict())
    assert (again.margin, again.deciding_signal) == (result.margin, result.deciding_signal)
    assert Retrieval.from_dict({"query": "old record"}).margin is None  # runs stored before this still open


def test_unsure_routes_are_wrong_more_often_than_sure_ones(retriever):
    """The margin is a fair warning: among routes the studio calls unsure (margin < UNSURE_MARGIN) the best category
    is wrong more often than among the rest (routing_heldout.tsv: written blind in session 8, tuned on since session 9,
    routed by the other writers' bank; on the blind sets, see bench/RESULTS.md)."""
    from popcorn.retrieval.routing import UNSURE_MARGIN

    rows = labelled(HELDOUT)
    router = without(retriever, HELDOUT)
    sure, unsure = [], []
    for (category, query), v in zip(rows, retriever.embedder.encode([q for _, q in rows])):
        route = router.route(v, text=query)
        (unsure if route.margin is not None and route.margin < UNSURE_MARGIN else sure).append(
            route.categories[0] == category)
    assert len(rows) >= 120 and unsure and sure
    assert np.mean(unsure) < np.mean(sure)


def test_an_unsure_route_is_said_in_the_run_notes():
    from popcorn.pipeline import unsure_note
    from popcorn.types import CategoryScore, Retrieval

    close = Retrieval(query="q", matched_categories=["Music", "Variety Show"], references=[], margin=0.04,
                      category_scores=[CategoryScore("Music", 0.93), CategoryScore("Variety Show", 0.89)])
    note = unsure_note(close)
    assert "close call between Music and Variety Show" in note and "Music, Variety Show" in note
    assert unsure_note(Retrieval(query="q", matched_categories=["Game"], references=[], margin=0.3,
                                 category_scores=[CategoryScore("Game", 1.0)])) == ""
    assert unsure_note(None) == "" and unsure_note(Retrieval.from_dict({"query": "old run"})) == ""


BLIND = Path(__file__).parent / "data" / "routing_heldout5.tsv"
# the untouched blind sets in no bank, each evaluated once (bench/RESULTS.md), and the top-1 accuracy each guards:
# set 5 read 0.830 when the bank came (session 11) and 0.885 with session 12's router; sets 8 and 9, written and
# committed before session 12's router change and evaluated once after it, 0.820 and 0.810 as typed (0.900 and 0.870
# with the gloss, which needs the LLM: not here); the floors sit ~0.02 under those
GUARDED = {"routing_heldout5.tsv": 0.86, "routing_heldout8.tsv": 0.80, "routing_heldout9.tsv": 0.79}


@pytest.mark.parametrize("name", sorted(GUARDED))
def test_the_blind_sets_are_routed_as_reported_and_the_unsure_flag_warns_there(retriever, name):
    """200 ideas written by someone who never saw the router, in no bank and never tuned on. This guards the figure
    reported for each: a change that routes one worse fails here (and may not tune on it either)."""
    from popcorn.retrieval.routing import UNSURE_MARGIN

    rows = labelled(BLIND.parent / name)
    assert len(rows) == 200 and len({c for c, _ in rows}) == 19
    # in no bank: a few common ideas ("what's in my bag") were also written, word for word, by a writer of the bank
    assert len(set(rows) & set(idea_bank())) <= 3
    vectors = retriever.embedder.encode([q for _, q in rows])
    routes = [retriever.routers["ours"].route(v, text=q) for v, (_, q) in zip(vectors, rows)]
    right = np.array([r.categories[0] == c for r, (c, _) in zip(routes, rows)])
    unsure = np.array([r.margin is not None and r.margin < UNSURE_MARGIN for r in routes])
    assert right.mean() >= GUARDED[name], right.mean()
    assert right[unsure].mean() < right[~unsure].mean() - 0.2  # set 8: 0.125 vs 0.915; set 9: 0.190 vs 0.883


def test_each_writers_ideas_are_routed_better_by_the_other_writers_bank(retriever):
    """The idea bank generalises across writers: each file written blind (evaluated once before it joined the bank)
    is routed better by a bank of the other writers' files than with no bank (the router of session 10, title signals
    and no bank; thirteen files, session 12's router: 0.870 -> 0.951, 0.761 -> 0.913, 0.740 -> 0.870: bench/routing.py
    --leave-out), and a bank holding the file itself would be near perfect, which is why no file is ever scored by a
    bank that holds it."""
    for name, floor in (("routing_heldout2.tsv", 0.93), ("routing_heldout3.tsv", 0.88), ("routing_heldout4.tsv", 0.83)):
        path = IDEAS_DIR / name
        rows = labelled(path)
        none = BlendRouter(retriever.corpus, retriever.embedder, retriever.index.vectors,
                           BlendWeights(ideas=0.0, **TITLE_WEIGHTS), ideas=[])
        others = without(retriever, path)
        whole = retriever.routers["ours"]
        # exactly the file's ideas are out (those of routable categories: the only ones a bank keeps)
        assert len(whole.ideas) - len(others.ideas) == sum(c in whole.categories for c, _ in rows)
        gained = accuracy(others, retriever.embedder, rows)
        assert gained >= floor and gained >= accuracy(none, retriever.embedder, rows) + 0.05, (name, gained)
    itself = accuracy(retriever.routers["ours"], retriever.embedder, labelled(IDEAS_DIR / "routing_heldout4.tsv"))
    assert itself >= 0.97
