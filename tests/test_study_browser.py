"""Participant sessions in a real browser: Debian chromium through Playwright, a phone-sized screen, against the
study routes served by uvicorn on 127.0.0.1. Start, answer (the buttons unlock once both videos played to the end),
reload (resumes), answer the rest, thank-you page; the DOM never names a system. A Prolific participant: consent,
the platform ids from the link, the completion code and the way back; a second join from the same address refused.
Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

try:
    from tests.test_study_recruit import clip_pairs
    from tests.test_study_server import Served, forbidden_words, make_runs, scan
except ImportError:
    from test_study_recruit import clip_pairs
    from test_study_server import Served, forbidden_words, make_runs, scan

from popcorn.study import owner

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path(os.environ.get("POPCORN_CHROMIUM", "/usr/bin/chromium"))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium "
                                                     "(scripts/setup.sh --dev installs it)"),
]


LAUNCH_ARGS = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]


def watch_both(page, rate: float = 1.0) -> None:
    """Play both videos to their end (muted, at `rate`), as the page asks, and wait for the answers to unlock."""
    from playwright.sync_api import expect

    expect(page.get_by_role("button", name="A", exact=True)).to_be_disabled()
    page.evaluate("rate => Promise.all([...document.querySelectorAll('video')].map(v => {"
                  " v.muted = true; v.playbackRate = rate; return v.play(); }))", rate)
    expect(page.get_by_role("button", name="A", exact=True)).to_be_enabled()
    assert page.evaluate("() => [...document.querySelectorAll('video')].every(v => v.ended)")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("study-browser")
    make_runs(home)
    return home


def test_a_participant_answers_on_a_phone_and_resumes_after_a_reload(home):
    from playwright.sync_api import expect, sync_playwright

    pairs = owner.collect_pairs("runs", factor="mode", a="pe", b="basic", home=home)
    study = owner.create_study(owner.LOCAL, "PE vs Basic (browser)", "Which video would be more popular?", pairs,
                               per_participant=3, attention_checks=1, home=home,
                               min_view_seconds=0)  # played at 16x below: the server's timing rule is off
    words = forbidden_words(home)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Served(home) as served, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                      device_scale_factor=2)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{served.url}/s/{study['link']}/")
        expect(page.get_by_role("button", name="Start")).to_be_visible()
        page.get_by_role("button", name="Start").click()
        progress = page.locator("#progress")
        expect(progress).to_have_text("1 / 4")
        assert re.search(r"[?&]p=[\w-]+", page.url)  # the token is in the address: a reload resumes

        def videos_ready():
            page.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1"
                                   " && v.videoWidth > 0)")

        videos_ready()
        # it fits a phone: no sideways scrolling, the buttons are large enough to tap
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        for name in ("A", "B", "Tie", "Both bad"):
            box = page.get_by_role("button", name=name, exact=True).bounding_box()
            assert box and box["height"] >= 44 and box["width"] >= 44
        # A and B side by side on a phone: both videos in view at once
        left, right = page.locator("#left").bounding_box(), page.locator("#right").bounding_box()
        assert abs(left["y"] - right["y"]) < 2 and left["x"] + left["width"] <= right["x"]
        page.screenshot(path=str(ARTIFACTS / "study_phone.png"), full_page=True)
        watch_both(page, 16)
        page.get_by_role("button", name="A", exact=True).click()
        expect(progress).to_have_text("2 / 4")

        page.reload()
        expect(progress).to_have_text("2 / 4")
        videos_ready()
        watch_both(page, 16)
        page.locator("#reason").fill("brighter colours")
        page.get_by_role("button", name="B", exact=True).click()
        expect(progress).to_have_text("3 / 4")
        watch_both(page, 16)
        page.get_by_role("button", name="Tie", exact=True).click()
        expect(progress).to_have_text("4 / 4")
        watch_both(page, 16)
        page.get_by_role("button", name="Both bad", exact=True).click()
        expect(page.get_by_text("Thank you!")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "study_done.png"), full_page=True)
        dom = page.content()
        page.reload()
        expect(page.get_by_text("Thank you!")).to_be_visible()
        browser.close()

    assert not scan(dom, words), scan(dom, words)
    votes = owner.get_studies(home).votes(study["id"])
    assert [v["side"] for v in sorted(votes, key=lambda v: v["task"])] == ["left", "right", "tie", "both_bad"]
    assert [v["reason"] for v in sorted(votes, key=lambda v: v["task"])] == ["", "brighter colours", "", ""]
    assert sum(v["gold"] is not None for v in votes) == 1  # the gold attention check


def test_a_prolific_participant_consents_answers_and_returns_and_a_second_join_is_refused(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    home = tmp_path / "home"
    pairs = clip_pairs(tmp_path / "clips", 3)  # 1 s clips: the server's viewing rule stays on (the default)
    back = "https://app.prolific.com/submissions/complete?cc=C0DE42"
    study = owner.create_study(owner.LOCAL, "Prolific (browser)", "Which video is more fun?", pairs, home=home,
                               per_participant=2, consent="Your answers are stored without your name.",
                               completion_code="C0DE42", redirect_url=back, max_joins_per_address=1)
    ids = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa1", "SESSION_ID": "s77"}
    query = "&".join(f"{k}={v}" for k, v in ids.items())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Served(home) as served, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        phone = dict(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2)
        page = browser.new_context(**phone).new_page()
        page.set_default_timeout(30_000)
        page.route("https://app.prolific.com/**", lambda route: route.fulfill(
            status=200, content_type="text/html", body="<p>Prolific: submission complete</p>"))
        page.goto(f"{served.url}/s/{study['link']}/?{query}")
        expect(page.get_by_text("Your answers are stored without your name.")).to_be_visible()
        page.get_by_role("button", name="Start").click()
        expect(page.locator("#msg")).to_contain_text("tick that you agree")
        page.get_by_label("I have read this and agree").check()
        page.get_by_role("button", name="Start").click()
        progress = page.locator("#progress")
        expect(progress).to_have_text("1 / 2")
        watch_both(page)  # at normal speed: the vote reaches the server after the clips' length
        page.get_by_role("button", name="A", exact=True).click()
        expect(progress).to_have_text("2 / 2")
        watch_both(page)
        page.get_by_role("button", name="Tie", exact=True).click()
        expect(page.get_by_text("Thank you!")).to_be_visible()
        expect(page.locator("#code")).to_have_text("C0DE42")
        page.screenshot(path=str(ARTIFACTS / "study_prolific_done.png"), full_page=True)
        page.wait_for_url(back)
        expect(page.get_by_text("Prolific: submission complete")).to_be_visible()

        other = browser.new_context(**phone).new_page()  # a second person from the same address, fresh cookies
        other.set_default_timeout(30_000)
        other.goto(f"{served.url}/s/{study['link']}/")
        other.get_by_label("I have read this and agree").check()
        other.get_by_role("button", name="Start").click()
        expect(other.locator("#msg")).to_contain_text("Too many people joined from your network")
        expect(other.locator("#study")).to_be_hidden()
        other.screenshot(path=str(ARTIFACTS / "study_join_refused.png"), full_page=True)
        browser.close()

    studies = owner.get_studies(home)
    (person,) = studies.participants(study["id"])
    assert person["platform"] == ids and person["finished"] and person["consented"]
    assert [v["side"] for v in sorted(studies.votes(study["id"]), key=lambda v: v["task"])] == ["left", "tie"]
