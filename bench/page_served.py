"""Seconds from `python app.py` to the studio's page served (HTTP 200 on /), every tab built (issue 27 pt 6: <= 3 s).

    python bench/page_served.py [--repeat 3]

Starts app.py on a free port with a throwaway POPCORN_HOME, polls / every 50 ms, and stops it; prints one line per try
and the median. The background warm-up stays on (as a visitor meets it). Needs a quiet machine; beside the wall
seconds it gives the CPU seconds the studio's process had used when the page answered (Linux: /proc/PID/stat), which
other work on the machine moves far less.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (every thread); nan where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def seconds_to_page(timeout: float = 120.0) -> tuple[float, float]:
    """(wall seconds from the launch to the page, the studio's CPU seconds by then)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "POPCORN_HOME": home}  # gradio telemetry as users get it (off: popcorn.ui)
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    raise SystemExit(f"app.py exited with {proc.returncode} before serving its page")
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                        if response.status == 200 and b"Experiments" in response.read():
                            return time.perf_counter() - started, cpu_seconds(proc.pid)
                except OSError:
                    pass
                time.sleep(0.05)
            raise SystemExit(f"no page within {timeout:.0f} s")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    times, cpu = [], []
    for i in range(args.repeat):
        wall, used = seconds_to_page()
        times.append(wall)
        cpu.append(used)
        print(f"try {i + 1}: page served in {wall:.2f} s ({used:.2f} CPU-s)", flush=True)
    print(f"page_served_s median={statistics.median(times):.2f} (goal <= 3 s) cpu_s={statistics.median(cpu):.2f} "
          f"cpus={os.cpu_count()} load={' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
