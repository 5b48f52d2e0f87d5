"""Issue 26 in a real browser (Debian chromium through Playwright) at a desktop (1280x900) and a phone (390x844) size,
against `python app.py` on 127.0.0.1: the next step and its progress are in view, progress moves and says what it is,
every table reads on a phone, the page speaks to a creator, the Experiments tab says what to enter.

The plan's LLM is DeepSeek, which cannot be reached from here: tests/llm_server.py's scripted server answers in its
place over the OpenAI protocol, after a few seconds (so that the progress can be watched). Everything else is real:
MicroLens retrieval (FAISS), the storyboard render, the predictor, SQLite. Screenshots of each step go to
tests/artifacts/; with POPCORN_SCREENSHOTS=1 the studio's go to docs/screenshots/ too (install Debian's
fonts-noto-color-emoji and fonts-noto-cjk first, or the emoji and the Chinese example show as empty boxes).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

try:
    from tests.llm_server import Reply, ScriptedServer, chat_reply
    from tests.test_app_client import ARTIFACTS, StudioServer
    from tests.test_browser import CHROMIUM, _error_toast, _field, _wait
except ImportError:
    from llm_server import Reply, ScriptedServer, chat_reply
    from test_app_client import ARTIFACTS, StudioServer
    from test_browser import CHROMIUM, _error_toast, _field, _wait

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "screenshots"
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
PLAN = ('{"title": "First snow, first zoomies", "cover_prompt": "a kitten in fresh snow, morning light", '
        '"video_prompt": "A small kitten steps into fresh snow for the first time, sniffs it carefully, then leaps '
        'and rolls as the camera follows low at its eye level in soft golden morning light."}')
ANSWER_DELAY_S = 5.0  # the stand-in answers after this long: longer than StageProgress.QUIET_S
DEVELOPER_WORDS = re.compile(r"Pipeline|max_sequence_length|__call__|\bNone\b|\[input\]|POPCORN_|Router candidates"
                             r"|Matched categories")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: apt-get install -y chromium "
                                                     "(scripts/setup.sh --dev installs it)"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with ScriptedServer() as api:
        api.play(Reply(**{**vars(chat_reply(PLAN, reasoning="Snow firsts do well.", model="deepseek-reasoner")),
                          "delay": ANSWER_DELAY_S}))
        env = {"DEEPSEEK_BASE_URL": api.base_url, "DEEPSEEK_API_KEY": "sk-test-0123456789",
               "POPCORN_LLM": "deepseek-reasoner"}
        with StudioServer(tmp_path_factory.mktemp("ux-browser-home"), "ux_browser.log", env=env) as studio:
            yield studio


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        context = chromium.new_context()  # one visitor (one cookie) for the module: History shows its runs
        yield context
        chromium.close()


def open_page(browser, served, size: str):
    page = browser.new_page()
    page.set_viewport_size(WIDTHS[size])
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(served.url, wait_until="domcontentloaded")
    page.locator("#plan-btn").wait_for(timeout=60_000)
    _wait(page, "the LLM picker to fill", lambda: "deepseek-reasoner is ready" in page.locator("#llm-info").inner_text(),
          120)
    return page, console


def open_tab(page, name: str) -> None:
    """Click a tab, through gradio's overflow menu ("...") where a phone has no room for every tab."""
    tab = page.get_by_role("tab", name=name)
    if not tab.is_visible():
        page.locator(".overflow-menu > button").first.click()
        tab = page.locator(f"button:has-text('{name}'):visible").last  # the menu's, after the tab row's
    tab.click()


def in_view(page, selector: str) -> bool:
    """Whether the element's top edge and at least 40 px of it are inside the viewport."""
    return page.evaluate("s => { const r = document.querySelector(s).getBoundingClientRect();"
                         " return r.top >= 0 && r.top + Math.min(40, r.height) <= window.innerHeight; }", selector)


