"""End to end in a real browser: Debian chromium driven by Playwright against `python app.py` on 127.0.0.1.

A person types an idea, plans it with the embedded LLM (Qwen2.5 1.5B, llama.cpp) in PE mode, sees the references and
the plan, renders the storyboard, watches the video load and reads the popularity card with its human baseline; after
a reload the run is in the history. Screenshots go to tests/artifacts/ (git-ignored).

Slow on CPU (the plan is a real LLM generation): POPCORN_BROWSER_TIMEOUT (seconds, default 900) bounds each wait.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from popcorn import studio

try:
    from tests.test_app_client import ARTIFACTS, StudioServer
except ImportError:
    from test_app_client import ARTIFACTS, StudioServer

CHROMIUM = Path(os.environ.get("POPCORN_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_S = float(os.environ.get("POPCORN_BROWSER_TIMEOUT", "900"))
QUERY = "a golden retriever puppy sees the sea for the first time"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.llm,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium "
                                                     "(scripts/setup.sh --dev installs it)"),
]


def _error_toast(page, any_kind: bool = False) -> str:
    """The text of the error message on screen ('' when none)."""
    toasts = page.locator(".toast-body.error, [data-testid='toast-body'].error")
    if any_kind and not toasts.count():
        toasts = page.locator("[data-testid='toast-body']")
    return toasts.first.inner_text() if toasts.count() else ""


def _close_toasts(page, timeout_s: float = 30) -> None:
    """Close every message on screen and wait until none is left (a stale one must not fail the next step)."""
    deadline = time.monotonic() + timeout_s
    while _error_toast(page, any_kind=True):
        if time.monotonic() > deadline:
            pytest.fail("the studio's messages did not close")
        closers = page.locator("[data-testid='toast-close']")
        if closers.count():
            closers.first.click()
        page.wait_for_timeout(300)


def _wait(page, what: str, check, timeout_s: float = TIMEOUT_S, seen: list | None = None):
    """Poll `check()` until it returns something truthy; an error toast fails at once with its message.

    The toast is read before `check()`: a message that appears between the two is then seen by `check()` first (so
    an expected message is never taken for an unexpected one), and an error counts only when it was already on
    screen while `check()` still failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        error = _error_toast(page)
        value = check()
        if value:
            return value
        if error:
            page.screenshot(path=str(ARTIFACTS / "browser_error.png"), full_page=True)
            pytest.fail(f"while waiting for {what}, the studio showed an error: {error}")
        if seen is not None:  # the progress text, whenever one is shown
            for text in page.locator(".progress-text, .meta-text, .progress-level-inner").all_inner_texts():
                if text.strip():
                    seen.append(text.strip())
        page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "browser_timeout.png"), full_page=True)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _rows(page, elem_id: str) -> list[str]:
    """The data rows a Gradio dataframe shows (one string per row, cells joined by spaces)."""
    rows = page.locator(f"#{elem_id} [role=row]").all_inner_texts()[1:]  # the first is the header
    return [" ".join(r.split()) for r in rows]


