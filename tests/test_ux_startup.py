"""Issue 27 pt 6: building the studio (every page, every tab) and serving its page import nothing heavy.

A fresh interpreter builds the app as `python app.py` does, serves GET / once through the ASGI app, and reports which
heavy modules are in sys.modules: none may be (they load on first use, or in the warm-up thread after the page is
served). The time to serve is measured on a quiet machine by bench/page_served.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "scipy", "sklearn", "faiss", "llama_cpp", "diffusers", "transformers", "matplotlib")

PROBE = """
import json, sys
from starlette.testclient import TestClient
from popcorn.ui import app
served = TestClient(app.create_app(), base_url="http://127.0.0.1:7860").get("/")
print(json.dumps({"status": served.status_code, "heavy": [m for m in %r if m in sys.modules],
                  "pages": app.PAGES}))
""" % (HEAVY,)


def test_serving_the_studio_page_imports_nothing_heavy(tmp_path):
    env = {**os.environ, "POPCORN_HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "POPCORN_WARM": "0"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    assert "popcorn.ui.experiments" in result["pages"] and "popcorn.ui.study" in result["pages"]
    assert result["heavy"] == [], f"imported before the page was served: {result['heavy']}"


STUBS = """
import json, sys, time
started = time.process_time()
import popcorn.ui
import gradio.component_meta, gradio.blocks_events
from popcorn.ui import gradio_import
print(json.dumps({"meta": gradio.component_meta.create_or_modify_pyi is gradio_import._no_stubs,
                  "blocks": gradio.blocks_events.create_or_modify_pyi is gradio_import._no_stubs,
                  "again": gradio_import.skip_stub_writer(), "finders": [type(f).__name__ for f in sys.meta_path]}))
"""


def test_gradio_is_imported_without_its_type_stub_writer(tmp_path):
    """popcorn.ui imports gradio with create_or_modify_pyi (a .pyi writer for gradio's own development, ~40% of
    `import gradio`) replaced before any component class is defined; the hook removes itself, and a second call once
    gradio is loaded reports that it is too late; the studio page is still served whole (the test above)."""
    env = {**os.environ, "POPCORN_HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "POPCORN_WARM": "0"}
    done = subprocess.run([sys.executable, "-c", STUBS], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["meta"] and result["blocks"], result
    assert result["again"] is False
    assert "_Finder" not in result["finders"]
