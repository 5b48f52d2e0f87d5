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
pages_out = []
client = TestClient(app.create_app(on_page=lambda: pages_out.append(1)), base_url="http://127.0.0.1:7860")
client.get("/config")
before = len(pages_out)
served = client.get("/")
client.get("/")
print(json.dumps({"status": served.status_code, "heavy": [m for m in %r if m in sys.modules],
                  "pages": app.PAGES, "on_page": [before, len(pages_out)]}))
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
    assert result["on_page"] == [0, 1]  # the studio's warm-up gate hears of the page once, and of nothing else


STUBS = """
import json, os, sys, time
started = time.process_time()
import popcorn.ui
import gradio, gradio.component_meta, gradio.blocks_events, gradio.events
from jinja2 import Template
from popcorn.ui import gradio_import
templates = [e.copy().listener.__doc__ for e in vars(gradio.events.Events).values()
             if isinstance(e, gradio.events.EventListener)]
filled = [t for t in templates if t and gradio_import.PLACEHOLDER in t]
print(json.dumps({"meta": gradio.component_meta.create_or_modify_pyi is gradio_import._no_stubs,
                  "blocks": gradio.blocks_events.create_or_modify_pyi is gradio_import._no_stubs,
                  "again": gradio_import.skip_stub_writer(), "finders": [type(f).__name__ for f in sys.meta_path],
                  "events": len(filled), "docs_differ": [t[:40] for t in filled if gradio_import.plain_doc(t, "Video")
                                                         != Template(t).render(component="Video")],
                  "textbox_change": gradio.Textbox.change.__doc__[:60],
                  "analytics": os.environ.get("GRADIO_ANALYTICS_ENABLED")}))
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
    # the events' docstrings are filled without jinja2, to the very text jinja2 renders
    assert result["events"] >= 20 and result["docs_differ"] == []
    assert result["textbox_change"].startswith("Triggered when the value of the Textbox changes")
    assert result["analytics"] == "False"  # no telemetry from the studio unless its operator asks


def test_an_operator_choice_of_gradio_telemetry_stands(tmp_path):
    env = {**os.environ, "POPCORN_HOME": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "True", "POPCORN_WARM": "0"}
    done = subprocess.run([sys.executable, "-c", "import os, popcorn.ui; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"


def test_the_studio_app_is_made_once_per_role_and_its_blocks_none_while_built(tmp_path):
    """gradio makes a whole FastAPI app in Blocks.__init__, Blocks.__exit__, queue() and mount_gradio_app; the studio
    makes only the last two (the queue's and the one served): build() leaves demo.app unset, create_app sets it."""
    probe = (
        "import json\nfrom gradio.routes import App\nfrom popcorn.ui import app\nmade = []\n"
        "original = App.create_app\n"
        "def counting(*a, **k):\n    made.append(1)\n    return original(*a, **k)\n"
        "App.create_app = staticmethod(counting)\n"
        "demo = app.build()\nafter_build = (len(made), demo.app is None)\n"
        "app.create_app(demo)\n"
        "print(json.dumps({'build': after_build, 'total': len(made), 'queue_app': demo.app is not None, "
        "'restored': App.create_app is not None and App.__dict__['create_app'].__func__ is counting}))\n")
    env = {**os.environ, "POPCORN_HOME": str(tmp_path), "POPCORN_WARM": "0"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["build"] == [0, True]
    assert result["total"] == 2 and result["queue_app"] and result["restored"]
