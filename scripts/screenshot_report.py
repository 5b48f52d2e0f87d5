"""The batch report as a person sees it: the studio's Experiments tab showing a batch folder's report, screenshotted in
Debian chromium through Playwright (docs/screenshots/batch_report.png).

    python scripts/screenshot_report.py BATCH_FOLDER [--out docs/screenshots/batch_report.png] [--width 390]

Starts `python app.py` on a free port of 127.0.0.1 (the Experiments tab exists only on a studio bound to this
machine), types the folder, presses "Show report", waits for the tables and saves a full-page screenshot.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_served(url: str, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the studio did not answer at {url} in {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots" / "batch_report.png")
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args()
    port = free_port()
    env = {**os.environ, "POPCORN_HOME": tempfile.mkdtemp(prefix="popcorn-shot-"), "POPCORN_WARM": "0"}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_served(url)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(url)
            page.get_by_role("tab", name="Studio").wait_for(timeout=120_000)  # the page is built
            tab = page.get_by_role("tab", name="Experiments")
            if not tab.is_visible():  # a phone-sized page: the tab is in gradio's overflow menu ("...")
                page.locator(".overflow-menu > button").first.click()
                tab = page.locator("button:has-text('Experiments'):visible").last
            tab.click()
            field = page.locator("#exp-report-folder textarea, #exp-report-folder input").first
            field.fill(str(args.folder.resolve()))
            page.locator("#exp-show").click()
            page.get_by_text("Table 3", exact=False).first.wait_for(timeout=600_000)
            time.sleep(2)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        print(f"saved {args.out}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
