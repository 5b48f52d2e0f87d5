"""Studies, their pairs, participants and votes in the project's SQLite store (popcorn/store.py, migration 4).

    studies = StudyStore(Store())
    study = studies.create("PE vs Basic", "Which video would be more popular?", pairs, per_participant=10,
                           attention_checks=1, invites=0)        # copies the videos anonymously, one transaction
    me = studies.join(study["link"])                             # a participant: {"id": token, "tasks": [...]}
    studies.vote(study["link"], me["id"], task=0, choice="left") # committed (WAL, synchronous=FULL) before it returns
    studies.vote(study["link"], me["id"], task=0, choice="left") # -> StudyError 409: stored nothing new
    studies.votes(study["id"])                                   # for the owner's analysis (run ids, conditions, h)

One vote per participant and task is a UNIQUE key, so a replayed or doubled request cannot add a row, whatever the
timing: the database refuses it, not a check before the insert. A participant's tasks are drawn once, when they join
(assign.py, from the study's seed and the participant's number) and stored with them, so a reload resumes exactly.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from popcorn.store import Store
from popcorn.study import StudyError, assign, media

CHOICES = ("left", "right", "tie", "both_bad")
MAX_REASON = 500
MAX_PARTICIPANTS = 100_000


def _token(nbytes: int = 16) -> str:
    return secrets.token_urlsafe(nbytes)


class StudyStore:
    def __init__(self, store: Store | None = None, home: str | Path | None = None):
        self.store = store or Store(home=home)
        self.path = self.store.path
        self.media_root = self.store.home / "studies"

    # ------------------------------------------------------------------------------------------ connection

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """The store's connection (WAL, foreign keys, busy timeout), with every commit synced to disk before it
        returns: a vote is acknowledged only once it would survive a crash of the process or the machine."""
        with self.store._connect() as conn:
            conn.execute("PRAGMA synchronous = FULL")
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn, self.store._transaction(conn):
            yield conn

    # ------------------------------------------------------------------------------------------ studies

    def create(self, name: str, question: str, pairs: list[dict], per_participant: int = 10,
               attention_checks: int = 0, seed: str | None = None, invites: int = 0, source: str = "") -> dict:
        """A new study from pairs (pairs.py); the videos are copied under opaque ids, metadata stripped."""
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
        study_id, link, seed = _token(9), _token(16), seed or secrets.token_hex(8)
        folder = self.media_root / study_id
        copies: dict[str, str] = {}  # source video -> media id (a video in several pairs is copied once)
        items = []
        try:
            for i, pair in enumerate(pairs):
                sides = []
                for key in ("a", "b"):
                    src = str(Path(pair[key]["video"]).resolve())
                    if src not in copies:
                        copies[src] = media.anonymise(src, folder)[0]
                    sides.append(copies[src])
                if sides[0] == sides[1]:
                    raise StudyError(f"pair {i + 1} compares a video with itself")
                items.append((f"p{i:04d}", pair, *sides))
            codes = [_token(6) for _ in range(invites)]
            settings = {"source": source, "pairs": len(pairs)}
            with self._write() as conn:
                conn.execute("INSERT INTO studies (id, created, name, question, link, seed, per_participant,"
                             " attention_checks, invite_only, settings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (study_id, time.time(), name, question, link, seed, int(per_participant),
                              int(attention_checks), int(invites > 0), json.dumps(settings)))
                for src, media_id in copies.items():
                    conn.execute("INSERT INTO study_media (id, study_id, source) VALUES (?, ?, ?)",
                                 (media_id, study_id, src))
                for position, (item, pair, media_a, media_b) in enumerate(items):
                    conn.execute("INSERT INTO study_items (study_id, item, position, pair, media_a, media_b)"
                                 " VALUES (?, ?, ?, ?, ?, ?)",
                                 (study_id, item, position, json.dumps(pair, ensure_ascii=False), media_a, media_b))
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
        with self._connect() as conn:
            found = self._study_row(conn, "link", str(link))
        if not found or found["status"] != "open":
            raise StudyError("this study link is not valid (or the study is closed)", 404)
        return found

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
                     "media_b": r["media_b"]} for r in rows]

    def set_status(self, study_id: str, status: str) -> None:
        if status not in ("open", "closed"):
            raise StudyError("a study is 'open' or 'closed'")
        with self._connect() as conn:
            conn.execute("UPDATE studies SET status = ? WHERE id = ?", (status, study_id))

    # ------------------------------------------------------------------------------------------ participants

    def join(self, link: str, invite: str = "") -> dict:
        """A new participant of the study behind `link` (or, with an invite code used before, that participant)."""
        study = self.study_by_link(link)
        invite = str(invite or "").strip()
        with self._write() as conn:
            if study["invite_only"]:
                row = conn.execute("SELECT participant_id FROM study_invites WHERE study_id = ? AND code = ?",
                                   (study["id"], invite)).fetchone()
                if not row:
                    raise StudyError("this study needs a valid invite code", 403)
                if row["participant_id"]:  # the same person on another device: resume
                    return self._participant(conn, study, row["participant_id"])
            number = conn.execute("SELECT COALESCE(MAX(number) + 1, 0) FROM study_participants WHERE study_id = ?",
                                  (study["id"],)).fetchone()[0]
            if number >= MAX_PARTICIPANTS:
                raise StudyError("this study is full", 403)
            item_ids = [r[0] for r in conn.execute("SELECT item FROM study_items WHERE study_id = ? ORDER BY position",
                                                   (study["id"],))]
            tasks = assign.assign(item_ids, study["seed"], number, study["per_participant"],
                                  study["attention_checks"])
            pid = _token(18)
            conn.execute("INSERT INTO study_participants (id, study_id, number, created, invite, tasks)"
                         " VALUES (?, ?, ?, ?, ?, ?)", (pid, study["id"], number, time.time(), invite,
                                                        json.dumps(tasks)))
            if study["invite_only"]:
                conn.execute("UPDATE study_invites SET participant_id = ? WHERE study_id = ? AND code = ?",
                             (pid, study["id"], invite))
            return self._participant(conn, study, pid)

    def _participant(self, conn, study: dict, pid: str) -> dict:
        row = conn.execute("SELECT * FROM study_participants WHERE id = ? AND study_id = ?",
                           (str(pid), study["id"])).fetchone()
        if not row:
            raise StudyError("unknown participant for this study; open the study link again", 404)
        answered = {r["task"]: r["choice"] for r in
                    conn.execute("SELECT task, choice FROM study_votes WHERE participant_id = ?", (row["id"],))}
        return {"id": row["id"], "study": study, "number": row["number"], "tasks": json.loads(row["tasks"]),
                "answered": answered}

    def participant(self, link: str, pid: str) -> dict:
        study = self.study_by_link(link)
        with self._connect() as conn:
            return self._participant(conn, study, pid)

    def shown(self, me: dict, task: int) -> dict:
        """What task `task` of participant `me` (as participant() returns) shows: the two media ids, left and right."""
        if not 0 <= int(task) < len(me["tasks"]):
            raise StudyError("no such task for this participant", 404)
        t = me["tasks"][int(task)]
        with self._connect() as conn:
            row = conn.execute("SELECT media_a, media_b FROM study_items WHERE study_id = ? AND item = ?",
                               (me["study"]["id"], t["item"])).fetchone()
        left, right = (row["media_b"], row["media_a"]) if t["swap"] else (row["media_a"], row["media_b"])
        return {"task": int(task), "left": left, "right": right}

    def media_path(self, link: str, pid: str, media_id: str) -> Path:
        """The file of a video this participant is shown; anything else is 404 (not theirs, or not a video)."""
        me = self.participant(link, pid)
        study_id = me["study"]["id"]
        with self._connect() as conn:
            items = {t["item"] for t in me["tasks"]}
            row = conn.execute("SELECT item FROM study_items WHERE study_id = ? AND (media_a = ? OR media_b = ?)",
                               (study_id, media_id, media_id)).fetchall()
        if not row or not items & {r["item"] for r in row}:
            raise StudyError("no such video", 404)
        path = self.media_root / study_id / f"{media_id}.mp4"
        if not path.is_file():
            raise StudyError("no such video", 404)
        return path

    # ------------------------------------------------------------------------------------------ votes

    def vote(self, link: str, pid: str, task: int, choice: str, reason: str = "") -> dict:
        """Store one answer; committed before this returns. A second answer to the same task is refused (409)."""
        if choice not in CHOICES:
            raise StudyError(f"choice must be one of {', '.join(CHOICES)}")
        reason = " ".join(str(reason or "").split())[:MAX_REASON]
        me = self.participant(link, pid)
        try:
            task = int(task)
        except (TypeError, ValueError):
            raise StudyError("task must be a number") from None
        if not 0 <= task < len(me["tasks"]):
            raise StudyError("no such task for this participant", 404)
        t = me["tasks"][task]
        try:
            with self._write() as conn:
                conn.execute("INSERT INTO study_votes (study_id, participant_id, task, item, swap, check_of, choice,"
                             " reason, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             (me["study"]["id"], me["id"], task, t["item"], int(t["swap"]), t["check_of"], choice,
                              reason, time.time()))
        except sqlite3.IntegrityError:
            raise StudyError("this pair was already answered; each participant has one vote per pair", 409) from None
        return {"stored": True, "task": task, "done": len(me["answered"]) + 1, "total": len(me["tasks"])}

    def votes(self, study_id: str) -> list[dict]:
        """Every vote with what the owner needs to analyse it: the chosen video in pair terms (a / b / tie /
        both_bad), the conditions, h of each side, the prompt type and category, the side shown on the left."""
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
                            "category": pair.get("category", "")})
        return out
