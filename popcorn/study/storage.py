"""Studies, their pairs, participants and votes in the project's SQLite store (popcorn/store.py, migrations 4-5).

    studies = StudyStore(Store())
    study = studies.create("PE vs Basic", "Which video would be more popular?", pairs, per_participant=10,
                           attention_checks=1, invites=0)        # copies the videos anonymously, one transaction;
                                                                 # makes the gold checks; freezes the analysis
    me = studies.join(study["link"], address="203.0.113.9")      # a participant: {"id": token, "tasks": [...]}
    studies.vote(study["link"], me["id"], task=0, choice="left") # acknowledged after the group commit holding it
    studies.vote(study["link"], me["id"], task=0, choice="left") # -> StudyError 409: stored nothing new
    studies.votes(study["id"]), studies.participants(study["id"]) # for the owner (run ids, conditions, h, times)

One vote per participant and task is a UNIQUE key, so a replayed or doubled request cannot add a row, whatever the
timing: the database refuses it, not a check before the insert. A participant's tasks are drawn once, when they join
(assign.py, from the study's seed, the participant's number and how often each pair was given so far) and stored with
them, so a reload resumes exactly. Votes are written by one thread per store (GroupCommit): many votes, one
transaction, one fsync (synchronous=FULL), each acknowledged only after the commit that holds it.

Join limits (per client address and hour, per study), a closed study (410), the viewing rule (a vote sooner than
the shorter video lasts after its pair was served: refused 425 or flagged, per the frozen analysis) live here, so
every way in (HTTP, the bench, tests) meets them.
"""

from __future__ import annotations

import hashlib
import json
import math
import queue
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from popcorn.store import Store
from popcorn.study import StudyError, assign, media, prereg

CHOICES = ("left", "right", "tie", "both_bad")
MAX_REASON = 500
MAX_PARTICIPANTS = 100_000
MAX_JOINS_PER_ADDRESS = 20  # per client address and hour (`study create --max-joins-per-address`)
MAX_GOLD = 20
PLATFORM_KEYS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "workerId", "assignmentId", "hitId")
PLATFORM_VALUE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _token(nbytes: int = 16) -> str:
    """A URL-safe random token that never starts with "-": ids and codes are typed as command-line arguments
    (`popcorn study results <id>`), where a leading "-" reads as an option (1 token in 64 did)."""
    while True:
        token = secrets.token_urlsafe(nbytes)
        if not token.startswith("-"):
            return token


