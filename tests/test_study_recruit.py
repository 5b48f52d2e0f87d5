"""Studies you can publish, over real HTTP (uvicorn on 127.0.0.1, the real SQLite store, real ffmpeg copies): join
limits per address (the forwarded address believed only from a configured proxy) and per study, close / reopen,
the viewing rule, gold checks under fresh media ids, exposure balance, consent, platform ids, the completion code,
the participant table, the frozen analysis, bad vote input answered 4xx, and the group commit.

The videos are short clips cut by ffmpeg (what they show does not matter here; the rendered-run path is covered by
test_study_server.py), so the viewing rule can be waited out in about a second."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from popcorn.serve import access
from popcorn.study import media, owner

try:
    from tests.test_study_server import Client, Served
except ImportError:
    from test_study_server import Client, Served

CLIP_S = 1.0


@pytest.fixture(autouse=True)
def fresh_secret_tries(monkeypatch):
    monkeypatch.setattr(access, "_SECRET_TRIES", access.RateLimiter(*access.SECRET_TRIES["client"]))
    monkeypatch.setattr(access, "_SECRET_TRIES_SERVER", access.RateLimiter(*access.SECRET_TRIES["server"]))


def clip_pairs(folder: Path, n: int) -> list[dict]:
    """`n` pairs of two distinct CLIP_S-second clips each (conditions x and y)."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for i in range(n):
        sides = []
        for k, side in enumerate("ab"):
            path = folder / f"clip{i}{side}.mp4"
            subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                            f"testsrc=size=96x64:rate=8:duration={CLIP_S},hue=h={(2 * i + k) * 20}", "-c:v",
                            "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, timeout=60)
            sides.append({"run_id": f"run{i}{side}", "condition": "xy"[k], "video": str(path), "h": float(k)})
        pairs.append({"query": f"q{i}", "factor": "mode", "prompt_type": "concrete", "category": "Life",
                      "a": sides[0], "b": sides[1]})
    return pairs


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("study-recruit")


@pytest.fixture(scope="module")
def pairs(home):
    return clip_pairs(home / "clips", 6)


@pytest.fixture(scope="module")
def served(home):
    with Served(home) as s:
        yield s


def make(home, pairs, **options):
    options.setdefault("per_participant", 2)
    return owner.create_study(owner.LOCAL, "recruit", "Which one?", pairs, home=home, **options)


def raw_post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def answer_all(c: Client, link: str, choice: str = "A") -> dict:
    while True:
        status, state = c.call("GET", f"/s/{link}/api/state")
        assert status == 200, state
        if state["finished"]:
            return state
        assert c.call("POST", f"/s/{link}/api/vote", {"task": state["task"]["index"], "choice": choice})[0] == 200


# ------------------------------------------------------------------------------------------------------------ joins


def test_one_address_cannot_flood_an_open_link_and_another_still_joins(served, home, pairs, monkeypatch):
    study = make(home, pairs, max_joins_per_address=3, min_view_seconds=0)
    link = study["link"]

    def join(forwarded=None):
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return Client(served.url).call("POST", f"/s/{link}/api/join", {}, headers=headers)

    # no proxy configured: the header is the client's own claim and is ignored (all of these are 127.0.0.1)
    monkeypatch.delenv("POPCORN_TRUSTED_PROXIES", raising=False)
    assert [join(f"198.51.100.{i}")[0] for i in range(4)] == [200, 200, 200, 429]
    status, refused = join("203.0.113.50")
    assert status == 429 and "too many people joined from your network" in refused["error"]
    # behind the configured proxy (127.0.0.1 here) the forwarded address names the participant
    monkeypatch.setenv("POPCORN_TRUSTED_PROXIES", "127.0.0.0/8, not-an-address")  # a range; junk trusts nothing
    assert [join("198.51.100.7")[0] for _ in range(4)] == [200, 200, 200, 429]
    assert join("198.51.100.8")[0] == 200  # a participant from another address still joins
    # a spoofed left-most entry does not help: the right-most address the proxy saw is the one counted
    assert join("203.0.113.1, 198.51.100.7")[0] == 429
    assert owner.get_studies(home).study(study["id"])["participants"] == 7  # refused joins stored nothing


