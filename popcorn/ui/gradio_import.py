"""Import gradio without its type-stub writer (issue 27 pt 6: the studio's page in <= 3 s).

Every time gradio is imported, each component class it defines (~80) reads its own source file, parses it with `ast`,
renders a stub from a template and compares it with (and may rewrite) the `.pyi` file beside it in site-packages:
`gradio.component_meta.create_or_modify_pyi`, a helper for gradio's own development (type stubs for editors). At
runtime it does nothing a page needs, and it was ~1.1 of the ~2.7 CPU-seconds of `import gradio` on this project's
2-core EPYC (bench/RESULTS.md, "The studio's page"). `skip_stub_writer()` makes that one function a no-op as
gradio.component_meta is loaded, before any component class is defined; nothing else of gradio changes. It must run
before the first `import gradio` (popcorn/ui/__init__.py calls it first); once gradio is imported it does nothing. The
same hook fills the component's name into each event listener's docstring without compiling a jinja2 template per
event (`plain_doc`: the same text; ~0.2 s more of the import).

`quiet_telemetry()` turns gradio's usage telemetry off unless the operator set GRADIO_ANALYTICS_ENABLED: left on, each
start spends two threads on requests to huggingface.co (a version check and a telemetry post) that compete with the
page for the GIL on a 2-core machine and, offline, wait for their timeouts; and a studio reached by strangers reports
nothing about them to a third party.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from contextlib import contextmanager

TARGET = "gradio.component_meta"
WRITER = "create_or_modify_pyi"
EVENTS = "gradio.events"  # EventListener.set_doc: a jinja2 Template compiled per component event (~216), see below


def _no_stubs(*args, **kwargs) -> None:
    """Stands for gradio's stub writer: writes nothing."""
    return None


PLACEHOLDER = "{{ component }}"


def plain_doc(doc: str, component: str) -> str | None:
    """What jinja2's `Template(doc).render(component=component)` gives for a docstring whose only template syntax is
    the `{{ component }}` placeholder (every gradio event's is): the name put in, one trailing newline dropped as
    jinja does. None for any other template (then jinja renders it)."""
    rest = doc.replace(PLACEHOLDER, "")
    if "{{" in rest or "{%" in rest or "{#" in rest:
        return None
    doc = doc.replace(PLACEHOLDER, component)
    return doc[:-1] if doc.endswith("\n") else doc


def _patch_events(module) -> None:
    """EventListener.set_doc fills the component's name into each event's docstring (help text) by compiling a
    jinja2 Template per component event, ~0.2 s of `import gradio` on a 2-core AVX2 EPYC; the same text is made by
    plain_doc without compiling (jinja still renders any docstring with other template syntax)."""
    listener = getattr(module, "EventListener", None)
    original = getattr(listener, "set_doc", None)
    if not callable(original):
        return

    def set_doc(self, component: str):
        doc = getattr(self.listener, "__doc__", None)
        filled = plain_doc(doc, component) if doc else None
        if filled is None:
            return original(self, component)
        self.listener.__doc__ = filled

    listener.set_doc = set_doc


def _patch_meta(module) -> None:
    if callable(getattr(module, WRITER, None)):
        setattr(module, WRITER, _no_stubs)


PATCHES = {TARGET: _patch_meta, EVENTS: _patch_events}


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, then its patch (if this gradio still has what it replaces)."""

    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        self.patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds each module of PATCHES as usual (once) and hands it a patching loader; gone once all are found."""

    def __init__(self):
        self.pending = dict(PATCHES)

    def find_spec(self, name, path, target=None):
        patch = self.pending.pop(name, None)
        if patch is None:
            return None
        if not self.pending:
            _remove()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, patch)
        return spec


def _remove() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]


def skip_stub_writer() -> bool:
    """Arrange for gradio's stub writer to be a no-op (and its event docs filled without jinja2); False where gradio
    is imported already (too late)."""
    if TARGET in sys.modules or "gradio" in sys.modules:
        return False
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True


def quiet_telemetry() -> bool:
    """GRADIO_ANALYTICS_ENABLED=False unless set already (then the operator's choice stands). True when set here."""
    if "GRADIO_ANALYTICS_ENABLED" in os.environ:
        return False
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    return True


@contextmanager
def app_made_later():
    """While the studio's Blocks are built: gradio's Blocks.__init__ (through its queue()) and Blocks.__exit__ each make
    a whole FastAPI app of ~80 routes (~0.09 s each on a 2-core AVX2 EPYC) that the studio replaces at once: its
    create_app calls demo.queue(), which makes the one gradio's queue reads (blocks.app), and mount_gradio_app makes
    the one served. Inside this block gradio.routes.App.create_app makes none (demo.app stays None until queue());
    Blocks built outside it, and gradio's launch(), are untouched."""
    from gradio.routes import App

    original = App.__dict__["create_app"]
    App.create_app = staticmethod(lambda *args, **kwargs: None)
    try:
        yield
    finally:
        App.create_app = original