def shot(page, name: str, docs: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"ux_{name}.png"))
    if docs and os.environ.get("POPCORN_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def shown_text(page, selector: str) -> str:
    """The element's text as a person sees it: closed <details> folds are not rendered, so not in innerText."""
    return page.locator(selector).inner_text()


def narrow_headers(page, elem_id: str) -> list[str]:
    """The header cells of a table whose label does not show on one line in full (wrapped, or cut off): the label's
    text laid out on more than one line, or wider than its cell."""
    return narrow_headers_in(page, f"#{elem_id} th")


def narrow_headers_in(page, selector: str) -> list[str]:
    """narrow_headers for the header cells `selector` finds."""
    return page.evaluate("""sel => [...document.querySelectorAll(sel)].filter(th => {
            const walker = document.createTreeWalker(th, NodeFilter.SHOW_TEXT); const rects = [];
            for (let n = walker.nextNode(); n; n = walker.nextNode()) {
                if (!n.textContent.trim()) continue;
                const range = document.createRange(); range.selectNodeContents(n);
                rects.push(...[...range.getClientRects()].filter(r => r.width > 0)); }
            if (!rects.length) return false;
            const lines = new Set(rects.map(r => Math.round(r.top)));
            const width = Math.max(...rects.map(r => r.right)) - Math.min(...rects.map(r => r.left));
            return lines.size > 1 || width > th.clientWidth; })
        .map(th => th.innerText.trim())""", selector)


def misaligned_columns(page, elem_id: str) -> list[str]:
    """The headers of a table (gradio's Dataframe: a header table above a separately laid-out body) that do not sit
    over their own column's cells: a header whose left edge or width differs by more than a pixel from its cells'."""
    return page.evaluate("""id => { const root = document.querySelector('#' + id);
            return [...root.querySelectorAll('th.header-cell')].filter((th, i) => {
                const h = th.getBoundingClientRect();
                return [...root.querySelectorAll(`.body-cell[data-col="${i}"]`)].some(cell => {
                    const c = cell.getBoundingClientRect();
                    return Math.abs(c.left - h.left) > 1 || Math.abs(c.width - h.width) > 1; }); })
            .map(th => th.innerText.trim()); }""", elem_id)


def clipped_cells(page, elem_id: str) -> list[str]:
    """The cells of a table whose text does not show in full (cut off, or ended with an ellipsis)."""
    return page.evaluate("""id => [...document.querySelectorAll(`#${id} .body-cell span`)]
        .filter(span => span.scrollWidth > span.clientWidth + 1).map(span => span.innerText.trim())""", elem_id)


def table_reads(page, elem_id: str) -> None:
    """A table reads at this width: it has rows, each header sits over its column and shows on one line in full, each
    cell's text shows in full, and the page itself does not scroll sideways (the table does, inside its frame, headers
    with it)."""
    assert page.locator(f"#{elem_id} .body-cell").count(), f"#{elem_id} has no rows"
    assert not misaligned_columns(page, elem_id), (elem_id, misaligned_columns(page, elem_id))
    assert not narrow_headers(page, elem_id), (elem_id, narrow_headers(page, elem_id))
    assert not clipped_cells(page, elem_id), (elem_id, clipped_cells(page, elem_id))
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"), elem_id


@pytest.mark.parametrize("size", list(WIDTHS))
def test_the_next_step_its_progress_and_its_result_stay_in_view(browser, served, size):
    page, console = open_page(browser, served, size)
    try:
        # pt 1: Plan right under the idea, in view without scrolling
        assert in_view(page, "#plan-btn"), "the Plan button is below the fold"
        query_box = page.locator("#query").bounding_box()
        button = page.locator("#plan-btn").bounding_box()
        assert 0 <= button["y"] - (query_box["y"] + query_box["height"]) < 40
        shot(page, f"studio_{size}_start")

        _field(page, "query").fill("a kitten sees snow for the first time")
        page.get_by_label("PE (with MicroLens references)").check()
        page.locator("#plan-btn").click()
        # pt 2: progress beside the button, moving, naming what it does
        seen: list[str] = []

        def progress_text():
            text = " ".join(page.locator("#plan-status").inner_text().split())
            if text:
                seen.append(text)
            return _field(page, "title").input_value()

        _wait(page, "the plan", progress_text, 300)
        assert any("plan:" in t or "retrieve:" in t for t in seen), seen
        ticks = [int(m.group(1)) for t in seen for m in [re.search(r"(\d+)(?:\.\d)?\s*s\b", t)] if m]
        assert any("still working" in t for t in seen), seen  # the quiet wait for the LLM is shown as such
        assert len(set(ticks)) >= 2, seen  # and it counts up
        # pt 1: the plan is brought into view, and the status under the button says what to do next
        _wait(page, "the plan to come into view", lambda: in_view(page, "#title"), 10)
        _wait(page, "the plan's note", lambda: "plan is ready" in page.locator("#plan-status").inner_text(), 10)
        shot(page, f"studio_{size}_plan")

        # pt 4: creator words in view; the router's scores and the encoder behind folds
        why = shown_text(page, "#why")
        assert "Category:" in why and "“Popular” means not in the bottom 10% of its category" in why
        assert "Why this category" in why
        for selector in ("#why", "#llm-info", "#video-info"):
            assert not DEVELOPER_WORDS.search(shown_text(page, selector)), (selector, shown_text(page, selector))
        assert re.search(r"video prompt of \d+ to ~\d+ words for storyboard", shown_text(page, "#video-info"))
        page.locator("#why summary").click()
        assert re.search(r"the best = 100", shown_text(page, "#why"))

        # pt 3: the references table reads at this width
        page.locator("#references").scroll_into_view_if_needed()
        table_reads(page, "references")
        shot(page, f"studio_{size}_references")

        # pt 1 + 2: Render, its progress under the button, the video brought into view when ready
        page.locator("#render-btn").click()
        _wait(page, "the video", lambda: page.evaluate(
            "() => { const v = document.querySelector('#video video'); return !!v && v.duration > 0; }"), 300)
        _wait(page, "the video to come into view", lambda: in_view(page, "#video"), 10)
        assert "video is ready" in page.locator("#render-status").inner_text()
        page.wait_for_timeout(600)
        shot(page, f"studio_{size}_video")
        page.get_by_text("Neighbours that drove the score").click()
        _wait(page, "the neighbours", lambda: page.locator("#neighbours .body-cell").count() > 0, 10)
        page.wait_for_timeout(300)  # gradio sizes the columns once the table is shown
        table_reads(page, "neighbours")
        assert not _error_toast(page)
        assert not [c for c in console if "Content Security Policy" in c], console
    finally:
        page.close()


@pytest.mark.parametrize("size", list(WIDTHS))
def test_history_reads_on_a_phone_and_the_experiments_tab_says_what_to_enter(browser, served, size):
    page, console = open_page(browser, served, size)
    try:
        open_tab(page, "History")
        _wait(page, "a run in the history", lambda: len(page.locator("#history [role=row]").all()) > 1, 60)
        table_reads(page, "history")
        shot(page, f"history_{size}")
        # pt 6: a missing folder is answered with what to enter, not "[input] ..."
        open_tab(page, "Experiments")
        _field(page, "exp-report-folder").fill("")
        page.locator("#exp-show").click()
        message = _wait(page, "the message", lambda: _error_toast(page, any_kind=True), 60)
        assert "[input]" not in message and "No batch folder given. Type the folder of a batch." in message, message
        assert not [c for c in console if "Content Security Policy" in c], console
    finally:
        page.close()


SPLIT_WORDS = """sel => [...document.querySelectorAll(sel)].flatMap(cell => {
    const broken = []; const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        for (const m of n.textContent.matchAll(/[^\\s\\/-]+/g)) {  // a break at a space, - or / is fine
            const range = document.createRange(); range.setStart(n, m.index); range.setEnd(n, m.index + m[0].length);
            const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
            if (lines.size > 1) broken.push(m[0]); } }
    return broken; })"""


def pick_only(page, elem_id: str, value: str) -> None:
    """Leave `value` as the one choice of a gradio multiselect Dropdown."""
    box = page.locator(f"#{elem_id}")
    for token in box.locator(".token").all():
        if token.inner_text().strip() != value:
            token.locator(".token-remove, [role=button]").first.click()
    if value not in [t.inner_text().strip() for t in box.locator(".token").all()]:
        box.locator("input").click()
        page.get_by_role("option", name=value, exact=True).click()
        page.keyboard.press("Escape")
    assert [t.inner_text().strip() for t in box.locator(".token").all()] == [value]


@pytest.mark.parametrize("size", list(WIDTHS))
def test_the_batch_report_tables_read_on_a_phone(browser, served, size):
    """The Experiments tab runs a small batch (one idea, Basic and PE, the stand-in DeepSeek, storyboard) and shows
    its report: every table's headers on one line, no word broken across lines (a break after - or / is fine), each table inside the screen (it
    scrolls sideways by itself when wider), the page not scrolling sideways."""
    page, console = open_page(browser, served, size)
    try:
        open_tab(page, "Experiments")
        _field(page, "exp-prompts").fill("a kitten sees snow for the first time")
        _wait(page, "the LLM list", lambda: page.locator("#exp-llms .token").count() > 0, 60)
        pick_only(page, "exp-llms", "deepseek-reasoner")
        _field(page, "exp-folder").fill(str(served.home / "ux-batch"))  # the same folder at both widths: resumed
        page.get_by_label("Honest judging (novelty, second judge)").uncheck()  # the second judge trains a minute
        page.get_by_role("button", name="Run batch").click()
        _wait(page, "the report", lambda: "Table 1" in page.locator("#exp-tables").inner_text(), 400)
        tables = page.locator("#exp-tables table")
        assert tables.count() >= 1
        assert not narrow_headers_in(page, "#exp-tables th"), narrow_headers_in(page, "#exp-tables th")
        assert not page.evaluate(SPLIT_WORDS, "#exp-tables td, #exp-tables th"), page.evaluate(
            SPLIT_WORDS, "#exp-tables td, #exp-tables th")
        assert page.evaluate("() => [...document.querySelectorAll('#exp-tables table')].every(t => {"
                             " const r = t.getBoundingClientRect(); return r.left >= 0 && r.right <= innerWidth; })")
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        tables.first.scroll_into_view_if_needed()
        shot(page, f"batch_report_{size}", docs=size == "phone")  # at 1280: scripts/screenshot_report.py's
        assert not _error_toast(page)
    finally:
        page.close()


SECRET = "owner-secret-for-the-ux-test"


VOTED = "Voted on"


@pytest.fixture(scope="module")
def study_served(tmp_path_factory):
    """A studio whose store holds six rendered runs (three ideas in PE and Basic mode), with an admin secret, and a
    study made from them that three participants answered (so that its results have rows)."""
    try:
        from tests.test_study_server import make_runs
    except ImportError:
        from test_study_server import make_runs
    from popcorn.study import owner

    home = tmp_path_factory.mktemp("ux-study-home")
    make_runs(home)
    pairs = owner.collect_pairs("runs", factor="mode", a="pe", b="basic", home=home)
    voted = owner.create_study(owner.LOCAL, VOTED, "Which video would be more popular?", pairs, per_participant=3,
                               attention_checks=0, home=home, min_view_seconds=0)
    studies = owner.get_studies(home)
    for person in range(3):
        joined = studies.join(voted["link"], address=f"192.0.2.{person + 1}")
        for task in range(len(joined["tasks"])):
            studies.vote(voted["link"], joined["id"], task, ("left", "right", "left")[(task + person) % 3])
    with StudioServer(home, "ux_study.log", env={"POPCORN_ADMIN_SECRET": SECRET}) as studio:
        yield studio


CARDS = """() => [...document.querySelectorAll('#study-list .pc-study')].map(card => {
    const facts = {}; const misplaced = [];
    card.querySelectorAll('.pc-fact').forEach(fact => {
        const label = fact.querySelector('.pc-label'), value = fact.querySelector('b, .pc-link');
        facts[label.innerText.trim().toLowerCase()] = value.innerText.trim();
        const l = label.getBoundingClientRect(), v = value.getBoundingClientRect();  // the value right under its label
        if (v.top < l.bottom - 1 || v.left > l.right || v.right < l.left) misplaced.push(label.innerText); });
    const r = card.getBoundingClientRect(), link = card.querySelector('.pc-link');
    return {name: card.querySelector('.pc-title').innerText, facts, misplaced,
            inside: r.left >= 0 && r.right <= window.innerWidth && link.scrollWidth <= link.clientWidth + 1}; })"""


def pick(page, elem_id: str, text: str) -> None:
    """Choose the option containing `text` in a gradio Dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=re.compile(re.escape(text))).first.click()
    _wait(page, f"{text} picked", lambda: text in page.locator(f"#{elem_id} input").input_value(), 10)


@pytest.mark.parametrize("size", list(WIDTHS))
def test_the_study_tab_lists_the_participant_link_and_the_participant_page_reads_on_a_phone(browser, study_served,
                                                                                             size):
    page = browser.new_page()
    page.set_viewport_size(WIDTHS[size])
    try:
        page.goto(study_served.url, wait_until="domcontentloaded")
        page.locator("#plan-btn").wait_for(timeout=60_000)
        open_tab(page, "Study")
        _field(page, "study-secret").fill(SECRET)
        _field(page, "study-name").fill(f"PE or Basic ({size})")
        page.get_by_role("button", name="Create study").click()
        _wait(page, "the study", lambda: "Participant link:" in page.locator("#study-created").inner_text(), 120)
        _wait(page, "the new study to come into view", lambda: in_view(page, "#study-created"), 10)
        # the list comes with the new study, as cards: each value under its label, inside the screen
        _wait(page, "the list", lambda: f"PE or Basic ({size})" in page.locator("#study-list").inner_text(), 60)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.get_by_role("button", name="List studies").click()
        page.wait_for_timeout(500)
        _wait(page, "the list to come into view", lambda: in_view(page, "#study-list"), 10)
        cards = {c["name"].split(" · ")[0]: c for c in page.evaluate(CARDS)}
        mine, voted = cards[f"PE or Basic ({size})"], cards[VOTED]
        assert {k: mine["facts"][k] for k in ("status", "people", "votes")} == {"status": "open", "people": "0",
                                                                               "votes": "0"}, mine
        assert (voted["facts"]["people"], voted["facts"]["votes"]) == ("3", "9"), voted
        for card in cards.values():
            assert not card["misplaced"] and card["inside"], card
        assert not DEVELOPER_WORDS.search(shown_text(page, "#study-tab")), shown_text(page, "#study-tab")
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        link = mine["facts"]["link to share"]
        assert re.fullmatch(r"/s/[\w-]+/", link), link  # a path: no public URL set
        # the link is copyable: one click on it selects all of it (and nothing else)
        card = page.locator("#study-list .pc-study", has_text=f"PE or Basic ({size})")
        card.locator(".pc-link").click()
        assert page.evaluate("() => window.getSelection().toString().trim()") == link
        card.scroll_into_view_if_needed()
        shot(page, f"study_tab_{size}")

        # Results, Close and Reopen each answer right under the buttons, and the card follows
        pick(page, "study-pick", VOTED)
        page.locator("#study-results").click()
        _wait(page, "the results", lambda: page.locator("#study-win-rates .body-cell").count() > 0, 120)
        _wait(page, "the results to come into view", lambda: in_view(page, "#study-summary"), 10)
        page.locator("#study-win-rates").scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        table_reads(page, "study-win-rates")
        assert "basic vs pe" in page.locator("#study-win-rates").inner_text()
        shot(page, f"study_results_{size}")
        page.locator("#study-close").click()
        _wait(page, "closed", lambda: "is closed" in page.locator("#study-state").inner_text(), 60)
        _wait(page, "the new state to come into view", lambda: in_view(page, "#study-state"), 10)
        assert {c["name"].split(" · ")[0]: c for c in page.evaluate(CARDS)}[VOTED]["facts"]["status"] == "closed"
        page.locator("#study-reopen").click()
        _wait(page, "open again", lambda: "is open" in page.locator("#study-state").inner_text(), 60)
        assert {c["name"].split(" · ")[0]: c for c in page.evaluate(CARDS)}[VOTED]["facts"]["status"] == "open"
        if size == "phone":  # the participant's page, as a participant meets it
            participant = browser.new_page()
            participant.set_viewport_size(WIDTHS[size])
            participant.goto(study_served.url.rstrip("/") + link)
            start = participant.get_by_role("button", name=re.compile("start", re.I))
            if start.count():
                start.first.click()
            participant.locator("video").first.wait_for(timeout=30_000)
            boxes = [participant.locator("video").nth(i).bounding_box() for i in range(2)]
            assert all(b["y"] + b["height"] <= WIDTHS[size]["height"] for b in boxes)  # A and B both in view
            shot(participant, "participant_phone")
            participant.close()
    finally:
        page.close()