class StudyStore:
    def __init__(self, store: Store | None = None, home: str | Path | None = None):
        self.store = store or Store(home=home)
        self.path = self.store.path
        self.media_root = self.store.home / "studies"
        self._writer = GroupCommit(self.path)
        self._local = threading.local()  # each thread's reading connection (_reader)
        # what never changes once written, read once per process: a study's row but its status (by link), a
        # participant's drawn tasks (by token), an item's media ids and viewing time. Status, answers and serve
        # times change, and are read from the database on every request.
        self._fixed_studies: dict[str, dict] = {}
        self._fixed_people: dict[tuple[str, str], dict] = {}
        self._fixed_items: dict[tuple[str, str], tuple[str, str, float]] = {}

    # ------------------------------------------------------------------------------------------ connection

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The store's connection (WAL, foreign keys, busy timeout), with every commit synced to disk before it
        returns: a vote is acknowledged only once it would survive a crash of the process or the machine."""
        with self.store._connect() as conn:
            conn.execute("PRAGMA synchronous = FULL")
            yield conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's connection for the participant routes' reads, kept open: opening one and setting its
        pragmas costs more than the few rows a page or a vote reads. Autocommit, so each statement sees the latest
        commit (writes go through _write or the group commit, never here)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn, self.store._transaction(conn):
            yield conn

    # ------------------------------------------------------------------------------------------ studies

    def create(self, name: str, question: str, pairs: list[dict], per_participant: int = 10,
               attention_checks: int = 0, seed: str | None = None, invites: int = 0, source: str = "", *,
               repeats: int = 0, max_joins_per_address: int = MAX_JOINS_PER_ADDRESS, max_participants: int = 0,
               consent: str = "", completion_code: str | None = None, redirect_url: str = "",
               **analysis_plan) -> dict:
        """A new study from pairs (pairs.py); the videos are copied under opaque ids, metadata stripped, plus
        `attention_checks` gold items (prereg.py freezes the analysis: `analysis_plan` is freeze()'s keywords)."""
        name, question = " ".join(str(name).split()), " ".join(str(question).split())
        if not name:
            raise StudyError("give the study a name (only you see it)")
        if not question:
            raise StudyError("write the question participants answer, e.g. 'Which video would be more popular?'")
        if not pairs:
            raise StudyError("no pairs: nothing to compare (check the runs, the pair file or the batch folder)")
        if per_participant < 1:
            raise StudyError("each participant needs at least one pair")
        if not 0 <= invites <= 10_000:
            raise StudyError("invite codes: 0 (an open link) to 10000")
        if not 0 <= attention_checks <= MAX_GOLD:
            raise StudyError(f"attention checks: 0 to {MAX_GOLD} gold pairs per participant")
        if max_joins_per_address < 0 or not 0 <= max_participants <= MAX_PARTICIPANTS:
            raise StudyError(f"join limits: 0 (none) or more per address; 0 (none) to {MAX_PARTICIPANTS} "
                             "participants")
        redirect_url = str(redirect_url or "").strip()
        if redirect_url and not redirect_url.startswith(("https://", "http://")):
            raise StudyError("the completion redirect must be an http(s) address, e.g. "
                             "https://app.prolific.com/submissions/complete?cc=CODE")
        study_id, link, seed = _token(9), _token(16), seed or secrets.token_hex(8)
        frozen = prereg.freeze(pairs, seed=seed, per_participant=per_participant, attention_checks=attention_checks,
                               repeats=repeats, **analysis_plan)
        folder = self.media_root / study_id
        copies: dict[str, str] = {}  # source video -> media id (a video in several pairs is copied once)
        lengths: dict[str, float] = {}
        items = []
        try:
            for i, pair in enumerate(pairs):
                sides = []
                for key in ("a", "b"):
                    src = str(Path(pair[key]["video"]).resolve())
                    if src not in copies:
                        copies[src] = media.anonymise(src, folder)[0]
                        lengths[src] = media.duration(src)
                    sides.append(copies[src])
                if sides[0] == sides[1]:
                    raise StudyError(f"pair {i + 1} compares a video with itself")
                shorter = min(lengths[str(Path(pair[k]["video"]).resolve())] for k in ("a", "b"))
                items.append((f"p{i:04d}", "pair", pair, *sides, shorter))
            gold_media = []
            for g, src in enumerate(_gold_sources(list(copies), attention_checks, seed)):
                intact, broken = media.anonymise(src, folder)[0], media.frozen(src, folder)[0]
                gold = {"gold": True, "broken": "b", "query": "", "prompt_type": "gold", "category": "",
                        "factor": "gold", "a": {"condition": "intact", "run_id": "", "video": src},
                        "b": {"condition": "frozen", "run_id": "", "video": src}}
                items.append((f"g{g:04d}", "gold", gold, intact, broken, lengths[src]))
                gold_media += [(intact, src), (broken, f"{src}#frozen")]
            codes = [_token(6) for _ in range(invites)]
            settings = {"source": source, "pairs": len(pairs), "max_joins_per_address": int(max_joins_per_address),
                        "max_participants": int(max_participants), "consent": str(consent or "").strip(),
                        "completion_code": str(completion_code or _token(6)).strip(), "redirect_url": redirect_url,
                        "address_salt": secrets.token_hex(16)}
            with self._write() as conn:
                conn.execute("INSERT INTO studies (id, created, name, question, link, seed, per_participant,"
                             " attention_checks, invite_only, settings, prereg)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (study_id, time.time(), name, question, link, seed, int(per_participant),
                              int(attention_checks), int(invites > 0), json.dumps(settings), json.dumps(frozen)))
                conn.executemany("INSERT INTO study_media (id, study_id, source) VALUES (?, ?, ?)",
                                 [(media_id, study_id, src) for src, media_id in copies.items()]
                                 + [(media_id, study_id, src) for media_id, src in gold_media])
                for position, (item, kind, pair, media_a, media_b, shorter) in enumerate(items):
                    conn.execute("INSERT INTO study_items (study_id, item, position, pair, media_a, media_b, kind,"
                                 " min_view) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (study_id, item, position, json.dumps(pair, ensure_ascii=False), media_a, media_b,
                                  kind, shorter))
                conn.executemany("INSERT INTO study_invites (study_id, code) VALUES (?, ?)",
                                 [(study_id, c) for c in codes])
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return {**self.study(study_id), "invites": codes}

    def _study_row(self, conn, where: str, value: str) -> dict | None:
        row = conn.execute(f"SELECT * FROM studies WHERE {where} = ?", (value,)).fetchone()
        if not row:
            return None
        out = dict(row)
        out["settings"] = json.loads(out["settings"] or "{}")
        out["prereg"] = json.loads(out["prereg"] or "{}")
        out["invite_only"] = bool(out["invite_only"])
        return out

    def study(self, study_id: str) -> dict:
        with self._connect() as conn:
            found = self._study_row(conn, "id", study_id)
            if not found:
                raise StudyError(f"no study {study_id!r}; `python -m popcorn study list` shows them", 404)
            found["participants"] = conn.execute("SELECT COUNT(*) FROM study_participants WHERE study_id = ?",
                                                 (study_id,)).fetchone()[0]
            found["votes"] = conn.execute("SELECT COUNT(*) FROM study_votes WHERE study_id = ?",
                                          (study_id,)).fetchone()[0]
        return found

    def study_by_link(self, link: str) -> dict:
        """The study behind a participant link: 404 when there is none, 410 (gone) while it is closed. The status is
        read each time (the owner may close the study from another process); the rest of the row never changes."""
        link = str(link)
        conn = self._reader()
        row = conn.execute("SELECT id, status FROM studies WHERE link = ?", (link,)).fetchone()
        if not row:
            raise StudyError("this study link is not valid", 404)
        if row["status"] != "open":
            raise StudyError("this study is closed: it takes no more answers. Thank you for your interest.", 410)
        fixed = self._fixed_studies.get(link)
        if fixed is None or fixed["id"] != row["id"]:
            fixed = _remember(self._fixed_studies, link, self._study_row(conn, "link", link))
        return {**fixed, "status": row["status"]}

    def studies(self) -> list[dict]:
        with self._connect() as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM studies ORDER BY created DESC")]
        return [self.study(i) for i in ids]

    def invites(self, study_id: str) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT code, participant_id FROM study_invites WHERE study_id = ? ORDER BY code",
                                (study_id,))
            return [{"code": r["code"], "used": bool(r["participant_id"])} for r in rows]

    def items(self, study_id: str) -> list[dict]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM study_items WHERE study_id = ? ORDER BY position", (study_id,))
            return [{"item": r["item"], "pair": json.loads(r["pair"]), "media_a": r["media_a"],
                     "media_b": r["media_b"], "kind": r["kind"], "shown": r["shown"], "min_view": r["min_view"]}
                    for r in rows]

    def set_status(self, study_id: str, status: str) -> dict:
        """Close a study (its link answers 410: no joins, no votes) or reopen it."""
        if status not in ("open", "closed"):
            raise StudyError("a study is 'open' or 'closed'")
        self.study(study_id)  # 404 for an unknown study
        with self._write() as conn:
            conn.execute("UPDATE studies SET status = ? WHERE id = ?", (status, study_id))
        return self.study(study_id)

    # ------------------------------------------------------------------------------------------ participants

    def join(self, link: str, invite: str = "", address: str = "", platform: dict | None = None,
             consent: bool = False) -> dict:
        """A new participant of the study behind `link` (or, with an invite code used before, that participant).

        Refused: 410 when the study is closed or full (its participant cap), 429 when `address` (the client's, as
        the server trusts it) joined `max_joins_per_address` times in the last hour, 400 without consent when the
        study asks for it. Refused joins store nothing."""
        study = self.study_by_link(link)
        settings = study["settings"]
        invite = str(invite or "").strip()
        if settings.get("consent") and consent is not True:
            raise StudyError("please read the consent text and tick that you agree before you start")
        platform = _platform_ids(platform)
        hashed = _address_hash(settings.get("address_salt", study["seed"]), address)
        now = time.time()
        with self._write() as conn:
            if study["invite_only"]:
                row = conn.execute("SELECT participant_id FROM study_invites WHERE study_id = ? AND code = ?",
                                   (study["id"], invite)).fetchone()
                if not row:
                    raise StudyError("this study needs a valid invite code", 403)
                if row["participant_id"]:  # the same person on another device: resume
                    return self._participant(conn, study, row["participant_id"])
            cap = settings.get("max_participants") or MAX_PARTICIPANTS
            number = conn.execute("SELECT COALESCE(MAX(number) + 1, 0) FROM study_participants WHERE study_id = ?",
                                  (study["id"],)).fetchone()[0]
            if number >= cap:
                raise StudyError("this study is full: it has all the participants it needs. Thank you!", 410)
            per_hour = settings.get("max_joins_per_address", 0)
            if per_hour and address and conn.execute(
                    "SELECT COUNT(*) FROM study_participants WHERE study_id = ? AND address = ? AND created > ?",
                    (study["id"], hashed, now - 3600)).fetchone()[0] >= per_hour:
                raise StudyError(f"too many people joined from your network in the last hour (at most {per_hour});"
                                 " please try again later", 429)
            rows = conn.execute("SELECT item, kind, shown FROM study_items WHERE study_id = ? ORDER BY position",
                                (study["id"],)).fetchall()
            pairs = [r["item"] for r in rows if r["kind"] == "pair"]
            tasks = assign.assign(pairs, study["seed"], number, study["per_participant"],
                                  study["prereg"].get("repeats", 0), gold=[r["item"] for r in rows
                                                                             if r["kind"] == "gold"],
                                  gold_checks=study["attention_checks"],
                                  shown={r["item"]: r["shown"] for r in rows if r["kind"] == "pair"})
            pid = _token(18)
            conn.execute("INSERT INTO study_participants (id, study_id, number, created, invite, tasks, address,"
                         " platform, consented) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (pid, study["id"], number, now, invite, json.dumps(tasks), hashed, json.dumps(platform),
                          now if consent is True else None))
            conn.executemany("UPDATE study_items SET shown = shown + 1 WHERE study_id = ? AND item = ?",
                             [(study["id"], item) for item in {t["item"] for t in tasks}])
            if study["invite_only"]:
                conn.execute("UPDATE study_invites SET participant_id = ? WHERE study_id = ? AND code = ?",
                             (pid, study["id"], invite))
            return self._participant(conn, study, pid)

    def _participant(self, conn, study: dict, pid: str, fixed: dict | None = None) -> dict:
        """A participant of `study` with their answers so far; `fixed` (their id, number and drawn tasks, which never
        change) when already known."""
        if fixed is None:
            row = conn.execute("SELECT id, number, tasks FROM study_participants WHERE id = ? AND"
                               " study_id = ?", (str(pid), study["id"])).fetchone()
            if not row:
                raise StudyError("unknown participant for this study; open the study link again", 404)
            fixed = {"id": row["id"], "number": row["number"], "tasks": json.loads(row["tasks"])}
        answered = {r["task"]: r["choice"] for r in
                    conn.execute("SELECT task, choice FROM study_votes WHERE participant_id = ?", (fixed["id"],))}
        return {"id": fixed["id"], "study": study, "number": fixed["number"], "tasks": fixed["tasks"],
                "answered": answered}

    def participant(self, link: str, pid: str) -> dict:
        """A participant of the open study behind `link` (404 unknown, 410 closed), with their answers so far. Their
        drawn tasks (read-only: shared between requests) are read from the database once per process."""
        study = self.study_by_link(link)
        conn = self._reader()
        fixed = self._fixed_people.get((study["id"], str(pid)))
        me = self._participant(conn, study, pid, fixed)
        if fixed is None:
            _remember(self._fixed_people, (study["id"], me["id"]),
                      {"id": me["id"], "number": me["number"], "tasks": me["tasks"]})
        return me

    def _item(self, conn, study_id: str, item: str) -> tuple[str, str, float]:
        """An item's two media ids and the shorter video's length (never change once the study is created)."""
        fixed = self._fixed_items.get((study_id, item))
        if fixed is None:
            row = conn.execute("SELECT media_a, media_b, min_view FROM study_items WHERE study_id = ? AND item = ?",
                               (study_id, item)).fetchone()
            fixed = _remember(self._fixed_items, (study_id, item), (row["media_a"], row["media_b"], row["min_view"]))
        return fixed

    def shown(self, me: dict, task: int, serve: bool = False) -> dict:
        """What task `task` of participant `me` (as participant() returns) shows: the two media ids, left and right.
        With `serve`, the first time it is served is recorded (the viewing rule counts from it)."""
        if not 0 <= int(task) < len(me["tasks"]):
            raise StudyError("no such task for this participant", 404)
        t = me["tasks"][int(task)]
        conn = self._reader()
        media_a, media_b, _ = self._item(conn, me["study"]["id"], t["item"])
        first = serve and not conn.execute("SELECT 1 FROM study_served WHERE participant_id = ? AND task = ?",
                                           (me["id"], int(task))).fetchone()
        if first:  # through the votes' writer: one writing thread, so a page's read never races a vote's commit
            now = time.time()
            self._writer.submit(lambda conn: conn.execute(
                "INSERT OR IGNORE INTO study_served (participant_id, task, served) VALUES (?, ?, ?)",
                (me["id"], int(task), now))).result(timeout=120)
        left, right = (media_b, media_a) if t["swap"] else (media_a, media_b)
        return {"task": int(task), "left": left, "right": right}

    def media_path(self, link: str, pid: str, media_id: str) -> Path:
        """The file of a video this participant is shown; anything else is 404 (not theirs, or not a video)."""
        me = self.participant(link, pid)
        study_id, conn = me["study"]["id"], self._reader()
        if not any(media_id in self._item(conn, study_id, t["item"])[:2] for t in me["tasks"]):
            raise StudyError("no such video", 404)
        path = self.media_root / study_id / f"{media_id}.mp4"
        if not path.is_file():
            raise StudyError("no such video", 404)
        return path

    # ------------------------------------------------------------------------------------------ votes

    def prepare_vote(self, link: str, pid: str, task, choice: str, reason: str = "") -> dict:
        """Check one answer before it is written: the task is this participant's next one (in order), it was
        served, and (per the frozen viewing rule) long enough ago for the shorter video to play to its end."""
        if choice not in CHOICES:
            raise StudyError(f"choice must be one of {', '.join(CHOICES)}")
        reason = " ".join(str(reason or "").split())[:MAX_REASON]
        task = _task_number(task)
        me = self.participant(link, pid)
        if not 0 <= task < len(me["tasks"]):
            raise StudyError("no such task for this participant", 404)
        if task in me["answered"]:
            raise StudyError("this pair was already answered; each participant has one vote per pair", 409)
        following = next(i for i in range(len(me["tasks"])) if i not in me["answered"])
        if task != following:
            raise StudyError("answer the pairs in the order they are shown; reload the page for the next one", 409)
        t, study = me["tasks"][task], me["study"]
        viewing = study["prereg"].get("viewing", {})
        conn = self._reader()
        served = conn.execute("SELECT served FROM study_served WHERE participant_id = ? AND task = ?",
                              (me["id"], task)).fetchone()
        minimum = viewing.get("min_view_seconds")
        if minimum is None:
            minimum = self._item(conn, study["id"], t["item"])[2] if viewing else 0.0
        now = time.time()
        seconds = None if served is None else now - served["served"]
        flags = ""
        if minimum > 0 and (seconds is None or seconds < minimum - prereg.VIEW_TOLERANCE_S):
            if viewing.get("policy", "refuse") == "refuse":
                left = minimum if seconds is None else max(0.0, minimum - seconds)
                raise StudyError(f"please watch both videos to the end before answering (about {left:.0f} s more)",
                                 425)
            flags = "fast"
        return {"row": (study["id"], me["id"], task, t["item"], int(t["swap"]), t["check_of"], choice, reason, now,
                        seconds, flags), "participant": me["id"], "task": task,
                "done": len(me["answered"]) + 1, "total": len(me["tasks"])}

    def commit_vote(self, prepared: dict) -> Future:
        """Queue a checked answer for the next group commit; the future holds the acknowledgement once the
        transaction holding it is on disk (or StudyError 409 when the same task was answered meanwhile)."""
        return self._writer.submit(lambda conn: _insert_vote(conn, prepared))

    def vote(self, link: str, pid: str, task, choice: str, reason: str = "") -> dict:
        """Store one answer; committed (and synced) before this returns. A second answer to the same task is
        refused (409)."""
        return self.commit_vote(self.prepare_vote(link, pid, task, choice, reason)).result(timeout=120)

    def votes(self, study_id: str) -> list[dict]:
        """Every vote with what the owner needs to analyse it: the chosen video in pair terms (a / b / tie /
        both_bad), the conditions, h of each side, the prompt type and category, the side shown on the left, gold
        checks (`gold`: the frozen side), when the pair was served and how long it was watched."""
        with self._connect() as conn:
            items = {r["item"]: json.loads(r["pair"]) for r in
                     conn.execute("SELECT item, pair FROM study_items WHERE study_id = ?", (study_id,))}
            rows = conn.execute("SELECT v.*, p.number FROM study_votes v JOIN study_participants p"
                                " ON p.id = v.participant_id WHERE v.study_id = ? ORDER BY v.id", (study_id,))
            out = []
            for r in rows:
                pair = items[r["item"]]
                swap = bool(r["swap"])
                picked = {"left": "b" if swap else "a", "right": "a" if swap else "b"}.get(r["choice"], r["choice"])
                out.append({"vote": r["id"], "participant": f"P{r['number']:04d}", "task": r["task"],
                            "item": r["item"], "check_of": r["check_of"], "side": r["choice"], "choice": picked,
                            "a_on_left": not swap, "reason": r["reason"], "created": r["created"],
                            "condition_a": pair["a"]["condition"], "condition_b": pair["b"]["condition"],
                            "run_a": pair["a"]["run_id"], "run_b": pair["b"]["run_id"],
                            "h_a": pair["a"].get("h"), "h_b": pair["b"].get("h"), "query": pair.get("query", ""),
                            "factor": pair.get("factor", ""), "prompt_type": pair.get("prompt_type", "unknown"),
                            "category": pair.get("category", ""), "gold": pair.get("broken") if pair.get("gold")
                            else None, "view_seconds": None if r["view_seconds"] is None
                            else round(r["view_seconds"], 3), "flags": r["flags"]})
        return out

    def participants(self, study_id: str) -> list[dict]:
        """The participant table: join and finish times, platform ids, consent, and per task when it was first
        served and answered (seconds since joining). Never the client address."""
        with self._connect() as conn:
            people = conn.execute("SELECT * FROM study_participants WHERE study_id = ? ORDER BY number",
                                  (study_id,)).fetchall()
            served = defaultdict(dict)
            for r in conn.execute("SELECT s.* FROM study_served s JOIN study_participants p ON p.id ="
                                  " s.participant_id WHERE p.study_id = ?", (study_id,)):
                served[r["participant_id"]][r["task"]] = r["served"]
            answered = defaultdict(dict)
            for r in conn.execute("SELECT participant_id, task, created, choice FROM study_votes WHERE study_id = ?",
                                  (study_id,)):
                answered[r["participant_id"]][r["task"]] = r["created"]
        out = []
        for p in people:
            tasks = json.loads(p["tasks"])
            times = [{"task": i, "item": t["item"], "gold": bool(t.get("gold")), "repeat_of": t["check_of"],
                      "served_s": _since(served[p["id"]].get(i), p["created"]),
                      "answered_s": _since(answered[p["id"]].get(i), p["created"])} for i, t in enumerate(tasks)]
            out.append({"participant": f"P{p['number']:04d}", "joined": p["created"], "finished": p["finished"],
                        "consented": p["consented"], "platform": json.loads(p["platform"] or "{}"),
                        "invite": bool(p["invite"]), "tasks": len(tasks),
                        "answered": len(answered[p["id"]]), "times": times})
        return out


