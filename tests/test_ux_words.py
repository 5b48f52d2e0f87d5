"""Issue 26 pt 4: the studio's panels speak to a creator; class names, settings and raw scores only behind a fold."""

from __future__ import annotations

import re

from popcorn import studio
from popcorn.studio import views
from popcorn.text import plural

DEVELOPER_WORDS = re.compile(r"Pipeline|max_sequence_length|__call__|None|\[input\]|POPCORN_|Router candidates")


def in_view(markdown: str) -> str:
    """What shows before any fold is opened: the text outside <details>...</details>, unescaped."""
    outside = re.sub(r"<details>.*?</details>", "", markdown, flags=re.S)
    return re.sub(r"\\(.)", r"\1", outside)


def test_the_split_the_page_describes_is_the_one_retrieval_makes():
    from popcorn.retrieval import index, routing

    assert views.UNPOPULAR_SHARE == index.DEFAULT_RATIO and views.UNSURE_MARGIN == routing.UNSURE_MARGIN
    assert "not in the bottom 10% of its category by number of comments" in views.popular_meaning()


def retrieval(margin):
    return {"matched_categories": ["Delicacy", "Game"], "margin": margin,
            "category_scores": [{"category": "Delicacy", "score": 0.418}, {"category": "Game", "score": 0.387},
                                {"category": "Anime", "score": 0.371}],
            "references": [{"label": "popular"}] * 9 + [{"label": "unpopular"}]}


def test_an_unsure_route_says_so_and_the_scores_sit_behind_why_this_category():
    unsure = views.why_markdown(retrieval(0.074))
    assert in_view(unsure).startswith("**Category:** not sure between Delicacy and Game: references from both.")
    assert "<details><summary>Why this category</summary>" in unsure
    assert "- Delicacy: 100" in unsure and "- Game: 93" in unsure and "0.418" not in unsure
    sure = views.why_markdown(retrieval(0.3))
    assert in_view(sure).startswith("**Category:** Delicacy, Game\n")
    assert "10 MicroLens videos from there as examples: 9 popular, 1 unpopular" in in_view(sure)
    assert not DEVELOPER_WORDS.search(in_view(sure)) and not DEVELOPER_WORDS.search(in_view(unsure))


def test_a_video_models_budget_in_words_and_its_encoder_behind_details():
    for name in ("ltx", "storyboard", "wan-1.3b"):
        info = studio.backend_info("video", name)
        shown = in_view(info)
        assert re.search(r"video prompt of \d+ to ~\d+ words for " + re.escape(name), shown), shown
        assert not DEVELOPER_WORDS.search(shown), shown
    assert "max_sequence_length=128" in re.sub(r"\\(.)", r"\1", studio.backend_info("video", "ltx"))


def test_plural_forms():
    assert plural(1, "MicroLens video") == "1 MicroLens video"
    assert plural(2, "MicroLens video") == "2 MicroLens videos"
    assert plural(0, "vote") == "0 votes" and plural(1.0, "pair") == "1 pair" and plural(2.5, "vote") == "2.5 votes"
    one = views.why_markdown({"matched_categories": ["Pets"], "category_scores": [],
                              "references": [{"label": "popular"}]})
    assert "saw 1 MicroLens video from there" in one
