"""The studio's memory: one SQLite file of runs and their artifacts, with numbered migrations.

    store = Store()                                  # config.home_dir()/popcorn.db, migrated on open
    store.save_run(run.to_dict(), status="planned")  # insert or update, by run id
    store.add_artifact(run_id, "video", path)        # files live under store.run_dir(run_id)
    store.get_run(run_id) -> dict | None             # run.json's keys + created, updated, status, error, artifacts
    store.list_runs(limit=50) -> [dict, ...]         # newest first

The schema moves forward only: MIGRATIONS is an ordered list of (version, name, statements); opening a store applies
the ones not yet recorded in `schema_version`, each in its own transaction. Adding a table later is one more entry.
Every call opens its own connection, so a Store can be shared between threads (Gradio runs events in a pool).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Iterator

from popcorn import config

DB_NAME = "popcorn.db"
STATUSES = ("planning", "planned", "rendering", "done", "failed", "cancelled")

MIGRATIONS: list[tuple[int, str, tuple[str, ...]]] = [
    (1, "runs and artifacts", (
        """CREATE TABLE runs (
            id         TEXT PRIMARY KEY,
            created    REAL NOT NULL,
            updated    REAL NOT NULL,
            query      TEXT NOT NULL DEFAULT '',
            settings   TEXT NOT NULL DEFAULT '{}',
            plan       TEXT,
            retrieval  TEXT,
            candidates TEXT NOT NULL DEFAULT '[]',
            video      TEXT NOT NULL DEFAULT '{}',
            score      TEXT NOT NULL DEFAULT '{}',
            baseline   TEXT NOT NULL DEFAULT '{}',
            timings    TEXT NOT NULL DEFAULT '{}',
            notes      TEXT NOT NULL DEFAULT '[]',
            status     TEXT NOT NULL DEFAULT 'planned',
            error      TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX runs_created ON runs (created DESC)",
        """CREATE TABLE artifacts (
            run_id  TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            kind    TEXT NOT NULL,
            path    TEXT NOT NULL,
            created REAL NOT NULL,
            PRIMARY KEY (run_id, kind)
        )""",
    )),
    (2, "studies and votes (pairwise user studies)", (
        """CREATE TABLE studies (
            id       TEXT PRIMARY KEY,
            created  REAL NOT NULL,
            name     TEXT NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE votes (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            created  REAL NOT NULL,
            voter    TEXT NOT NULL DEFAULT '',
            left_run TEXT NOT NULL,
            right_run TEXT NOT NULL,
            choice   TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie')),
            comment  TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX votes_study ON votes (study_id)",
    )),
    (3, "runs belong to visitors (a shared studio shows each visitor their own)", (
        "ALTER TABLE runs ADD COLUMN visitor TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX runs_visitor ON runs (visitor, created DESC)",
    )),
    (4, "blind A/B studies: items, anonymous media, participants, invites, one vote per participant and task", (
        # migration 2's studies/votes had no code or rows behind them: replaced (popcorn/study/storage.py)
        "DROP TABLE IF EXISTS votes",
        "DROP TABLE IF EXISTS studies",
        """CREATE TABLE studies (
            id               TEXT PRIMARY KEY,
            created          REAL NOT NULL,
            name             TEXT NOT NULL,
            question         TEXT NOT NULL,
            link             TEXT NOT NULL UNIQUE,
            seed             TEXT NOT NULL,
            per_participant  INTEGER NOT NULL,
            attention_checks INTEGER NOT NULL DEFAULT 0,
            invite_only      INTEGER NOT NULL DEFAULT 0,
            status           TEXT NOT NULL DEFAULT 'open',
            settings         TEXT NOT NULL DEFAULT '{}'
        )""",
        """CREATE TABLE study_media (
            id       TEXT PRIMARY KEY,
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            source   TEXT NOT NULL
        )""",
        """CREATE TABLE study_items (
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            item     TEXT NOT NULL,
            position INTEGER NOT NULL,
            pair     TEXT NOT NULL,
            media_a  TEXT NOT NULL REFERENCES study_media (id),
            media_b  TEXT NOT NULL REFERENCES study_media (id),
            PRIMARY KEY (study_id, item)
        )""",
        """CREATE TABLE study_participants (
            id       TEXT PRIMARY KEY,
            study_id TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            number   INTEGER NOT NULL,
            created  REAL NOT NULL,
            invite   TEXT NOT NULL DEFAULT '',
            tasks    TEXT NOT NULL,
            UNIQUE (study_id, number)
        )""",
        """CREATE TABLE study_invites (
            study_id       TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            code           TEXT NOT NULL,
            participant_id TEXT REFERENCES study_participants (id),
            PRIMARY KEY (study_id, code)
        )""",
        """CREATE TABLE study_votes (
            id             INTEGER PRIMARY KEY AUTOINCREMENT,
            study_id       TEXT NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
            participant_id TEXT NOT NULL REFERENCES study_participants (id) ON DELETE CASCADE,
            task           INTEGER NOT NULL,
            item           TEXT NOT NULL,
            swap           INTEGER NOT NULL,
            check_of       INTEGER,
            choice         TEXT NOT NULL CHECK (choice IN ('left', 'right', 'tie', 'both_bad')),
            reason         TEXT NOT NULL DEFAULT '',
            created        REAL NOT NULL,
            UNIQUE (participant_id, task)
        )""",
        "CREATE INDEX study_votes_study ON study_votes (study_id)",
    )),
    (5, "studies you can publish: frozen analysis, gold checks, exposure, join limits, platform ids, view times", (
        "ALTER TABLE studies ADD COLUMN prereg TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE study_items ADD COLUMN kind TEXT NOT NULL DEFAULT 'pair'",  # 'pair' or 'gold'
        "ALTER TABLE study_items ADD COLUMN shown INTEGER NOT NULL DEFAULT 0",  # participants given it
        "ALTER TABLE study_items ADD COLUMN min_view REAL NOT NULL DEFAULT 0",  # the shorter video's seconds
        "ALTER TABLE study_participants ADD COLUMN address TEXT NOT NULL DEFAULT ''",  # salted hash, never the IP
        "ALTER TABLE study_participants ADD COLUMN platform TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE study_participants ADD COLUMN consented REAL",
        "ALTER TABLE study_participants ADD COLUMN finished REAL",
        "CREATE INDEX study_participants_address ON study_participants (study_id, address, created)",
        """CREATE TABLE study_served (
            participant_id TEXT NOT NULL REFERENCES study_participants (id) ON DELETE CASCADE,
            task           INTEGER NOT NULL,
            served         REAL NOT NULL,
            PRIMARY KEY (participant_id, task)
        )""",
        "ALTER TABLE study_votes ADD COLUMN view_seconds REAL",
        "ALTER TABLE study_votes ADD COLUMN flags TEXT NOT NULL DEFAULT ''",
    )),
]

# the JSON columns of `runs` and the value each holds when unset
_JSON_COLUMNS = {"settings": {}, "plan": None, "retrieval": None, "candidates": [], "video": {}, "score": {},
                 "baseline": {}, "timings": {}, "notes": []}

_MIGRATE_LOCK = threading.Lock()


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


class Store:
    def __init__(self, path: str | Path | None = None, home: str | Path | None = None):
        self.home = Path(home) if home else (Path(path).parent if path else config.home_dir())
        self.path = Path(path) if path else self.home / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # ------------------------------------------------------------------------------------------ connection

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode; `with self._transaction(conn)` groups writes."""
        with closing(sqlite3.connect(self.path, timeout=30, isolation_level=None)) as conn:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------------------------------ migrations

    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet, in order; returns the versions applied now."""
        applied_now = []
        with _MIGRATE_LOCK, self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                         " applied REAL NOT NULL)")
            for version, name, statements in MIGRATIONS:
                with self._transaction(conn):
                    # checked inside the write transaction: another process may have applied it meanwhile
                    if conn.execute("SELECT 1 FROM schema_version WHERE version = ?", (version,)).fetchone():
                        continue
                    for statement in statements:
                        conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version, name, applied) VALUES (?, ?, ?)",
                                 (version, name, time.time()))
                applied_now.append(version)
        return applied_now

    def schema_version(self) -> int:
        with self._connect() as conn:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def tables(self) -> list[str]:
        with self._connect() as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            return sorted(r[0] for r in rows)

    # ------------------------------------------------------------------------------------------ runs

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run's files: <home>/runs/<run_id>/ (created)."""
        safe = "".join(ch for ch in str(run_id) if ch.isalnum() or ch in "-_")
        if not safe or safe != str(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        folder = self.home / "runs" / safe
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_run(self, record: dict, status: str = "planned", error: str = "", visitor: str | None = None) -> str:
        """Insert or update a run from a run.json-shaped dict (pipeline.Run.to_dict()); returns its id.

        `visitor` (who made the run, popcorn.serve.access) is set when the run is first saved and never changes."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {STATUSES}")
        run_id = str(record["id"])
        settings = record.get("settings") or {}
        now = time.time()
        values = {name: _dumps(record.get(name, default)) for name, default in _JSON_COLUMNS.items()}
        with self._connect() as conn, self._transaction(conn):
            conn.execute(
                f"""INSERT INTO runs (id, created, updated, query, status, error, visitor, {", ".join(values)})
                    VALUES (?, ?, ?, ?, ?, ?, ?, {", ".join("?" * len(values))})
                    ON CONFLICT (id) DO UPDATE SET updated = excluded.updated, query = excluded.query,
                      status = excluded.status, error = excluded.error,
                      {", ".join(f"{name} = excluded.{name}" for name in values)}""",
                (run_id, now, now, str(settings.get("query", "")), status, error, str(visitor or ""),
                 *values.values()),
            )
        return run_id

    def set_status(self, run_id: str, status: str, error: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; use one of {STATUSES}")
        with self._connect() as conn:
            conn.execute("UPDATE runs SET status = ?, error = ?, updated = ? WHERE id = ?",
                         (status, error, time.time(), run_id))

    def add_artifact(self, run_id: str, kind: str, path: str | Path) -> None:
        with self._connect() as conn:
            conn.execute("INSERT OR REPLACE INTO artifacts (run_id, kind, path, created) VALUES (?, ?, ?, ?)",
                         (run_id, kind, str(path), time.time()))

    def artifacts(self, run_id: str) -> dict[str, str]:
        """kind -> path, for the files of a run that still exist."""
        with self._connect() as conn:
            rows = conn.execute("SELECT kind, path FROM artifacts WHERE run_id = ? ORDER BY kind", (run_id,))
            return {r["kind"]: r["path"] for r in rows if Path(r["path"]).exists()}

    def get_run(self, run_id: str) -> dict | None:
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return self._record(row) if row else None

    def list_runs(self, limit: int = 50, visitor: str | list[str] | None = None) -> list[dict]:
        """The newest runs first (without their artifacts); only `visitor`'s (or those of a list of visitors) when
        given."""
        makers = [visitor] if isinstance(visitor, str) else list(visitor or [])
        where = f"WHERE visitor IN ({', '.join('?' * len(makers))}) " if visitor is not None else ""
        args = tuple(makers) if visitor is not None else ()
        with self._connect() as conn:
            rows = conn.execute(f"SELECT * FROM runs {where}ORDER BY created DESC, rowid DESC LIMIT ?",
                                (*args, int(limit)))
            return [self._record(r, with_artifacts=False) for r in rows.fetchall()]

    def delete_run(self, run_id: str) -> None:
        """Forget a run (its files stay on disk)."""
        with self._connect() as conn:
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

    def _record(self, row: sqlite3.Row, with_artifacts: bool = True) -> dict:
        record = {"id": row["id"], "created": row["created"], "updated": row["updated"], "query": row["query"],
                  "status": row["status"], "error": row["error"], "visitor": row["visitor"]}
        for name, default in _JSON_COLUMNS.items():
            text = row[name]
            record[name] = json.loads(text) if text is not None else default
        if with_artifacts:
            record["artifacts"] = self.artifacts(row["id"])
        return record
