"""The SQLite store, on real files: migrations, reopening, hostile text, artifacts, threads."""

import sqlite3
import threading

import pytest

from popcorn import store as store_module
from popcorn.store import MIGRATIONS, Store


def _record(run_id="20250101-000000-abc123", query="a cat learns to skateboard", **extra):
    record = {
        "id": run_id,
        "settings": {"query": query, "mode": "pe", "llm": "local", "video": "storyboard", "k": 10, "seed": 3},
        "plan": {"title": "Cat on a board", "cover_prompt": "a cat", "video_prompt": "a cat rides", "reasoning": ""},
        "retrieval": {"query": query, "matched_categories": ["Pets"], "references": []},
        "candidates": [],
        "video": {},
        "score": {},
        "baseline": {},
        "timings": {"retrieve": 0.5, "plan": 20.25},
        "notes": [],
    }
    record.update(extra)
    return record


def test_migrations_create_every_table_and_record_versions(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    assert s.schema_version() == MIGRATIONS[-1][0]
    assert {"schema_version", "runs", "artifacts", "studies", "study_votes"} <= set(s.tables())  # 4 replaced votes
    with sqlite3.connect(s.path) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == [m[0] for m in MIGRATIONS]


def test_migrations_are_idempotent_and_keep_data(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    s.save_run(_record())
    assert s.migrate() == []  # nothing left to apply
    again = Store(tmp_path / "popcorn.db")
    assert again.migrate() == []
    assert again.get_run("20250101-000000-abc123")["plan"]["title"] == "Cat on a board"
    with sqlite3.connect(s.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


def test_a_new_migration_is_applied_on_next_open(tmp_path, monkeypatch):
    Store(tmp_path / "popcorn.db").save_run(_record())
    extra = (99, "test column", ("ALTER TABLE runs ADD COLUMN rating INTEGER NOT NULL DEFAULT 0",))
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS + [extra])
    s = Store(tmp_path / "popcorn.db")
    assert s.schema_version() == 99
    with sqlite3.connect(s.path) as conn:
        assert conn.execute("SELECT rating FROM runs").fetchall() == [(0,)]
    assert s.migrate() == []


def test_a_failing_migration_rolls_back_and_leaves_the_version(tmp_path, monkeypatch):
    Store(tmp_path / "popcorn.db")
    broken = (50, "broken", ("CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"))
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS + [broken])
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path / "popcorn.db")
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    s = Store(tmp_path / "popcorn.db")
    assert s.schema_version() == MIGRATIONS[-1][0]
    assert "half" not in s.tables()  # the first statement of the failed migration was rolled back too


def test_a_run_survives_reopening_with_its_artifacts(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    run_id = s.save_run(_record(), status="planned")
    video = s.run_dir(run_id) / "video.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    s.add_artifact(run_id, "video", video)
    s.add_artifact(run_id, "gone", tmp_path / "missing.png")
    s.save_run(_record(score={"predicted_comments": 42}), status="done")

    reopened = Store(tmp_path / "popcorn.db")
    run = reopened.get_run(run_id)
    assert run["status"] == "done"
    assert run["score"] == {"predicted_comments": 42}
    assert run["timings"] == {"retrieve": 0.5, "plan": 20.25}
    assert run["settings"]["seed"] == 3
    assert run["query"] == "a cat learns to skateboard"
    assert run["artifacts"] == {"video": str(video)}  # a file that no longer exists is not offered
    assert run["created"] <= run["updated"]
    assert video.parent == tmp_path / "runs" / run_id


def test_hostile_text_round_trips(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    hostile = "Robert'); DROP TABLE runs;-- \"quoted\" \\ back\\slash 🍿🎬 猫が踊る \u202e rtl \x00 nul" + "x" * 100_000
    run_id = s.save_run(_record(query=hostile, plan={"title": hostile[:50], "cover_prompt": hostile,
                                                     "video_prompt": "'; --", "reasoning": "🍿" * 1000}))
    run = Store(tmp_path / "popcorn.db").get_run(run_id)
    assert run["query"] == hostile
    assert run["settings"]["query"] == hostile
    assert run["plan"]["cover_prompt"] == hostile
    assert run["plan"]["reasoning"] == "🍿" * 1000
    assert "runs" in s.tables()


def test_list_runs_newest_first_with_limit(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    for i in range(5):
        s.save_run(_record(run_id=f"run-{i}", query=f"query {i}"))
    listed = s.list_runs(limit=3)
    assert [r["id"] for r in listed] == ["run-4", "run-3", "run-2"]
    assert all("artifacts" not in r for r in listed)
    s.delete_run("run-4")
    assert s.get_run("run-4") is None
    assert [r["id"] for r in s.list_runs()] == ["run-3", "run-2", "run-1", "run-0"]


def test_status_and_error_are_checked_and_kept(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    run_id = s.save_run(_record())
    s.set_status(run_id, "failed", "Stage render failed: out of memory. Try the storyboard.")
    assert s.get_run(run_id)["status"] == "failed"
    assert s.get_run(run_id)["error"].startswith("Stage render failed")
    with pytest.raises(ValueError):
        s.set_status(run_id, "exploded")
    with pytest.raises(ValueError):
        s.run_dir("../../etc")


def test_artifacts_need_an_existing_run(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    with pytest.raises(sqlite3.IntegrityError):
        s.add_artifact("no-such-run", "video", tmp_path / "x.mp4")


def test_concurrent_writers_from_threads(tmp_path):
    s = Store(tmp_path / "popcorn.db")
    errors = []

    def write(n):
        try:
            for i in range(20):
                s.save_run(_record(run_id=f"t{n}-{i}", query=f"thread {n} run {i}"))
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(s.list_runs(limit=1000)) == 80


def test_default_location_is_the_home_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POPCORN_HOME", str(tmp_path / "home"))
    s = Store()
    assert s.path == tmp_path / "home" / "popcorn.db"
    assert s.run_dir("abc") == tmp_path / "home" / "runs" / "abc"


def test_runs_belong_to_a_visitor_and_an_old_store_is_upgraded(tmp_path, monkeypatch):
    """Migration 3: a store made before visitors keeps its runs (visitor ''), and new runs are listed per visitor."""
    before = [m for m in MIGRATIONS if m[0] < 3]
    monkeypatch.setattr(store_module, "MIGRATIONS", before)
    old = Store(tmp_path / "popcorn.db")
    with sqlite3.connect(old.path) as conn:  # a run saved by the code of that time
        conn.execute("INSERT INTO runs (id, created, updated, query) VALUES ('old-run', 1, 1, 'a cat')")
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    s = Store(tmp_path / "popcorn.db")
    assert s.schema_version() == MIGRATIONS[-1][0]
    assert s.get_run("old-run")["visitor"] == ""  # made before visitors: the owner's to see
    s.save_run(_record("a-run"), visitor="c:alice")
    s.save_run(_record("b-run"), visitor="c:bob")
    s.save_run(_record("a-run"), status="done", visitor="c:bob")  # an update never changes whose run it is
    assert s.get_run("a-run")["visitor"] == "c:alice" and s.get_run("a-run")["status"] == "done"
    assert [r["id"] for r in s.list_runs(visitor="c:alice")] == ["a-run"]
    assert [r["id"] for r in s.list_runs(visitor="c:bob")] == ["b-run"]
    assert [r["id"] for r in s.list_runs(visitor="c:nobody")] == []
    assert {r["id"] for r in s.list_runs()} == {"old-run", "a-run", "b-run"}
