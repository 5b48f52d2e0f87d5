"""Blind-study votes under load, with the server killed mid-run: is every acknowledged vote there exactly once?

    flock /tmp/popcorn-bench.lock .venv/bin/python bench/study_load.py [--participants 50] [--votes 20]

1. a study of 30 pairs, each of two files of its own cut from 10 small H.264 clips (ffmpeg's test source: the
   videos do not matter here, the vote path does) in a fresh store; the study routes served alone by uvicorn on
   127.0.0.1 (a subprocess);
2. `participants` people join over HTTP, then all vote at once, `votes` each, one thread per person, each vote
   retried until answered (bounded: 120 s a vote); every 4th vote is sent twice at the same moment (a double click);
3. when 40% of the votes are acknowledged the server is killed with SIGKILL and restarted on the same port;
   Votes are written by the server's group commit (popcorn/study/storage.py: GroupCommit): each acknowledged only
   after the fsync of the transaction that holds it;
4. afterwards: every acknowledged vote is replayed (must be refused, 409), each person asks for three videos of pairs
   they were not given and votes with a made-up token (must be refused, 404), the owner's results without the admin
   secret (must be refused, 403);
5. the database is read directly: each (person, task) once, with the choice that was sent.

Latency is the round trip of each answered vote request (p50 / p95), over the whole run, restart included.
The last line: study votes_sent=<int> votes_stored=<int> duplicates=<int> lost=<int> p95_ms=<float>
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from popcorn.study import media  # noqa: E402
from popcorn.study.storage import StudyStore  # noqa: E402

VOTE_DEADLINE_S = 120.0
CHOICES = ("A", "B", "tie", "both_bad")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_clips(folder: Path, n: int) -> list[Path]:
    clips = []
    for i in range(n):
        path = folder / f"clip{i}.mp4"
        subprocess.run([media.ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=size=96x64:rate=8:duration=1,hue=h={i * 36}", "-c:v", "libx264", "-pix_fmt",
                        "yuv420p", str(path)], check=True, timeout=60)
        clips.append(path)
    return clips


class Server:
    def __init__(self, home: Path, port: int, log: Path):
        self.home, self.port, self.log = home, port, log
        self.proc: subprocess.Popen | None = None

    def start(self, link: str, timeout_s: float = 60) -> float:
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "popcorn.study.server", "--home", str(self.home),
                                      "--port", str(self.port)], cwd=ROOT, stdout=open(self.log, "a"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
            try:
                status, _ = request(self.port, "GET", f"/s/{link}/")
                if status == 200:
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the server did not come up")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def request(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None,
            conn: http.client.HTTPConnection | None = None, timeout: float = 30) -> tuple[int, dict]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        raw = response.read()
        try:
            parsed = json.loads(raw) if raw[:1] in (b"{", b"[") else {}
        except ValueError:
            parsed = {}
        return response.status, parsed
    finally:
        if own:
            conn.close()


class Person(threading.Thread):
    def __init__(self, port: int, link: str, pid: str, tasks: int, seed: int, stats: "Stats"):
        super().__init__(daemon=True)
        self.port, self.link, self.pid, self.tasks, self.stats = port, link, pid, tasks, stats
        self.rng = random.Random(seed)
        self.sent: dict[int, str] = {}  # task -> the choice sent (side terms)
        self.acked: set[int] = set()
        self.errors: list[str] = []

    def _post(self, conn_box: list, body: dict) -> tuple[int, dict] | None:
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.perf_counter()
            status, data = request(self.port, "POST", f"/s/{self.link}/api/vote?p={self.pid}", body,
                                   conn=conn_box[0])
            self.stats.latency(time.perf_counter() - started)
            return status, data
        except (OSError, http.client.HTTPException):
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None
            self.stats.count("connection_errors")
            return None

    def _read_state(self, conn_box: list) -> None:
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            started = time.perf_counter()
            status, _ = request(self.port, "GET", f"/s/{self.link}/api/state?p={self.pid}", conn=conn_box[0])
            if status == 200:
                self.stats.latency(time.perf_counter() - started, "read")
        except (OSError, http.client.HTTPException):
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None

    def run(self) -> None:
        box: list = [None]
        for task in range(self.tasks):
            choice = self.rng.choice(CHOICES)
            body = {"task": task, "choice": choice, "reason": f"r{task}"}
            self.sent[task] = choice
            double = task % 4 == 3
            deadline = time.monotonic() + VOTE_DEADLINE_S
            attempts = 0
            while time.monotonic() < deadline:
                attempts += 1
                if double:
                    results = []
                    twin = threading.Thread(target=lambda: results.append(self._post([None], body)))
                    twin.start()
                    results.append(self._post(box, body))
                    twin.join()
                    answered = [r for r in results if r is not None]
                    if len(answered) == 2:
                        codes = sorted(r[0] for r in answered)
                        if codes == [200, 409] or (attempts > 1 and codes == [409, 409]):
                            self.stats.count("doubles_rejected")
                        else:
                            self.errors.append(f"double of task {task}: {codes}")
                    if any(r[0] in (200, 409) for r in answered):
                        self.acked.add(task)
                        self.stats.count("acked")
                        break
                else:
                    result = self._post(box, body)
                    if result is not None and result[0] == 200:
                        self.acked.add(task)
                        self.stats.count("acked")
                        break
                    if result is not None and result[0] == 409:
                        if attempts == 1:  # refused although never sent before: a real error
                            self.errors.append(f"task {task}: 409 on the first attempt")
                        self.acked.add(task)  # an earlier attempt was committed, its answer lost in the kill
                        self.stats.count("acked")
                        self.stats.count("acked_after_lost_answer")
                        break
                    if result is not None:
                        self.errors.append(f"task {task}: HTTP {result[0]} {result[1]}")
                        break
                time.sleep(0.05)
            else:
                self.errors.append(f"task {task}: no answer within {VOTE_DEADLINE_S:.0f} s")
            self._read_state(box)  # what the page does next: ask for the next pair (the read reference)
        if box[0] is not None:
            box[0].close()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.latencies: list[float] = []
        self.reads: list[float] = []

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def latency(self, seconds: float, kind: str = "vote") -> None:
        with self.lock:
            (self.latencies if kind == "vote" else self.reads).append(seconds)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--votes", type=int, default=20)
    parser.add_argument("--kill-at", type=float, default=0.4, help="kill the server at this share of acks")
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    home = Path(tempfile.mkdtemp(prefix="study-load-"))
    clips = make_clips(home, 10)
    n_pairs = max(30, args.votes + 10)
    pairs = []
    for i in range(n_pairs):  # every pair its own two files (so its own two media ids), cut from the 10 clips
        sides = []
        for k, side in enumerate("ab"):
            path = home / f"pair{i}{side}.mp4"
            shutil.copyfile(clips[(2 * i + k) % len(clips)], path)
            sides.append({"run_id": f"run{i}{side}", "condition": "xy"[k], "video": str(path), "h": float(i + k)})
        pairs.append({"query": f"q{i}", "factor": "mode", "prompt_type": "unknown", "category": "",
                      "a": sides[0], "b": sides[1]})
    studies = StudyStore(home=home)
    # scripted participants vote at once (no viewing time) and all join from 127.0.0.1 (no per-address limit)
    study = studies.create("load", "Which one?", pairs, per_participant=args.votes, attention_checks=0,
                           min_view_seconds=0, max_joins_per_address=0)
    link = study["link"]
    port = free_port()
    server = Server(home, port, home / "server.log")
    stats = Stats()
    try:
        startup = server.start(link)
        people = []
        for n in range(args.participants):
            status, data = request(port, "POST", f"/s/{link}/api/join", {})
            assert status == 200, (status, data)
            people.append(Person(port, link, data["participant"], data["total"], n, stats))
        total = sum(p.tasks for p in people)
        started = time.perf_counter()
        for p in people:
            p.start()
        kill_at = int(total * args.kill_at)
        killed_at = restart_s = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and any(p.is_alive() for p in people):
            if killed_at is None and stats.counts.get("acked", 0) >= kill_at:
                killed_at = stats.counts.get("acked", 0)
                server.kill()
                restart_s = server.start(link)
            time.sleep(0.01)
        for p in people:
            p.join(timeout=5)
        elapsed = time.perf_counter() - started

        # replays: every acknowledged vote sent again must be refused and store nothing
        replays_rejected = replays = 0
        for p in people:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            for task in sorted(p.acked):
                status, _ = request(port, "POST", f"/s/{link}/api/vote?p={p.pid}",
                                    {"task": task, "choice": p.sent[task]}, conn=conn)
                replays += 1
                replays_rejected += status == 409
            conn.close()
        # cross-participant: a video of pairs someone was not given; a made-up participant token
        items = {it["item"]: it for it in studies.items(study["id"])}
        cross = cross_rejected = 0
        for p in people:
            mine = {t["item"] for t in studies.participant(link, p.pid)["tasks"]}
            my_media = {m for it in mine for m in (items[it]["media_a"], items[it]["media_b"])}
            foreign = [m for it in items.values() if it["item"] not in mine for m in (it["media_a"], it["media_b"])
                       if m not in my_media]
            for media_id in foreign[:3]:
                status, _ = request(port, "GET", f"/s/{link}/v/{media_id}.mp4?p={p.pid}")
                cross += 1
                cross_rejected += status == 404
            status, _ = request(port, "POST", f"/s/{link}/api/vote?p=not-{p.pid[:8]}", {"task": 0, "choice": "A"})
            cross += 1
            cross_rejected += status == 404
        admin_status, _ = request(port, "GET", f"/study-admin/{study['id']}/results.json")
    finally:
        server.stop()

    # the database, read directly
    with sqlite3.connect(home / "popcorn.db") as conn:
        rows = conn.execute("SELECT participant_id, task, choice FROM study_votes WHERE study_id = ?",
                            (study["id"],)).fetchall()
    stored: dict[tuple[str, int], list[str]] = {}
    for pid, task, choice in rows:
        stored.setdefault((pid, task), []).append(choice)
    side = {"A": "left", "B": "right", "tie": "tie", "both_bad": "both_bad"}
    acked = {(p.pid, t): side[p.sent[t]] for p in people for t in p.acked}
    lost = sum(1 for key in acked if key not in stored)
    wrong = sum(1 for key, choice in acked.items() if key in stored and stored[key][0] != choice)
    sent = {(p.pid, t) for p in people for t in p.sent}
    duplicates = sum(len(v) - 1 for v in stored.values()) + sum(1 for key in stored if key not in sent)
    errors = [e for p in people for e in p.errors]
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    lat = [x * 1000 for x in stats.latencies]
    print(f"machine: {os.cpu_count()} CPUs; load before {' '.join(load_before)}, after {' '.join(load_after)}")
    print(f"{args.participants} participants x {args.votes} votes in {elapsed:.1f} s; server start {startup:.2f} s; "
          f"SIGKILL after {killed_at} acknowledged votes, back in {restart_s:.2f} s")
    print(f"connection errors (retried): {stats.counts.get('connection_errors', 0)}; votes acknowledged only on a "
          f"retry after the kill (409: already stored): {stats.counts.get('acked_after_lost_answer', 0)}")
    print(f"doubled submissions: {stats.counts.get('doubles_rejected', 0)} of {total // 4} had one accepted and one "
          f"refused; replays refused: {replays_rejected}/{replays}; cross-participant refused: "
          f"{cross_rejected}/{cross}; owner results without the secret: HTTP {admin_status}")
    print(f"stored choice differs from the one sent: {wrong}; client errors: {len(errors)} {errors[:5]}")
    reads = [x * 1000 for x in stats.reads]
    print(f"vote latency: p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f} ms, "
          f"max {max(lat):.1f} ms over {len(lat)} answered requests")
    print(f"reference, the page's next read (GET state) in the same run: p50 {percentile(reads, 0.5):.1f} ms, "
          f"p95 {percentile(reads, 0.95):.1f} ms; vote/read p50 ratio "
          f"{percentile(lat, 0.5) / percentile(reads, 0.5):.2f}")
    ok = (not errors and not wrong and len(acked) == len(sent) and replays_rejected == replays
          and cross_rejected == cross and admin_status == 403)
    if not ok:
        print("FAILED: see above")
    print(f"study votes_sent={len(sent)} votes_stored={len(rows)} duplicates={duplicates} lost={lost} "
          f"p95_ms={percentile(lat, 0.95):.1f}")
    shutil.rmtree(home, ignore_errors=True)
    return 0 if ok and lost == 0 and duplicates == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