def test_on_a_space_the_private_proxy_is_believed_by_default(monkeypatch):
    from starlette.requests import Request

    from popcorn.study.server import client_address

    def seen(peer, forwarded):
        return client_address(Request({"type": "http", "client": (peer, 5555),
                                       "headers": [(b"x-forwarded-for", forwarded.encode())]}))

    monkeypatch.delenv("POPCORN_TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert seen("10.1.2.3", "198.51.100.9") == "10.1.2.3"  # not configured: the peer
    monkeypatch.setenv("SPACE_ID", "someone/popcorn")
    assert seen("10.1.2.3", "198.51.100.9") == "198.51.100.9"  # a Space's proxy sits on a private address
    assert seen("198.51.100.20", "10.0.0.1") == "198.51.100.20"  # a public peer claiming anything: itself
    monkeypatch.setenv("POPCORN_TRUSTED_PROXIES", "192.0.2.1")  # configured wins over the Space default
    assert seen("10.1.2.3", "198.51.100.9") == "10.1.2.3"


def test_a_participant_cap_and_close_reopen_answer_410_with_a_message(served, home, pairs, monkeypatch):
    from popcorn.cli import main

    study = make(home, pairs, max_participants=2, min_view_seconds=0)
    link = study["link"]
    first, second = Client(served.url), Client(served.url)
    assert first.call("POST", f"/s/{link}/api/join", {})[0] == 200
    assert second.call("POST", f"/s/{link}/api/join", {})[0] == 200
    status, full = Client(served.url).call("POST", f"/s/{link}/api/join", {})
    assert status == 410 and "full" in full["error"]

    monkeypatch.setenv("POPCORN_HOME", str(home))
    assert main(["study", "close", study["id"]]) == 0
    status, page = first.call("GET", f"/s/{link}/")
    assert status == 410 and b"closed" in page
    status, closed = first.call("GET", f"/s/{link}/api/state")
    assert status == 410 and "closed" in closed["error"]
    assert first.call("POST", f"/s/{link}/api/vote", {"task": 0, "choice": "A"})[0] == 410
    assert owner.get_studies(home).study(study["id"])["votes"] == 0
    assert main(["study", "reopen", study["id"]]) == 0
    assert first.call("GET", f"/s/{link}/api/state")[0] == 200
    assert first.call("POST", f"/s/{link}/api/vote", {"task": 0, "choice": "A"})[0] == 200


# ------------------------------------------------------------------------------------------------------------ votes


def test_a_vote_sooner_than_the_videos_last_is_refused_or_flagged(served, home, pairs):
    study = make(home, pairs)  # the default rule: the shorter video's length (1 s here), less 0.25 s
    assert study["prereg"]["viewing"]["policy"] == "refuse" and study["prereg"]["viewing"]["min_view_seconds"] is None
    link = study["link"]
    c = Client(served.url)
    c.call("POST", f"/s/{link}/api/join", {})
    status, early = c.call("POST", f"/s/{link}/api/vote", {"task": 0, "choice": "A"})  # never even served
    assert status == 425 and "watch both videos" in early["error"]
    _, state = c.call("GET", f"/s/{link}/api/state")
    status, early = c.call("POST", f"/s/{link}/api/vote", {"task": state["task"]["index"], "choice": "A"})
    assert status == 425
    time.sleep(CLIP_S)
    assert c.call("POST", f"/s/{link}/api/vote", {"task": state["task"]["index"], "choice": "A"})[0] == 200

    flagged = make(home, pairs, min_view_seconds=30, view_policy="flag")
    c = Client(served.url)
    c.call("POST", f"/s/{flagged['link']}/api/join", {})
    answer_all(c, flagged["link"])
    votes = owner.get_studies(home).votes(flagged["id"])
    assert [v["flags"] for v in votes] == ["fast", "fast"] and all(v["view_seconds"] < 30 for v in votes)
    result = owner.results(owner.LOCAL, flagged["id"], bootstrap=0, home=home)
    assert result["fast_votes"] == 2 and any("minimum view time" in d for d in result["departures"])


def test_bad_vote_input_is_answered_4xx_never_500(served, home, pairs):
    study = make(home, pairs, min_view_seconds=0)
    link = study["link"]
    c = Client(served.url)
    pid = c.call("POST", f"/s/{link}/api/join", {})[1]["participant"]
    url = f"{served.url}/s/{link}/api/vote?p={pid}"
    bad = [b'{"task": %s, "choice": "A"}' % task for task in
           (b"1e400", b"-1e400", b"NaN", b"Infinity", b"true", b"0.5", b'"0"', b"[0]", b"null")]
    bad += [b'{"task": 0, "choice": ["A"]}', b"[" * 5000 + b"]" * 5000, b'{"task": 0, "choice": "A"', b'"a string"']
    for body in bad:
        status, answer = raw_post(url, body)
        assert 400 <= status < 500 and answer.get("error"), (body[:40], status, answer)
    status, _ = raw_post(url, b'{"task": 99999999999999999999999, "choice": "A"}')
    assert status == 404  # a whole number, just not one of this participant's tasks
    assert raw_post(url, b'{"task": 1, "choice": "A"}')[0] == 409  # out of order: task 0 comes first
    assert raw_post(url, b'{"task": 0.0, "choice": "A"}')[0] == 200
    assert owner.get_studies(home).study(study["id"])["votes"] == 1


def test_gold_checks_use_fresh_media_ids_and_exclude_who_picks_the_frozen_video(served, home, pairs):
    study = make(home, pairs, per_participant=3, attention_checks=2, min_view_seconds=0)
    items = owner.get_studies(home).items(study["id"])
    gold = [it for it in items if it["kind"] == "gold"]
    pair_media = {m for it in items if it["kind"] == "pair" for m in (it["media_a"], it["media_b"])}
    assert len(gold) == 2 and not {m for it in gold for m in (it["media_a"], it["media_b"])} & pair_media
    folder = owner.get_studies(home).media_root / study["id"]
    for it in gold:  # the broken side lasts as long as the intact one: it is frozen, not short
        assert media.duration(folder / f"{it['media_b']}.mp4") == pytest.approx(CLIP_S, abs=0.2)
    link, tasks = study["link"], {}
    for who, pick_frozen in (("careless", True), ("careful", False)):
        c = Client(served.url)
        pid = c.call("POST", f"/s/{link}/api/join", {})[1]["participant"]
        me = owner.get_studies(home).participant(link, pid)
        assert len(me["tasks"]) == 5 and sum(bool(t.get("gold")) for t in me["tasks"]) == 2
        while True:
            _, state = c.call("GET", f"/s/{link}/api/state")
            if state["finished"]:
                break
            t = me["tasks"][state["task"]["index"]]
            choice = "A"
            if t.get("gold"):  # the frozen video is the item's "b": on the left when the sides are swapped
                frozen_side = "A" if t["swap"] else "B"
                choice = frozen_side if pick_frozen else ("B" if frozen_side == "A" else "A")
            assert c.call("POST", f"/s/{link}/api/vote", {"task": state["task"]["index"], "choice": choice})[0] == 200
        tasks[who] = me["number"]
    result = owner.results(owner.LOCAL, study["id"], bootstrap=0, home=home)
    assert result["flagged"] == [f"P{tasks['careless']:04d}"]
    assert result["first_showings"] == 6 and result["attention_checks"]["failed"] == 2
    assert [(r["x"], r["y"]) for r in result["win_rates"]] == [("x", "y")]


def test_each_pair_reaches_about_as_many_people(served, home, pairs):
    study = make(home, pairs, per_participant=2, min_view_seconds=0)
    for _ in range(9):  # 9 people x 2 pairs over 6 pairs: 3 each
        assert Client(served.url).call("POST", f"/s/{study['link']}/api/join", {})[0] == 200
    assert sorted(it["shown"] for it in owner.get_studies(home).items(study["id"])) == [3] * 6


# ------------------------------------------------------------------------------------------------------- recruitment


def test_prolific_end_to_end_consent_ids_completion_and_the_participant_table(served, home, pairs, monkeypatch):
    redirect = "https://app.prolific.com/submissions/complete?cc=C0DE42"
    study = make(home, pairs, min_view_seconds=0, consent="You agree that your answers are stored <anonymously>.",
                 completion_code="C0DE42", redirect_url=redirect, planned_participants=5)
    link = study["link"]
    c = Client(served.url)
    status, page = c.call("GET", f"/s/{link}/")
    assert status == 200 and b"stored &lt;anonymously&gt;." in page  # the owner's text, escaped
    status, refused = c.call("POST", f"/s/{link}/api/join", {})
    assert status == 400 and "consent" in refused["error"]
    assert c.call("POST", f"/s/{link}/api/join", {"consent": True,
                                                   "platform": {"PROLIFIC_PID": "<script>"}})[0] == 400
    ids = {"PROLIFIC_PID": "5f1a2b3c4d5e6f7a8b9c0d1e", "STUDY_ID": "60aa", "SESSION_ID": "s-77", "other": "dropped"}
    status, joined = c.call("POST", f"/s/{link}/api/join", {"consent": True, "platform": ids})
    assert status == 200
    _, state = c.call("GET", f"/s/{link}/api/state")
    assert "completion_code" not in state  # only once finished
    done = answer_all(c, link)
    assert done["completion_code"] == "C0DE42" and done["redirect"] == redirect

    monkeypatch.setenv("POPCORN_ADMIN_SECRET", "s3cret-value")
    good = {"Authorization": "Bearer s3cret-value"}
    status, table = c.call("GET", f"/study-admin/{study['id']}/participants.csv", headers=good)
    assert status == 200
    import csv
    import io

    (row,) = list(csv.DictReader(io.StringIO(table.decode())))
    assert (row["PROLIFIC_PID"], row["STUDY_ID"], row["SESSION_ID"]) == (ids["PROLIFIC_PID"], "60aa", "s-77")
    assert float(row["finished"]) >= float(row["joined"]) and row["consented"]
    times = json.loads(row["times"])
    assert [t["task"] for t in times] == [0, 1] and all(t["answered_s"] >= t["served_s"] >= 0 for t in times)
    assert "other" not in table.decode() and "127.0.0.1" not in table.decode()  # never the address
    status, result = c.call("GET", f"/study-admin/{study['id']}/results.json", headers=good)
    frozen = result["preregistration"]
    assert frozen["primary"]["x"] == "x" and frozen["seed"] == study["seed"] and frozen["planned_participants"] == 5
    assert frozen["exclusion"]["gold_failures"] == 1 and frozen["tie_rule"] == "apart"
    assert "planned 5 participants, 1 took part" in result["departures"]
    assert result["study"]["recruitment"]["consent"].startswith("You agree") and "address_salt" not in str(result)
    assert result["primary"]["comparison"] == "x vs y"
    # one participant: no interval can speak for other people, and the result says so instead of a narrow one
    assert result["interval_method"].startswith("two-way") and result["win_rates"][0]["apart"]["ci95"] is None
    assert "needs 2+ participants" in result["win_rates"][0]["apart"]["ci95_method"]


def test_the_frozen_analysis_does_not_move_when_the_defaults_do(home, pairs, monkeypatch):
    from popcorn.study import prereg

    study = make(home, pairs, min_view_seconds=0, exclusion={"gold_failures": 2}, tie_rule="half")
    monkeypatch.setitem(prereg.DEFAULT_EXCLUSION, "gold_failures", 7)
    stored = owner.get_studies(home).study(study["id"])["prereg"]
    assert stored["exclusion"]["gold_failures"] == 2 and stored["tie_rule"] == "half"
    result = owner.results(owner.LOCAL, study["id"], bootstrap=0, home=home)
    assert result["preregistration"] == stored and "2+ gold checks" in result["rules"]["attention"]


# ------------------------------------------------------------------------------------------------------------ commit


def test_votes_are_acknowledged_only_after_the_commit_that_holds_them(home, pairs):
    studies = owner.get_studies(home)
    study = make(home, pairs, per_participant=1, min_view_seconds=0, max_joins_per_address=0)
    people = [studies.join(study["link"]) for _ in range(20)]
    prepared = [studies.prepare_vote(study["link"], p["id"], 0, "left") for p in people]
    blocker = sqlite3.connect(studies.path, timeout=30, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: no commit can happen
    before = studies._writer.commits
    futures = [studies.commit_vote(p) for p in prepared]
    time.sleep(0.5)
    assert not any(f.done() for f in futures)  # nothing acknowledged while nothing is on disk
    blocker.execute("COMMIT")
    blocker.close()
    acks = [f.result(timeout=30) for f in futures]
    assert all(a["stored"] for a in acks)
    assert studies._writer.commits - before <= 2  # 20 votes, one or two transactions (one fsync each)
    assert studies.study(study["id"])["votes"] == 20


def test_concurrent_votes_over_http_are_all_stored_once(served, home, pairs):
    study = make(home, pairs, per_participant=1, min_view_seconds=0, max_joins_per_address=0)
    link = study["link"]
    pids = [Client(served.url).call("POST", f"/s/{link}/api/join", {})[1]["participant"] for _ in range(24)]
    codes: list[int] = []

    def send(pid):
        for _ in range(2):  # each vote twice: one stored, one refused
            codes.append(Client(served.url, cookies=False).call("POST", f"/s/{link}/api/vote?p={pid}",
                                                                {"task": 0, "choice": "B"})[0])

    threads = [threading.Thread(target=send, args=(pid,)) for pid in pids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200] * 24 + [409] * 24
    assert owner.get_studies(home).study(study["id"])["votes"] == 24


def test_what_the_server_keeps_in_memory_never_hides_a_change_made_elsewhere(served, home, pairs):
    """The server keeps what never changes (a study's row, a participant's tasks, an item's media) but reads the status
    and the answers on every request: a second store on the same folder (the CLI, another process) closes and
    reopens the study and answers for a participant, and the served app sees each change at once."""
    from popcorn.study.storage import StudyStore

    study = make(home, pairs, per_participant=3, min_view_seconds=0)
    link = study["link"]
    me, other = Client(served.url), Client(served.url)
    mine = me.call("POST", f"/s/{link}/api/join", {})[1]["participant"]
    theirs = other.call("POST", f"/s/{link}/api/join", {})[1]["participant"]
    assert me.call("GET", f"/s/{link}/api/state")[1]["task"]["index"] == 0  # now held in the server's memory
    assert me.call("POST", f"/s/{link}/api/vote", {"task": 0, "choice": "A"})[0] == 200
    assert other.call("GET", f"/s/{link}/api/state")[1]["task"]["index"] == 0

    elsewhere = StudyStore(home=home)  # its own connections and memory, as another process has
    elsewhere.set_status(study["id"], "closed")
    assert me.call("GET", f"/s/{link}/api/state")[0] == 410
    assert me.call("POST", f"/s/{link}/api/vote", {"task": 1, "choice": "A"})[0] == 410
    elsewhere.set_status(study["id"], "open")
    status, state = me.call("GET", f"/s/{link}/api/state")
    assert status == 200 and state["task"]["index"] == 1 and state["done"] == 1

    elsewhere.vote(link, theirs, 0, "right")  # answered through the other store: the server must not accept it twice
    status, refused = other.call("POST", f"/s/{link}/api/vote", {"task": 0, "choice": "A"})
    assert status == 409 and "already answered" in refused["error"]
    status, state = other.call("GET", f"/s/{link}/api/state")
    assert status == 200 and state["task"]["index"] == 1 and state["done"] == 1
    assert me.call("POST", f"/s/{link}/api/vote", {"task": 1, "choice": "B"})[0] == 200
    assert {(v["participant"], v["task"], v["side"]) for v in elsewhere.votes(study["id"])} == {
        ("P0000", 0, "left"), ("P0001", 0, "right"), ("P0000", 1, "right")}