def _field(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with StudioServer(tmp_path_factory.mktemp("studio-browser-home"), "studio_browser.log") as s:
        yield s


def test_plan_render_and_score_in_a_browser(server):
    from playwright.sync_api import sync_playwright

    from popcorn.store import Store

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(server.url, wait_until="domcontentloaded")
            page.locator("#plan-btn").wait_for(timeout=60_000)
            _wait(page, "the backend pickers to fill", lambda: "local is ready" in page.locator("#llm-info").inner_text(), 120)

            # 0. a mistake: Render with no plan gives a message naming the stage, and the spinner stops
            page.locator("#render-btn").click()
            message = _wait(page, "the error message", lambda: _error_toast(page, any_kind=True), 60)
            assert "Stage input failed: the title is empty." in message and "Traceback" not in message
            page.wait_for_timeout(700)  # the message slides in
            page.screenshot(path=str(ARTIFACTS / "browser_0_error.png"))
            _close_toasts(page)
            _wait(page, "the render button to be free", lambda: page.locator("#video .progress-text").count() == 0, 30)

            # 1. the idea, PE mode, the embedded LLM
            _field(page, "query").fill(QUERY)
            page.get_by_label("PE (with MicroLens references)").check()
            assert _field(page, "llm").input_value() == "local"
            page.locator("#plan-btn").click()
            progress: list[str] = []
            title = _wait(page, "the plan's title", lambda: _field(page, "title").input_value(), seen=progress)
            page.screenshot(path=str(ARTIFACTS / "browser_1_plan.png"), full_page=True)

            # the plan and the references a person sees
            assert 0 < len(title) <= 50
            assert _field(page, "video-prompt").input_value().strip()
            grid = page.locator("#references [role=grid]")
            assert grid.get_attribute("aria-rowcount") == "11"  # the header and K=10 references
            label = f"#references .body-cell[data-col='{studio.REFERENCE_COLUMNS.index('label')}']"
            texts, first_row = page.locator(label).all_inner_texts(), _rows(page, "references")[0]
            assert "popular" in [t.strip() for t in texts], texts
            grid.locator(".virtual-table-viewport").evaluate("e => { e.scrollTop = e.scrollHeight; }")
            page.wait_for_timeout(300)
            assert "unpopular" in [t.strip() for t in page.locator(label).all_inner_texts()], texts
            assert "Category:" in page.locator("#why").inner_text()
            assert any(re.match(r"(retrieve|plan): ", t) for t in progress), progress  # progress names the stage
            run_id = _field(page, "run-id").input_value()
            record = Store(server.home / "popcorn.db").get_run(run_id)
            assert record["status"] == "planned" and record["plan"]["title"] == title
            first = record["retrieval"]["references"][0]
            # the first row: title, label, comments, match, category (studio.REFERENCE_COLUMNS)
            row = rf"\bpopular {first['comments']} [\d.]+ {re.escape(first['category'])}$"
            assert re.search(row, first_row), first_row

            # 2. render the storyboard; the video loads in the player
            assert _field(page, "video-model").input_value() == "storyboard"
            page.locator("#render-btn").click()
            _wait(page, "the video to load", lambda: page.evaluate(
                "() => { const v = document.querySelector('#video video');"
                " return !!v && v.readyState >= 1 && v.duration > 0; }"))
            duration = page.evaluate("() => document.querySelector('#video video').duration")
            assert 2.0 < duration < 10.0

            # 3. the popularity card: predicted comments beside the human-matched baseline
            card_box = page.locator("#popularity-card")
            card = _wait(page, "the popularity card",  # (its labels are upper-cased by CSS)
                         lambda: (lambda t: t if "human-matched baseline" in t.lower() else "")(card_box.inner_text()))
            record = Store(server.home / "popcorn.db").get_run(run_id)
            assert record["status"] == "done", record["error"]
            baseline = record["baseline"]["videos"][0]
            assert " ".join(baseline["title"].split())[:30] in " ".join(card.split())
            assert f"{baseline['comments']:,}" in card and f"{round(baseline['predicted_comments']):,}" in card
            assert f"{round(record['score']['predicted_comments']):,}" in card
            assert page.locator("#cover img").count() == 1
            page.evaluate("() => { const v = document.querySelector('#video video'); v.pause(); v.currentTime = 1.2; }")
            page.locator("#video").scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / "browser_2_render.png"), full_page=True)

            # 4. a reload keeps the run: it is in the history
            page.reload(wait_until="domcontentloaded")
            page.get_by_role("tab", name="History").click()
            _wait(page, "the run in the history", lambda: run_id in page.locator("#history").inner_text(), 60)
            page.screenshot(path=str(ARTIFACTS / "browser_3_history.png"), full_page=True)
            row = next(i for i, t in enumerate(_rows(page, "history"), 1) if run_id in t)
            page.locator("#history [role=row]").nth(row).locator("[role=gridcell]").nth(1).click()
            _wait(page, "the run to open", lambda: _field(page, "title").input_value() == title, 60)
            assert _field(page, "run-id").input_value() == run_id
            assert _field(page, "query").input_value() == QUERY
            _wait(page, "the stored video", lambda: page.evaluate(
                "() => { const v = document.querySelector('#video video'); return !!v && v.duration > 0; }"), 60)
            assert f"{baseline['comments']:,}" in page.locator("#popularity-card").inner_text()
        finally:
            browser.close()