# ------------------------------------------------------------------------------------------------ helpers


def _remember(cache: dict, key, value):
    """Keep `value` under `key` in one of StudyStore's caches of what never changes (bounded: emptied when full)."""
    if len(cache) >= 50_000:
        cache.clear()
    cache[key] = value
    return value


def _since(t: float | None, start: float) -> float | None:
    return None if t is None else round(t - start, 3)


def _task_number(task) -> int:
    """A task index from JSON: an integer (an integral float is accepted), nothing else (not 1e400, not true)."""
    if isinstance(task, bool) or not isinstance(task, (int, float)):
        raise StudyError("task must be a whole number")
    if isinstance(task, float) and not (math.isfinite(task) and task.is_integer()):
        raise StudyError("task must be a whole number")
    return int(task)


def _platform_ids(raw) -> dict:
    """The recruitment platform's ids from the link (Prolific, MTurk), each short and plain; others dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise StudyError("platform ids must be an object")
    out = {}
    for key in PLATFORM_KEYS:
        value = raw.get(key)
        if value in (None, ""):
            continue
        value = str(value)
        if not PLATFORM_VALUE.fullmatch(value):
            raise StudyError(f"{key} must be letters, digits, '-' or '_' (at most 64)")
        out[key] = value
    return out


def _address_hash(salt: str, address: str) -> str:
    """The client address as the join limit keys it: a salted hash (the study's own salt), never the address."""
    return hashlib.sha256(f"{salt}:{address}".encode()).hexdigest()[:32] if address else ""


def _gold_sources(videos: list[str], n: int, seed: str) -> list[str]:
    """Which of the study's own videos the `n` gold checks are made from (distinct while they last, seeded)."""
    if not n or not videos:
        return []
    rng = assign.rng_for(seed, -1)
    return [videos[i % len(videos)] for i in rng.sample(range(len(videos)), min(n, len(videos)))]


def _insert_vote(conn: sqlite3.Connection, prepared: dict) -> dict:
    cursor = conn.execute("INSERT INTO study_votes (study_id, participant_id, task, item, swap, check_of, choice,"
                          " reason, created, view_seconds, flags) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                          " ON CONFLICT (participant_id, task) DO NOTHING", prepared["row"])
    if cursor.rowcount != 1:
        raise StudyError("this pair was already answered; each participant has one vote per pair", 409)
    if prepared["done"] >= prepared["total"]:
        conn.execute("UPDATE study_participants SET finished = ? WHERE id = ?",
                     (prepared["row"][8], prepared["participant"]))
    return {"stored": True, "task": prepared["task"], "done": prepared["done"], "total": prepared["total"]}


class GroupCommit:
    """One writer thread per store for votes: what queues up while a commit is syncing goes into the next
    transaction together (one fsync for many votes), and each vote's future is resolved only after the commit
    that holds it returned. Each job runs in its own savepoint: one refused vote (409) does not undo the others."""

    MAX_BATCH = 512

    def __init__(self, path: Path):
        self.path = path
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        self.commits = 0  # transactions committed (votes acknowledged / commits = the batching achieved)

    def submit(self, job) -> Future:
        future: Future = Future()
        self._queue.put((job, future))
        if self._thread is None or not self._thread.is_alive():
            with self._start:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="study-votes", daemon=True)
                    self._thread.start()
        return future

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA synchronous = FULL")  # the commit is on disk (WAL fsync) before anyone is told
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            results: list = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for job, _ in batch:
                    conn.execute("SAVEPOINT vote")
                    try:
                        results.append((job(conn), None))
                        conn.execute("RELEASE vote")
                    except Exception as exc:  # noqa: BLE001 - handed to that vote's caller
                        conn.execute("ROLLBACK TO vote")
                        conn.execute("RELEASE vote")
                        results.append((None, exc))
                conn.execute("COMMIT")
                self.commits += 1
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: every caller hears it
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                error = StudyError(f"the vote could not be stored ({exc}); send it again", 503)
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), (value, exc) in zip(batch, results):
                if exc is None:
                    future.set_result(value)
                else:
                    future.set_exception(exc)
