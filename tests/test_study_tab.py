"""The owner's Study tab: it builds as one gr.Tab, refuses without the admin secret, creates a study from a pair file
and shows its results and chart."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

gr = pytest.importorskip("gradio")

from popcorn.serve import access  # noqa: E402
from popcorn.study import media, owner  # noqa: E402
from popcorn.ui import study as tab  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_secret_tries(monkeypatch):
    """The admin secret's try limits (popcorn.serve.access) are per process: each test starts with its own."""
    monkeypatch.setattr(access, "_SECRET_TRIES", access.RateLimiter(*access.SECRET_TRIES["client"]))
    monkeypatch.setattr(access, "_SECRET_TRIES_SERVER", access.RateLimiter(*access.SECRET_TRIES["server"]))


@pytest.fixture
def pair_file(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    clips = []
    for i in range(4):
        path = tmp_path / f"c{i}.mp4"
        subprocess.run([media.ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i",
                        f"testsrc=size=64x64:rate=5:duration=1,hue=h={i * 80}", "-c:v", "libx264", "-pix_fmt",
                        "yuv420p", str(path)], check=True, timeout=60)
        clips.append(path)
    entries = [{"a": str(clips[0]), "b": str(clips[1]), "condition_a": "ltx", "condition_b": "wan", "h_a": 5, "h_b": 2},
               {"a": str(clips[2]), "b": str(clips[3]), "condition_a": "ltx", "condition_b": "wan", "h_a": 1, "h_b": 9}]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(entries))
    return path


def _card(cards: str, study_id: str) -> dict:
    """One study's card in the tab's list (HTML) as a person reads it: its name, each fact under its label, the link."""
    from html.parser import HTMLParser

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.cards, self.path, self.label = {}, [], None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.path.append((tag, attrs.get("class", "")))
            if "pc-study" in attrs.get("class", "").split():
                self.card = self.cards.setdefault(attrs["data-study"], {"name": ""})

        def handle_endtag(self, tag):
            self.path.pop()

        def handle_data(self, data):
            tag, cls = self.path[-1] if self.path else ("", "")
            if cls == "pc-title":
                self.card["name"] += data.strip()
            elif cls == "pc-label":
                self.label = data.strip()
            elif tag == "b" or (tag == "code" and self.label == "link to share"):
                self.card["link" if tag == "code" else self.label] = data.strip()

    reader = Reader()
    reader.feed(cards)
    return reader.cards[study_id]


def test_the_tab_builds_as_one_tab():
    with gr.Blocks() as demo:
        with gr.Tabs():
            tab.build_tab()
    actions = sorted(fn.name for fn in demo.fns.values() if fn.fn is not None)
    assert actions == ["on_create", "on_list", "on_results", "on_status", "on_status"]  # close and reopen share one
    assert len(demo.fns) == 2 * len(actions)  # each action, then a step that brings its answer into view
    assert {fn.api_visibility for fn in demo.fns.values()} == {"private"}  # owner actions are not a public API


def test_refused_without_the_secret_then_create_and_results(pair_file, monkeypatch, tmp_path):
    monkeypatch.delenv("POPCORN_ADMIN_SECRET", raising=False)
    form = ("my study", "Which one?", "file", "video", "", "", str(pair_file), "", 2, 0, 0)
    with pytest.raises(gr.Error, match="POPCORN_ADMIN_SECRET"):
        tab.on_create("anything", *form)
    monkeypatch.setenv("POPCORN_ADMIN_SECRET", "owner-secret")
    with pytest.raises(gr.Error, match="wrong admin secret"):
        tab.on_create("guess", *form)
    with pytest.raises(gr.Error, match="wrong admin secret"):
        tab.on_list("", None)
    text, dropdown, _ = tab.on_create("owner-secret", *form)
    assert "Participant link: `/s/" in text and "2 pairs" in text and "0 gold attention checks)" in text
    (study_id,) = [value for _, value in dropdown.choices]
    studies = owner.get_studies()
    study = studies.study(study_id)
    people = []
    for choices in (["left", "right"], ["left", "left"]):  # two people vote on both pairs, once they could watch
        me = studies.join(study["link"])
        for task in range(len(choices)):
            studies.shown(me, task, serve=True)
        people.append((me, choices))
    time.sleep(1.0)  # the clips last 1 s: the viewing rule (the shorter video, less 0.25 s) is met
    for me, choices in people:
        for task, choice in enumerate(choices):
            studies.vote(study["link"], me["id"], task, choice)
    with pytest.raises(gr.Error, match="wrong admin secret"):
        tab.on_results("guess", study_id)
    summary, rows, chart, files = tab.on_results("owner-secret", study_id)
    assert "4 votes from 2 participants" in summary
    assert rows[0][0] == "ltx vs wan" and rows[0][1] == 4
    assert Path(chart).read_bytes()[:4] == b"\x89PNG" and len(files) == 3  # votes, participants, results
    # the list shows each study's link and status; close and reopen from the tab
    dropdown, listed = tab.on_list("owner-secret", None)
    assert dropdown.value == study_id  # the newest study is picked
    assert _card(listed, study_id) == {"name": "my study", "status": "open", "people": "2", "votes": "4",
                                       "link": f"/s/{study['link']}/"}
    with pytest.raises(gr.Error, match="wrong admin secret"):
        tab.on_status("guess", study_id, "closed")
    note, _, listed = tab.on_status("owner-secret", study_id, "closed")
    assert "**closed**" in note and _card(listed, study_id)["status"] == "closed"
    with pytest.raises(owner.StudyError) as closed:
        studies.join(study["link"])
    assert closed.value.status == 410
    note, _, listed = tab.on_status("owner-secret", study_id, "open")
    assert _card(listed, study_id)["status"] == "open" and studies.join(study["link"])["id"]


def test_the_owner_signed_in_on_the_studio_needs_no_secret_here(pair_file, monkeypatch):
    monkeypatch.setenv("POPCORN_ADMIN_SECRET", "owner-secret")
    owner_request = SimpleNamespace(session_hash="owner-tab", cookies={}, username=None)
    stranger = SimpleNamespace(session_hash="stranger-tab", cookies={}, username=None)
    assert access.sign_in_owner("s:owner-tab", "owner-secret")
    try:
        form = ("signed in", "Which one?", "file", "video", "", "", str(pair_file), "", 2, 0, 0)
        text, dropdown, _ = tab.on_create("", *form, request=owner_request)
        assert "2 pairs" in text and len(dropdown.choices) == 1
        assert tab.on_list("", None, request=owner_request)[0].choices == dropdown.choices
        with pytest.raises(gr.Error, match="wrong admin secret"):
            tab.on_list("", None, request=stranger)
    finally:
        access.sign_out_owner("s:owner-tab")
    with pytest.raises(gr.Error, match="wrong admin secret"):
        tab.on_list("", None, request=owner_request)  # signed out: the secret again
