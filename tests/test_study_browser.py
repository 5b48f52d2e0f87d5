"""One participant session in a real browser: Debian chromium through Playwright, a phone-sized screen, against the
study routes served by uvicorn on 127.0.0.1. Start, answer, reload (resumes), answer the rest, thank-you page; the
DOM never names a system. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

try:
    from tests.test_study_server import Served, forbidden_words, make_runs, scan
except ImportError:
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


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("study-browser")
    make_runs(home)
    return home


def test_a_participant_answers_on_a_phone_and_resumes_after_a_reload(home):
    from playwright.sync_api import expect, sync_playwright

    pairs = owner.collect_pairs("runs", factor="mode", a="pe", b="basic", home=home)
    study = owner.create_study(owner.LOCAL, "PE vs Basic (browser)", "Which video would be more popular?", pairs,
                               per_participant=3, attention_checks=1, home=home)
    words = forbidden_words(home)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Served(home) as served, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
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
        page.screenshot(path=str(ARTIFACTS / "study_phone.png"), full_page=True)
        page.get_by_role("button", name="A", exact=True).click()
        expect(progress).to_have_text("2 / 4")

        page.reload()
        expect(progress).to_have_text("2 / 4")
        videos_ready()
        page.locator("#reason").fill("brighter colours")
        page.get_by_role("button", name="B", exact=True).click()
        expect(progress).to_have_text("3 / 4")
        page.get_by_role("button", name="Tie", exact=True).click()
        expect(progress).to_have_text("4 / 4")
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
    assert sum(v["check_of"] is not None for v in votes) == 1
