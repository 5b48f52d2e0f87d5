"""Seconds from `python app.py` to the studio's page served (HTTP 200 on /), every tab built (issue 27 pt 6: <= 3 s).

    python bench/page_served.py [--repeat 3]

Starts app.py on a free port with a throwaway POPCORN_HOME, polls / every 50 ms, and stops it; prints one line per try
and the median. The background warm-up stays on (as a visitor meets it). Needs a quiet machine.
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


def seconds_to_page(timeout: float = 120.0) -> float:
    port = free_port()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "POPCORN_HOME": home, "GRADIO_ANALYTICS_ENABLED": "False"}
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
                            return time.perf_counter() - started
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
    times = []
    for i in range(args.repeat):
        times.append(seconds_to_page())
        print(f"try {i + 1}: page served in {times[-1]:.2f} s", flush=True)
    print(f"page_served_s median={statistics.median(times):.2f} (goal <= 3 s) cpus={os.cpu_count()}")


if __name__ == "__main__":
    main()
